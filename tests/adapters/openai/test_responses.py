"""client.responses with memory, and delegation of every other resource."""

from __future__ import annotations

import asyncio

import pytest
from openai.types.responses import Response

from memstore import AsyncMemoryClient, MemoryClient
from memstore.records import Turn
from memstore.testing import ScriptedLLM


def turns(mem) -> list[Turn]:
    from sqlmodel import Session, col, select

    with Session(mem.engine) as s:
        return list(s.exec(select(Turn).order_by(col(Turn.pk))).all())


@pytest.fixture
def client(config, llm: ScriptedLLM):
    c = MemoryClient(memory=config, base_url=llm.base_url, api_key="k")
    c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
    c.memory.rules("alice").add("Never use capital letters")
    yield c
    c.close()


def test_injection_with_instructions_merged(client: MemoryClient, llm: ScriptedLLM) -> None:
    llm.enqueue("try a lentil curry.")
    resp = client.responses.create(model="scripted", input="what snack should I buy?", user="alice",
                                   instructions="You are a shopping helper.")
    assert isinstance(resp, Response) and resp.output_text == "try a lentil curry."
    sent = llm.requests[-1].body
    assert sent["instructions"].startswith("You are a shopping helper.")  # merged, not replaced
    assert "Never use capital letters" in sent["instructions"] and "allergic to peanuts" in llm.requests[-1].system_text
    assert resp.memstore.memory_ids and resp.memstore.rule_ids
    (turn,) = turns(client.memory)
    assert turn.response == "try a lentil curry." and turn.response_id == resp.id
    assert turn.messages[-1]["content"] == "what snack should I buy?"


def test_input_items_and_no_user(client: MemoryClient, llm: ScriptedLLM) -> None:
    client.responses.create(model="scripted", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "peanut butter ideas?"}]}])
    assert "instructions" not in llm.requests[-1].body or not llm.requests[-1].body["instructions"]
    assert turns(client.memory) == []


def test_streaming_events_in_order_and_recorded_at_the_end(client: MemoryClient, llm: ScriptedLLM) -> None:
    llm.enqueue("one two three")
    stream = client.responses.create(model="scripted", input="count for me", user="alice", stream=True)
    kinds, deltas = [], []
    for event in stream:
        if not kinds:
            assert turns(client.memory) == []
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.index("response.output_text.delta") < kinds.index("response.output_text.done")
    assert "".join(deltas) == "one two three"
    assert "allergic to peanuts" in llm.requests[-1].system_text
    (turn,) = turns(client.memory)
    assert turn.response == "one two three"


def test_previous_response_id_does_not_duplicate_the_block(client: MemoryClient, llm: ScriptedLLM) -> None:
    first = client.responses.create(model="scripted", input="hi, I like peanuts? no!", user="alice")
    client.responses.create(model="scripted", input="and now?", user="alice", previous_response_id=first.id)
    body = llm.requests[-1].body
    assert body["previous_response_id"]  # litellm decodes its own routing-encoded id before sending
    assert body["instructions"].count("<memstore_context>") == 1


def test_async_twin(config, llm: ScriptedLLM) -> None:
    async def main() -> None:
        async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k") as c:
            c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
            llm.enqueue("sure.", "fine.")
            resp = await c.responses.create(model="scripted", input="snack?", user="alice")
            assert resp.output_text == "sure."
            assert "allergic" in llm.requests[-1].system_text
            stream = await c.responses.create(model="scripted", input="another?", user="alice", stream=True)
            kinds = [e.type async for e in stream]
            assert kinds[-1] == "response.completed"
            assert [t.response for t in turns(c.memory)] == ["sure.", "fine."]
            models = await c.models.list()
            assert "scripted-model" in [m.id for m in models.data]

    asyncio.run(main())


def test_embeddings_and_models_are_delegated(client: MemoryClient, llm: ScriptedLLM) -> None:
    emb = client.embeddings.create(model="e", input="hello")
    assert len(emb.data[0].embedding) == 8
    assert llm.requests[-1].path.endswith("/embeddings")
    assert "scripted-model" in [m.id for m in client.models.list()]
