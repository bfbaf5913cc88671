"""MemoryClient / AsyncMemoryClient with the real openai SDK types against the scripted server."""

from __future__ import annotations

import asyncio
import inspect
import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from memstore import AsyncMemoryClient, Memory, MemoryClient, MemstoreError
from memstore.records import Turn
from memstore.testing import ScriptedLLM, ScriptedReply


def turns(mem: Memory) -> list[Turn]:
    from sqlmodel import Session, col, select

    with Session(mem.engine) as s:
        return list(s.exec(select(Turn).order_by(col(Turn.pk))).all())


@pytest.fixture
def client(config, llm: ScriptedLLM):
    c = MemoryClient(memory=config, base_url=llm.base_url, api_key="test-key")
    yield c
    c.close()


def extraction_reply(req) -> str:
    """A stand-in for the extraction model: learns the user's diet and the lowercase rule."""
    text = req.last_user_text
    ops, rules = [], []
    if "vegetarian" in text:
        ops.append({"op": "ADD", "text": "Is vegetarian", "kind": "preference", "turn": 0})
    if "capital letters" in text:
        rules.append({"action": "add", "text": "Never use capital letters", "turn": 0})
    return json.dumps({"operations": ops, "instructions": rules})


def chat_or_extract(chat_reply: str = "sure, here you go."):
    def reply(req):
        return extraction_reply(req) if req.body.get("response_format", {}).get("type", "").startswith("json") \
            and "long-term memory" in req.system_text else chat_reply
    return reply


def test_injection_and_learning_across_requests(client: MemoryClient, llm: ScriptedLLM) -> None:
    client.memory.add("Bob's password hint is aardvark", user_id="bob", infer=False)
    llm.reply_fn = chat_or_extract()
    first = client.chat.completions.create(
        model="scripted", user="alice",
        messages=[{"role": "user", "content": "I'm vegetarian. Please never use capital letters."}])
    assert isinstance(first, ChatCompletion)
    assert first.choices[0].message.content == "sure, here you go."
    assert first.memstore.memory_ids == [] and first.memstore.turn_id
    assert client.flush(timeout=30)

    messages = [{"role": "system", "content": "You are a cooking assistant."},
                {"role": "user", "content": "What should I eat tonight? Any password hints?"}]
    original = json.loads(json.dumps(messages))
    second = client.chat.completions.create(model="scripted", user="alice", messages=messages)
    assert messages == original  # the caller's list is never mutated
    chat_request = next(r for r in reversed(llm.requests) if "response_format" not in r.body)
    system = chat_request.body["messages"][0]["content"]
    assert system.startswith("You are a cooking assistant.")  # merged after the caller's own system text
    assert "Never use capital letters" in system and "Is vegetarian" in chat_request.system_text
    assert "aardvark" not in json.dumps(chat_request.body)  # never another user's facts
    assert len(chat_request.body["messages"]) == 3  # + the recalled memories, just before the user message
    info = second.memstore
    assert len(info.memory_ids) == 1 and len(info.rule_ids) == 1 and info.tokens > 0
    assert info.compliance == {info.rule_ids[0]: True}  # "sure, here you go." is lowercase


def test_no_user_means_plain_passthrough(client: MemoryClient, llm: ScriptedLLM) -> None:
    client.memory.add("I am vegetarian", user_id="alice", infer=False)
    resp = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "what do I eat?"}])
    assert resp.choices[0].message.content == "ok"
    assert llm.requests[-1].body["messages"] == [{"role": "user", "content": "what do I eat?"}]
    assert turns(client.memory) == []


def test_user_from_extra_body_and_client_default(config, llm: ScriptedLLM) -> None:
    with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", user_id="carol") as c:
        c.memory.add("I live on a boat", user_id="carol", infer=False)
        c.memory.add("I live in a castle", user_id="dave", namespace="game", infer=False)
        c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "where do I live?"}])
        assert "boat" in llm.requests[-1].body["messages"][0]["content"]
        c.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "where do I live?"}],
            extra_body={"memory": {"user_id": "dave", "namespace": "game", "extract": False}, "top_k": 3})
        body = llm.requests[-1].body
        assert "castle" in body["messages"][0]["content"] and "boat" not in json.dumps(body)
        assert "memory" not in body and body.get("top_k") == 3  # other extra_body keys pass through
        assert turns(c.memory)[-1].status == "skipped"
        c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "where do I live?"}],
                                  extra_body={"memory": {"enabled": False}})
        assert llm.requests[-1].body["messages"] == [{"role": "user", "content": "where do I live?"}]
        with pytest.raises(MemstoreError):
            c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}],
                                      extra_body={"memory": {"usr": "typo"}})


