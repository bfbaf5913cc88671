"""Where MemoryClient puts the block (MemoryConfig.injection), seen from the scripted upstream."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest

from memstore import AsyncMemoryClient, MemoryClient
from memstore.config import MemoryConfig
from memstore.testing import ScriptedLLM

APP = {"role": "system", "content": "You are a cooking assistant."}


def seeded(config: MemoryConfig, llm: ScriptedLLM, injection: str) -> MemoryClient:
    c = MemoryClient(memory=config.model_copy(update={"injection": injection}), base_url=llm.base_url,
                     api_key="k", start_worker=False)
    c.memory.set_instructions("alice", about_user="I'm a nurse in Porto.")
    c.memory.rules("alice").add("Never use capital letters")
    c.memory.add("My name is Ana", user_id="alice", infer=False, pinned=True)
    c.memory.add("I am allergic to shellfish", user_id="alice", infer=False)
    c.memory.add("My bike is a blue Brompton", user_id="alice", infer=False)
    return c


@pytest.fixture
def split(config: MemoryConfig, llm: ScriptedLLM):
    c = seeded(config, llm, "split")
    yield c
    c.close()


@pytest.fixture
def whole(config: MemoryConfig, llm: ScriptedLLM):
    c = seeded(config, llm, "system")
    yield c
    c.close()


def replay(client: MemoryClient, llm: ScriptedLLM, questions: list[str]) -> list[list[dict[str, Any]]]:
    """A conversation replayed request by request; returns the messages each request sent upstream."""
    history: list[dict[str, Any]] = [APP]
    sent = []
    for i, q in enumerate(questions):
        history = [*history, {"role": "user", "content": q}]
        before = copy.deepcopy(history)
        llm.enqueue(f"answer {i}.")
        reply = client.chat.completions.create(model="scripted", user="alice", messages=history)
        assert history == before  # the caller's messages are never mutated
        sent.append(llm.requests[-1].body["messages"])
        history = [*history, {"role": "assistant", "content": reply.choices[0].message.content}]
    return sent


QUESTIONS = ["Can I eat paella tonight?", "Which bike should I take to work?", "What is my name?"]


def test_split_chat_keeps_history_a_prefix(split: MemoryClient, llm: ScriptedLLM) -> None:
    sent = replay(split, llm, QUESTIONS)
    first = sent[0][0]
    assert first["role"] == "system" and first["content"].startswith("You are a cooking assistant.\n\n")
    for s in sent:
        assert s[0] == first  # the leading system message does not move
        assert s[-1]["role"] == "user" and s[-2]["role"] == "system"
        assert s[-2]["content"].startswith("<memstore_recall>")
    assert "Never use capital letters" in first["content"] and "My name is Ana" in first["content"]
    assert "shellfish" in sent[0][-2]["content"] and "shellfish" not in first["content"]
    assert "Brompton" in sent[1][-2]["content"]
    # everything before this request's recalled part is exactly what the next request sends first
    for prev, nxt in itertools.pairwise(sent):
        assert nxt[:len(prev) - 2] == prev[:-2]
        assert nxt[len(prev) - 2] == prev[-1]  # the previous user message follows, without its recalled part


def test_system_placement_puts_everything_first(whole: MemoryClient, llm: ScriptedLLM) -> None:
    sent = replay(whole, llm, QUESTIONS)
    for s, n in zip(sent, (2, 4, 6), strict=True):
        assert len(s) == n and [m["role"] for m in s].count("system") == 1
    assert "shellfish" in sent[0][0]["content"] and "Brompton" in sent[1][0]["content"]
    assert sent[0][0] != sent[1][0]  # the query-dependent block changes the very first message
    assert "<memstore_recall>" not in str(sent)


def test_split_responses(split: MemoryClient, llm: ScriptedLLM) -> None:
    items = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "Can I eat paella tonight?"}]
    original = copy.deepcopy(items)
    split.responses.create(model="scripted", input=items, user="alice", instructions="Be brief.")
    assert items == original
    body = llm.requests[-1].body
    assert body["instructions"].startswith("Be brief.\n\n<memstore_context>")
    assert "Never use capital letters" in body["instructions"] and "shellfish" not in body["instructions"]
    assert [i["role"] for i in body["input"]] == ["user", "assistant", "system", "user"]
    assert "shellfish" in body["input"][2]["content"] and body["input"][3]["content"] == original[2]["content"]
    stable = body["instructions"]
    split.responses.create(model="scripted", input="Which bike should I take to work?", user="alice",
                           instructions="Be brief.")
    body = llm.requests[-1].body
    assert body["instructions"] == stable
    assert [i["role"] for i in body["input"]] == ["system", "user"] and "Brompton" in body["input"][0]["content"]


def test_system_placement_responses(whole: MemoryClient, llm: ScriptedLLM) -> None:
    whole.responses.create(model="scripted", input="Can I eat paella tonight?", user="alice",
                           instructions="Be brief.")
    body = llm.requests[-1].body
    assert body["instructions"].startswith("Be brief.\n\n<memstore_context>") and "shellfish" in body["instructions"]
    assert body["input"] in ("Can I eat paella tonight?", [{"role": "user", "content": "Can I eat paella tonight?"}])


def test_async_twin_places_the_same_way(config: MemoryConfig, llm: ScriptedLLM) -> None:
    sync = seeded(config, llm, "split")
    sync.close()

    async def main() -> list[dict[str, Any]]:
        async with AsyncMemoryClient(memory=sync.memory, base_url=llm.base_url, api_key="k",
                                     start_worker=False) as c:
            await c.chat.completions.create(model="scripted", user="alice",
                                            messages=[APP, {"role": "user", "content": "paella?"}])
            return llm.requests[-1].body["messages"]

    sent = asyncio.run(main())
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[0]["content"].startswith(APP["content"]) and sent[1]["content"].startswith("<memstore_recall>")
