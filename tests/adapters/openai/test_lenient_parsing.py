"""MemoryClient accepts what the openai SDK accepts: upstream answers with missing, extra and null fields, for
chat and responses, sync and async, streamed or not, whether the real SDK makes the call (a plain model name
with ``base_url``) or litellm does (a provider-prefixed one). The scripted upstream sends the odd bodies over
real HTTP; the plain openai SDK is the yardstick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from memstore.adapters.openai.client import to_chat_completion
from memstore.adapters.openai.responses import to_response
from memstore.adapters.openai.steps import MemoryInfo
from memstore.adapters.openai.streams import to_chunk, to_event
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseCompletedEvent

from memstore import AsyncMemoryClient, Memory, MemoryClient
from memstore.records import Turn
from memstore.testing import ScriptedLLM, ScriptedReply

Edit = Callable[[dict[str, Any]], Any]


def turns(mem: Memory) -> list[Turn]:
    from sqlmodel import Session, col, select

    with Session(mem.engine) as s:
        return list(s.exec(select(Turn).order_by(col(Turn.pk))).all())


# ---- the odd upstreams ------------------------------------------------------------------------------

def chat_odd(payload: dict[str, Any]) -> dict[str, Any]:
    """Chat: fields the SDK declares left out, vendor fields added, optional ones null."""
    payload.pop("system_fingerprint", None)
    payload.pop("created", None)
    payload["vendor"] = {"region": "eu"}
    payload["service_tier"] = None
    for choice in payload.get("choices") or []:
        choice.pop("logprobs", None)
        (choice.get("message") or choice.get("delta") or {}).pop("refusal", None)
        choice["vendor_score"] = 0.5
    if isinstance(payload.get("usage"), dict):
        payload["usage"].pop("completion_tokens_details", None)
        payload["usage"]["prompt_tokens_details"] = None
    return payload


def responses_odd(payload: dict[str, Any]) -> dict[str, Any]:
    """Responses: the usage without ``cache_write_tokens`` (what the issue saw), events without
    ``sequence_number`` or ``logprobs``, vendor fields, nulls."""
    payload.pop("sequence_number", None)
    payload.pop("logprobs", None)
    body = payload.get("response") if isinstance(payload.get("response"), dict) else payload
    if body.get("object") == "response":
        usage = body.get("usage")
        if isinstance(usage, dict):
            usage["input_tokens_details"].pop("cache_write_tokens", None)
            usage["output_tokens_details"] = None
        body.pop("service_tier", None)
        body["tools"] = None
        body["text"] = None
        body["vendor"] = {"region": "eu"}
    return payload


CASES = [(api, route, mode) for api in ("chat", "responses") for route in ("sdk", "litellm")
         for mode in ("sync", "async", "sync-stream", "async-stream")]


def model_for(route: str) -> str:
    # a plain name with base_url: the real openai SDK makes the call; a provider prefix: litellm does
    return "gpt-4.1-mini" if route == "sdk" else "openai/gpt-4.1-mini"


def call(client: Any, api: str, model: str, stream: bool) -> Any:
    if api == "chat":
        return client.chat.completions.create(model=model, user="alice", stream=stream,
                                              messages=[{"role": "user", "content": "what snack?"}])
    return client.responses.create(model=model, user="alice", stream=stream, input="what snack?")


def text_of(items: list[Any]) -> str:
    out = ""
    for item in items:
        if isinstance(item, ChatCompletionChunk):
            out += "".join(c.delta.content or "" for c in item.choices or [] if c.delta)
        elif item.type == "response.output_text.delta":
            out += item.delta
    return out


@pytest.mark.parametrize(("api", "route", "mode"), CASES)
def test_odd_upstream_bodies_are_accepted(config, llm: ScriptedLLM, api: str, route: str, mode: str) -> None:
    edit = chat_odd if api == "chat" else responses_odd
    llm.enqueue(ScriptedReply("try a lentil curry.", edit=edit))
    stream = mode.endswith("stream")

    def check_result(result: Any) -> str:
        if stream:
            items = list(result)
            if api == "chat":
                assert all(isinstance(c, ChatCompletionChunk) for c in items)
            else:
                assert isinstance(items[-1], ResponseCompletedEvent)
                assert [e.sequence_number for e in items] == list(range(len(items)))  # numbered all the same
            assert result.memstore.memory_ids
            return text_of(items)
        assert isinstance(result, ChatCompletion if api == "chat" else Response)
        assert result.memstore is not None and result.memstore.memory_ids  # what memstore did stays attached
        if route == "sdk":  # litellm keeps what it knows; the SDK keeps the vendor's extra fields too
            assert result.model_extra is not None and result.model_extra.get("vendor") == {"region": "eu"}
        if api == "chat":
            return result.choices[0].message.content or ""
        assert result.usage is not None and result.usage.input_tokens_details.cache_write_tokens is None
        return result.output_text

    if mode.startswith("sync"):
        with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", max_retries=0,
                          start_worker=False) as c:
            c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
            text = check_result(call(c, api, model_for(route), stream))
            recorded = turns(c.memory)
    else:
        async def main() -> tuple[str, list[Turn]]:
            async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k", max_retries=0,
                                         start_worker=False) as c:
                c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
                result = await call(c, api, model_for(route), stream)
                if stream:
                    items = [item async for item in result]
                    if api == "responses":
                        assert [e.sequence_number for e in items] == list(range(len(items)))
                    assert result.memstore.memory_ids
                    return text_of(items), turns(c.memory)
                return check_result(result), turns(c.memory)

        text, recorded = asyncio.run(main())
    assert text == "try a lentil curry."
    (turn,) = recorded
    assert turn.response == "try a lentil curry." and not (turn.meta or {}).get("partial")
    sent = llm.requests[-1]
    assert "allergic to peanuts" in sent.system_text + str(sent.body.get("input"))


def test_the_issue_s_body_parses_as_the_sdk_parses_it(config, llm: ScriptedLLM) -> None:
    """``usage.input_tokens_details.cache_write_tokens`` missing: the plain SDK accepts it, and so must we."""
    llm.enqueue(ScriptedReply("hi", edit=responses_odd), ScriptedReply("hi", edit=responses_odd))
    plain = openai.OpenAI(base_url=llm.base_url, api_key="k").responses.create(model="m", input="x")
    with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
        ours = c.responses.create(model="m", input="x", user="alice")
    assert ours.usage == plain.usage and ours.text == plain.text is None
    assert ours.output_text == plain.output_text == "hi"
    skip = {"id", "created_at", "completed_at", "output", "user"}  # this request's own
    assert ours.model_dump(exclude=skip, exclude_unset=True) == plain.model_dump(exclude=skip, exclude_unset=True)


# ---- the parsing functions on what litellm hands over ------------------------------------------------

def test_to_chat_completion_and_to_response_keep_missing_extra_and_null_fields() -> None:
    info = MemoryInfo(user_id="alice", memory_ids=["m1"])
    chat = to_chat_completion({"id": "c1", "object": "chat.completion", "model": None, "vendor": [1, 2],
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}, info)
    assert isinstance(chat, ChatCompletion) and chat.memstore is info
    assert chat.choices[0].message.content == "hi" and chat.model is None and chat.created is None
    assert chat.model_extra == {"vendor": [1, 2]}
    resp = to_response({"id": "r1", "object": "response", "output": [
        {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]}],
        "usage": {"input_tokens": 1, "input_tokens_details": {"cached_tokens": 0}}, "tools": None}, info)
    assert isinstance(resp, Response) and resp.memstore is info and resp.output_text == "yo"
    assert resp.usage is not None and resp.usage.input_tokens_details.cache_write_tokens is None
    assert resp.tools is None and resp.created_at is None


def test_stream_items_are_built_leniently_and_numbered() -> None:
    chunk = to_chunk({"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "odd": 1}], "x": None})
    assert isinstance(chunk, ChatCompletionChunk) and chunk.choices[0].delta.content == "a"
    event = to_event({"type": "response.output_text.delta", "delta": "a", "item_id": "i"}, 7)
    assert event.type == "response.output_text.delta" and event.sequence_number == 7
    assert event.logprobs is None and event.output_index is None  # type: ignore[union-attr]
    done = to_event({"type": "response.completed", "sequence_number": 3,
                     "response": {"id": "r", "output": None, "usage": {"input_tokens": 1}}}, 9)
    assert isinstance(done, ResponseCompletedEvent) and done.sequence_number == 9 and done.response.id == "r"