def test_tools_and_response_format_pass_through(client: MemoryClient, llm: ScriptedLLM) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    llm.enqueue(ScriptedReply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Lisbon"}}]))
    resp = client.chat.completions.create(model="scripted", user="alice", tools=tools, tool_choice="auto",
                                          temperature=0.2, seed=7, stop=["\n\n"],
                                          messages=[{"role": "user", "content": "weather in Lisbon?"}])
    body = llm.requests[-1].body
    assert body["tools"] == tools and body["tool_choice"] == "auto"
    assert body["temperature"] == 0.2 and body["seed"] == 7 and body["stop"] == ["\n\n"]
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lisbon"}
    assert resp.choices[0].finish_reason == "tool_calls"

    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False},
        "strict": True}}
    llm.enqueue('{"a": 4}')
    resp = client.chat.completions.create(model="scripted", user="alice", response_format=schema, n=1,
                                          messages=[{"role": "user", "content": "2+2 as json"}])
    assert llm.requests[-1].body["response_format"] == schema
    assert json.loads(resp.choices[0].message.content) == {"a": 4}


def test_streaming_chunks_in_order_and_recorded_at_the_end(client: MemoryClient, llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(content="one two three four", chunk_delay=0.05))
    stream = client.chat.completions.create(model="scripted", user="alice", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "count please, I love counting"}])
    pieces, usage = [], None
    for i, chunk in enumerate(stream):
        assert isinstance(chunk, ChatCompletionChunk)
        if i == 0:
            assert turns(client.memory) == []  # nothing recorded before the stream ends
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "one two three four"
    assert usage is not None and usage.total_tokens > 0
    (turn,) = turns(client.memory)
    assert turn.response == "one two three four" and turn.meta.get("partial") is None


def test_stream_stopped_early_records_the_partial_reply(client: MemoryClient, llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(content="alpha beta gamma delta epsilon"))
    with client.chat.completions.create(model="scripted", user="alice", stream=True,
                                        messages=[{"role": "user", "content": "I like greek letters"}]) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    (turn,) = turns(client.memory)
    assert turn.meta["partial"] is True and turn.response.startswith("alpha")


def test_async_twin(config, llm: ScriptedLLM) -> None:
    async def main() -> None:
        async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k") as c:
            c.memory.add("I am vegetarian", user_id="alice", infer=False)
            llm.reply_fn = chat_or_extract("noted.")
            resp = await c.chat.completions.create(
                model="scripted", user="alice", messages=[{"role": "user", "content": "dinner ideas?"}])
            assert isinstance(resp, ChatCompletion) and resp.choices[0].message.content == "noted."
            assert "vegetarian" in llm.requests[-1].body["messages"][0]["content"]
            stream = await c.chat.completions.create(
                model="scripted", user="alice", stream=True, messages=[{"role": "user", "content": "more?"}])
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            assert text == "noted."
            assert await c.flush(timeout=30)
            assert [t.response for t in turns(c.memory)] == ["noted.", "noted."]

    asyncio.run(main())


class _DownIndex:
    def __getattr__(self, name):
        def fail(*a, **k):
            raise RuntimeError("vector index is down")
        return fail


def test_requests_keep_their_memory_when_the_index_is_down(config, llm: ScriptedLLM, caplog) -> None:
    """alice's memory is indexed; then the vector index goes down. Her vectors are also in SQL
    (memory_vectors), so a fresh process still searches them densely: the request gets its memory."""
    Memory(config=config).add("I live in Lisbon", user_id="alice", infer=False)
    broken = Memory(config=config, index=_DownIndex())
    broken._repaired = True
    with MemoryClient(memory=broken, base_url=llm.base_url, api_key="k") as c:
        resp = c.chat.completions.create(model="scripted", user="alice",
                                         messages=[{"role": "user", "content": "where do I live?"}])
        assert resp.choices[0].message.content == "ok"
        assert resp.memstore.failed_open is None and len(resp.memstore.memory_ids) == 1
        sent = json.dumps(llm.requests[-1].body["messages"])
        assert "I live in Lisbon" in sent


class _BrokenEmbedder:
    dim = 384
    name = "broken"

    def embed(self, texts: list[str]) -> None:
        raise RuntimeError("the embedder is down")


def test_fail_open_when_the_memory_layer_is_broken(config, llm: ScriptedLLM, caplog) -> None:
    from memstore import metrics

    Memory(config=config).add("I live in Lisbon", user_id="alice", infer=False)
    broken = Memory(config=config, embedder=_BrokenEmbedder())
    broken._repaired = True
    before = metrics.snapshot().get("memstore_fail_open_total", 0)
    with MemoryClient(memory=broken, base_url=llm.base_url, api_key="k") as c:
        resp = c.chat.completions.create(model="scripted", user="alice",
                                         messages=[{"role": "user", "content": "hello"}])
        assert resp.choices[0].message.content == "ok"
        assert resp.memstore.failed_open and "the embedder is down" in resp.memstore.failed_open
        assert llm.requests[-1].body["messages"] == [{"role": "user", "content": "hello"}]
    assert metrics.snapshot()["memstore_fail_open_total"] == before + 1
    assert "request continues without memory" in caplog.text
    with MemoryClient(memory=broken, base_url=llm.base_url, api_key="k", strict=True) as c, \
            pytest.raises(MemstoreError):
        c.chat.completions.create(model="scripted", user="alice", messages=[{"role": "user", "content": "hello"}])


