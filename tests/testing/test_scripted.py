"""ScriptedLLM through real HTTP, with the real openai SDK and litellm as clients."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from memstore.testing import ScriptedLLM, ScriptedReply, ScriptedRequest

USER = [{"role": "user", "content": "hi there"}]


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def client(llm: ScriptedLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0, timeout=10)


def _sse_data(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


# --- chat completions --------------------------------------------------------------------------

def test_chat_non_stream(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("Hello, Ada!")
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER)
    ChatCompletion.model_validate(json.loads(raw.text))  # strict validation, not just construct()
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello, Ada!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == math.ceil(len("Hello, Ada!") / 4)
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_n_choices_and_usage_override(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue(ScriptedReply(content="same", usage={"prompt_tokens": 7, "completion_tokens": 3}))
    completion = client.chat.completions.create(model="m", messages=USER, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"same"}
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (7, 10)


def test_queue_is_fifo_then_default_reply(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("first", "second")
    llm.default_reply = "fallback"
    answers = [client.chat.completions.create(model="m", messages=USER).choices[0].message.content
               for _ in range(3)]
    assert answers == ["first", "second", "fallback"]
    assert llm.pending == 0


def test_chat_stream_chunks_in_order_with_usage(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("one two three four")
    stream = client.chat.completions.create(model="m", messages=USER, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) >= 3
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == "one two three four"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_raw_wire_format(llm: ScriptedLLM) -> None:
    llm.enqueue("wire format")
    resp = httpx.post(f"{llm.base_url}/chat/completions", timeout=10,
                      json={"model": "m", "messages": USER, "stream": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    data = _sse_data(resp.text)
    assert data[-1] == "[DONE]"
    for item in data[:-1]:
        ChatCompletionChunk.model_validate(json.loads(item))
    assert '"usage"' not in resp.text  # no usage unless stream_options.include_usage


def test_tool_calls_non_stream_and_stream(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    call = {"name": "get_weather", "arguments": {"city": "Lisbon"}}
    llm.enqueue(ScriptedReply(tool_calls=[call]), ScriptedReply(tool_calls=[call]))

    message = client.chat.completions.create(model="m", messages=USER).choices[0]
    assert message.finish_reason == "tool_calls"
    assert message.message.content is None
    (tool_call,) = message.message.tool_calls or []
    assert tool_call.type == "function" and tool_call.id.startswith("call_")
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Lisbon"}

    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Lisbon"}


@pytest.mark.parametrize(("status", "exc_type"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError),
    (429, openai.RateLimitError), (500, openai.InternalServerError), (503, openai.APIStatusError),
])
def test_error_status(llm: ScriptedLLM, client: openai.OpenAI, status: int,
                      exc_type: type[openai.APIStatusError]) -> None:
    llm.enqueue(ScriptedReply(status=status, error="scripted failure"))
    with pytest.raises(exc_type) as info:
        client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == "scripted failure"
    assert set(info.value.body) == {"message", "type", "param", "code"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "1"


def test_429_is_retried_by_the_sdk(llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(status=429, error="slow down"), "after retry")
    retrying = openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=1)
    started = time.monotonic()
    answer = retrying.chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert answer == "after retry"
    assert time.monotonic() - started < 5  # honours retry-after-ms, not the 1s Retry-After
    assert len(llm.requests) == 2


def test_truncated_stream_breaks_without_done(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue(ScriptedReply(content="a b c d e f g", truncate_stream_after=3))
    received = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk)
    assert len(received) == 3
    assert all(c.choices[0].finish_reason is None for c in received)


def test_delay_triggers_client_timeout(llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(content="late", delay=3))
    impatient = openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=USER)


def test_unknown_route_is_openai_404(llm: ScriptedLLM) -> None:
    resp = httpx.post(f"{llm.base_url}/images/generations", json={}, timeout=10)
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_response_format_returns_content_as_is(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue('{"city": "Lisbon"}')
    completion = client.chat.completions.create(
        model="m", messages=USER, response_format={"type": "json_object"})
    assert json.loads(completion.choices[0].message.content or "") == {"city": "Lisbon"}


# --- responses API -----------------------------------------------------------------------------

def test_responses_non_stream(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("Salut.", "Bonjour!")
    first = client.responses.create(model="gpt-r", input="hello")
    raw = client.responses.with_raw_response.create(
        model="gpt-r", input="say hi", instructions="Be French.", previous_response_id=first.id)
    Response.model_validate(json.loads(raw.text))
    response = raw.parse()
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Bonjour!"
    assert response.model == "gpt-r"
    assert response.instructions == "Be French."
    assert response.previous_response_id == first.id
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    request = llm.last_request
    assert request is not None
    assert request.system_text == "Be French." and request.last_user_text == "say hi"


def test_responses_stream_events_in_order(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("streaming responses text")
    events = list(client.responses.create(model="gpt-r", input="hi", stream=True))
    types = [e.type for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 3
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "streaming responses text"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "streaming responses text"


def test_responses_stream_validates_and_helper_accumulates_tool_calls(
        llm: ScriptedLLM, client: openai.OpenAI) -> None:
    reply = ScriptedReply(content="Checking.", tool_calls=[{"name": "lookup", "arguments": {"q": 1}}])
    llm.enqueue(reply)
    raw = httpx.post(f"{llm.base_url}/responses", json={"model": "m", "input": "x", "stream": True},
                     timeout=10)
    adapter: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
    event_lines = [line.removeprefix("event: ") for line in raw.text.splitlines()
                   if line.startswith("event: ")]
    parsed = [adapter.validate_python(json.loads(d)) for d in _sse_data(raw.text)]
    assert event_lines == [e.type for e in parsed]

    llm.enqueue(reply)
    with client.responses.stream(model="m", input=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Checking."
    call = final.output[1]
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"q": 1}


# --- models, embeddings ------------------------------------------------------------------------

def test_models_list_includes_requested_models(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="my-model", messages=USER)
    ids = [m.id for m in client.models.list()]
    assert ids == ["scripted-model", "my-model"]
    assert client.models.retrieve("my-model").id == "my-model"


def test_embeddings_deterministic(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    batch = client.embeddings.create(model="emb", input=["apple", "pear"])  # SDK asks for base64
    floats = client.embeddings.create(model="emb", input="apple", encoding_format="float")
    assert [d.index for d in batch.data] == [0, 1]
    assert len(batch.data[0].embedding) == 8
    assert batch.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert batch.data[0].embedding != batch.data[1].embedding
    assert math.isclose(sum(x * x for x in floats.data[0].embedding), 1.0, rel_tol=1e-5)
    assert client.embeddings.create(model="e", input="a", dimensions=16).data[0].embedding.__len__() == 16


# --- scripting and recording -------------------------------------------------------------------

def test_reply_fn_sees_parsed_request(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    seen: list[ScriptedRequest] = []

    def reply(request: ScriptedRequest) -> str | ScriptedReply:
        seen.append(request)
        assert request in llm.requests  # recorded before the reply is computed
        return f"echo: {request.last_user_text} / {request.system_text}"

    llm.reply_fn = reply
    llm.enqueue("queued wins")
    messages = [{"role": "system", "content": "sys one"}, {"role": "developer", "content": "dev two"},
                {"role": "user", "content": "old"}, {"role": "assistant", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "new"}]}]
    first = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert first.choices[0].message.content == "queued wins"
    assert second.choices[0].message.content == "echo: new / sys one\n\ndev two"
    assert len(seen) == 1 and seen[0].model == "m" and seen[0].path == "/v1/chat/completions"


def test_reply_fn_error_becomes_500(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.reply_fn = lambda request: 1 / 0  # type: ignore[assignment,return-value]
    with pytest.raises(openai.InternalServerError, match="ZeroDivisionError"):
        client.chat.completions.create(model="m", messages=USER)


def test_requests_are_recorded(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    assert llm.last_request is None
    client.chat.completions.create(model="m", messages=USER, temperature=0.2)
    client.models.list()
    first, second = llm.requests
    assert (first.method, first.path, second.method, second.path) == \
        ("POST", "/v1/chat/completions", "GET", "/v1/models")
    assert first.body["temperature"] == 0.2 and first.messages == USER
    assert first.headers["authorization"] == "Bearer x"
    assert llm.last_request is second
    llm.enqueue("left over")
    llm.clear()
    assert llm.requests == [] and llm.pending == 0


def test_wait_for_requests_from_another_thread(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    worker = threading.Thread(target=lambda: client.chat.completions.create(model="m", messages=USER))
    worker.start()
    (request,) = llm.wait_for_requests(1, timeout=5, path="/v1/chat/completions")
    worker.join()
    assert request.last_user_text == "hi there"
    with pytest.raises(TimeoutError):
        llm.wait_for_requests(2, timeout=0.1)


def test_lifecycle() -> None:
    llm = ScriptedLLM()
    with pytest.raises(RuntimeError):
        _ = llm.base_url
    assert llm.start() is llm.start()
    url = llm.base_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    llm.stop()
    llm.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)


def test_import_is_cheap() -> None:
    code = "import sys, memstore.testing; print(sorted({'openai', 'litellm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# --- litellm -----------------------------------------------------------------------------------

def test_litellm_openai_compatible_provider(llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    llm.enqueue("plain answer", "streamed answer here")
    kwargs = {"model": "openai/scripted", "api_base": llm.base_url, "api_key": "x",
              "messages": USER}
    response = litellm.completion(**kwargs)
    assert response.choices[0].message.content == "plain answer"
    assert response.usage.total_tokens > 0

    stream = litellm.completion(**kwargs, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "streamed answer here"
    assert [r.body["model"] for r in llm.requests] == ["scripted", "scripted"]
    assert llm.requests[1].body["stream"] is True


# --- raw bodies, edited payloads, stored responses ---------------------------------------------

def test_raw_body_is_sent_as_it_is(llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(body={"id": "x", "choices": None, "surprise": 1}),
                ScriptedReply(body="<html>bad gateway</html>", status=502))
    first = httpx.post(f"{llm.base_url}/chat/completions", json={"model": "m", "messages": USER})
    assert first.status_code == 200 and first.json() == {"id": "x", "choices": None, "surprise": 1}
    second = httpx.post(f"{llm.base_url}/responses", json={"model": "m", "input": "x"})
    assert second.status_code == 502 and second.text == "<html>bad gateway</html>"


def test_edit_changes_every_payload_of_a_reply(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    def strip(payload: dict) -> dict | None:
        payload.pop("system_fingerprint", None)
        payload["vendor_extra"] = True
        return None if payload.get("choices") == [] else payload

    llm.enqueue(ScriptedReply("one two", edit=strip), ScriptedReply("one two", edit=strip))
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.system_fingerprint is None and completion.model_extra == {"vendor_extra": True}
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.model_extra == {"vendor_extra": True} for c in chunks)
    assert all(c.usage is None for c in chunks)  # the usage chunk (no choices) was left out


def test_previous_response_id_and_store_work_as_openai_s(llm: ScriptedLLM, client: openai.OpenAI) -> None:
    llm.enqueue("Nice to meet you, Ana.", "Your name is Ana.", "not kept")
    first = client.responses.create(model="m", input="I am Ana", instructions="Be brief.")
    second = client.responses.create(model="m", input="what is my name?", previous_response_id=first.id,
                                     conversation="conv_1")
    assert second.previous_response_id == first.id and second.conversation is not None
    assert second.conversation.id == "conv_1"
    request = llm.last_request
    assert request is not None
    assert request.history == [{"role": "user", "content": "I am Ana"},
                               {"role": "assistant", "content": "Nice to meet you, Ana."}]
    assert llm.stored_response(second.id) == [*request.history, {"role": "user", "content": "what is my name?"},
                                              {"role": "assistant", "content": "Your name is Ana."}]
    unstored = client.responses.create(model="m", input="forget this", store=False)
    for missing in (unstored.id, "resp_never"):
        with pytest.raises(openai.NotFoundError) as err:
            client.responses.create(model="m", input="and?", previous_response_id=missing)
        assert err.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    streamed = list(client.responses.create(model="m", input="stream me", stream=True))
    kept = streamed[-1].response.id  # type: ignore[union-attr]
    client.responses.create(model="m", input="after a stream", previous_response_id=kept)
    assert llm.last_request is not None and llm.last_request.history[-1]["content"] == "ok"