def test_provider_errors_surface_unchanged(client: MemoryClient, llm: ScriptedLLM) -> None:
    llm.enqueue(ScriptedReply(status=400, error="bad request from provider"))
    with pytest.raises(Exception) as info:
        client.chat.completions.create(model="scripted", user="alice", max_retries=0,
                                       messages=[{"role": "user", "content": "hi"}])
    assert "bad request from provider" in str(info.value)
    assert getattr(info.value, "status_code", None) == 400


def test_create_accepts_every_parameter_of_the_openai_sdk(client: MemoryClient, llm: ScriptedLLM) -> None:
    """Parity: every keyword of the installed SDK's Completions.create is accepted and reaches the wire
    (or is a transport option that is consumed)."""
    sdk = inspect.signature(openai.resources.chat.completions.Completions.create).parameters
    ours = inspect.signature(client.chat.completions.create).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours.values())
    for name in ("messages", "model", "stream"):
        assert name in ours
    sample = {"frequency_penalty": 0.1, "presence_penalty": 0.1, "logit_bias": {"50256": -100}, "logprobs": True,
              "top_logprobs": 2, "max_completion_tokens": 50, "max_tokens": 50, "n": 1, "seed": 3,
              "parallel_tool_calls": False, "top_p": 0.9, "metadata": {"k": "v"}, "store": False,
              "service_tier": "auto", "reasoning_effort": "low", "prompt_cache_key": "pk",
              "safety_identifier": "sid", "verbosity": "low"}
    missing = [n for n in sdk if n not in ("self", "messages", "model") and n not in ours and
               not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours.values())]
    assert missing == []
    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"X-Test": "1"}, timeout=20, **sample)
    body = llm.requests[-1].body
    for key in ("frequency_penalty", "logit_bias", "seed", "top_p", "max_tokens", "n", "metadata"):
        assert body.get(key) == sample[key], key
    assert llm.requests[-1].headers.get("x-test") == "1"


def test_other_resources_are_delegated(client: MemoryClient, llm: ScriptedLLM) -> None:
    emb = client.embeddings.create(model="scripted-embed", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert "scripted-model" in [m.id for m in client.models.list()]
    assert llm.requests[-1].path.endswith("/models")
    assert isinstance(client.with_options(timeout=5), openai.OpenAI)


def test_enforce_rules_retries_once_with_the_broken_rule(config, llm: ScriptedLLM) -> None:
    with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", enforce_rules=True) as c:
        rule = c.memory.rules("alice").add("Never use capital letters")
        llm.enqueue("Hello There!", "hello there!")
        resp = c.chat.completions.create(model="scripted", user="alice",
                                         messages=[{"role": "user", "content": "greet me"}])
        assert resp.choices[0].message.content == "hello there!"
        retry_prompt = json.dumps(llm.requests[-1].body["messages"])
        assert "Never use capital letters" in retry_prompt and "Hello There!" in retry_prompt
        assert resp.memstore.retried and resp.memstore.compliance == {rule.id: True}
        # both attempts fail: the better (here: the first) is returned and the failure recorded
        llm.enqueue("Hi Again", "STILL CAPS")
        resp = c.chat.completions.create(model="scripted", user="alice",
                                         messages=[{"role": "user", "content": "again"}])
        assert resp.choices[0].message.content in ("Hi Again", "STILL CAPS")
        (rate,) = c.memory.compliance("alice")
        assert rate["checked"] == 2 and rate["passed"] == 1 and rate["rate"] == 0.5


def test_feedback_and_dpo_export(client: MemoryClient, llm: ScriptedLLM) -> None:
    from memstore.instructions.feedback import dpo_pairs

    msgs = [{"role": "user", "content": "write a haiku about tea"}]
    llm.enqueue("steam curls from the cup", "Tea is a beverage.")
    a = client.chat.completions.create(model="scripted", user="alice", messages=msgs)
    b = client.chat.completions.create(model="scripted", user="alice", messages=msgs)
    client.compare(a.id, b.id, preferred=a.id)
    client.feedback(a.id, rating=1)
    client.feedback(b.id, rating=-1, comment="not a haiku")
    pairs = list(dpo_pairs(client.memory.engine, "alice"))
    assert len(pairs) == 2
    for p in pairs:
        assert set(p) == {"input", "preferred_output", "non_preferred_output"}
        assert p["input"]["messages"] == msgs
        assert p["preferred_output"] == [{"role": "assistant", "content": "steam curls from the cup"}]
        assert p["non_preferred_output"] == [{"role": "assistant", "content": "Tea is a beverage."}]
    with pytest.raises(MemstoreError):
        client.feedback(a.id, rating=5)
    with pytest.raises(MemstoreError):
        client.feedback("resp-unknown", rating=1)
