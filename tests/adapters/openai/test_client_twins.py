"""Chat and responses, sync and async, share one retrieval step, one stream collector and one enforce-rules
decision. Each test here runs the same scenario through every path that has it, so one path drifting from the
others (a metric not counted, a log line missing, a stream that does not close its connection) fails here."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from memstore import AsyncMemoryClient, Memory, MemoryClient, metrics
from memstore.records import Turn
from memstore.testing import ScriptedLLM, ScriptedReply

# litellm fakes a Responses stream for a model it does not know to stream natively; a known name makes it stream
MODEL = "gpt-4.1-mini"
LONG = " ".join(f"w{i}" for i in range(40))
PATHS = ["chat-sync", "chat-async", "responses-sync", "responses-async"]


def turns(mem: Memory) -> list[Turn]:
    from sqlmodel import Session, col, select

    with Session(mem.engine) as s:
        return list(s.exec(select(Turn).order_by(col(Turn.pk))).all())


def open_connections(port: int) -> int:
    """Established TCP connections from this machine to ``port`` (the client side of the model calls)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                count += 1
    return count


def wait_for(predicate: Any, timeout: float = 3.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def text_of(item: Any) -> str:
    """The text an item of either stream carries."""
    if getattr(item, "object", None) == "chat.completion.chunk":
        return "".join(c.delta.content or "" for c in item.choices)
    return item.delta if item.type == "response.output_text.delta" else ""


def request(client: Any, api: str, **kw: Any) -> Any:
    """One request through chat.completions or responses, the same conversation either way."""
    if api == "chat":
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": kw.pop("text")}],
                                              **kw)
    return client.responses.create(model=MODEL, input=kw.pop("text"), **kw)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the connection table from /proc")
@pytest.mark.parametrize("path", PATHS)
def test_closing_a_stream_early_closes_the_upstream_connection(config, llm: ScriptedLLM, path: str) -> None:
    api, mode = path.split("-")
    port = urlparse(llm.base_url).port
    assert port is not None
    llm.enqueue(ScriptedReply(content=LONG, chunk_delay=0.1))  # four seconds of stream if nobody stops it
    before = open_connections(port)
    seen: list[str] = []

    if mode == "sync":
        with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            stream = request(c, api, text="count to forty", user="alice", stream=True)
            for item in stream:
                seen.append(text_of(item))
                if "".join(seen):
                    break
            assert open_connections(port) > before  # the model call is still streaming
            stream.close()
            assert wait_for(lambda: open_connections(port) == before)
            recorded = turns(c.memory)
    else:
        async def main() -> list[Turn]:
            async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
                stream = await request(c, api, text="count to forty", user="alice", stream=True)
                async for item in stream:
                    seen.append(text_of(item))
                    if "".join(seen):
                        break
                assert open_connections(port) > before
                await stream.aclose()
                assert await asyncio.to_thread(wait_for, lambda: open_connections(port) == before)
                return turns(c.memory)

        recorded = asyncio.run(main())
    (turn,) = recorded
    assert turn.meta["partial"] is True and turn.response == "".join(seen) and turn.response.strip() == "w0"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_an_abandoned_stream_still_records_what_arrived(config, llm: ScriptedLLM, api: str) -> None:
    llm.enqueue(ScriptedReply(content="alpha beta gamma"))
    with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
        stream = request(c, api, text="greek letters please", user="alice", stream=True)
        while not text_of(next(stream)):
            pass
        del stream
        gc.collect()
        (turn,) = turns(c.memory)
        assert turn.meta["partial"] is True and turn.response.strip() == "alpha"


@pytest.mark.parametrize("path", [*PATHS, "chat-sync-stream", "responses-async-stream"])
def test_retrieval_is_counted_and_logged_the_same_way_on_every_path(config, llm: ScriptedLLM, path: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    api, mode, *stream = path.split("-")
    kw: dict[str, Any] = {"text": "what snack should I buy?", "user": "alice", "stream": bool(stream)}
    caplog.set_level(logging.DEBUG, logger="memstore")

    def run(c: Any) -> Any:
        out = request(c, api, **kw)
        if stream:
            assert "".join(text_of(item) for item in out) == "ok"
        return out

    async def arun(c: Any) -> Any:
        out = await request(c, api, **kw)
        if stream:
            assert "".join([text_of(item) async for item in out]) == "ok"
        return out

    async def main() -> Any:
        async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
            before = metrics.snapshot()
            return before, await arun(c)

    if mode == "sync":
        with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            c.memory.add("I am allergic to peanuts", user_id="alice", infer=False)
            before = metrics.snapshot()
            result = run(c)
    else:
        before, result = asyncio.run(main())
    after = metrics.snapshot()
    info = result.memstore
    assert len(info.memory_ids) == 1 and info.tokens > 0

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew("memstore_requests_total") == 1
    assert grew("memstore_injected_memories_total") == 1
    assert grew("memstore_injected_tokens_total") == info.tokens
    assert f"memstore injected user=alice memories={info.memory_ids}" in caplog.text


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_enforce_rules_is_the_same_for_both_twins(config, llm: ScriptedLLM, mode: str) -> None:
    messages = [{"role": "user", "content": "greet me"}]
    llm.enqueue("Hello There!", "hello there!")
    before = metrics.snapshot().get("memstore_rule_retries_total", 0)

    async def main() -> Any:
        async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key="k", enforce_rules=True,
                                     start_worker=False) as c:
            rule = c.memory.rules("alice").add("Never use capital letters")
            resp = await c.chat.completions.create(model="scripted", user="alice", messages=messages)
            return rule, resp, c.memory.compliance("alice")

    if mode == "sync":
        with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", enforce_rules=True,
                          start_worker=False) as c:
            rule = c.memory.rules("alice").add("Never use capital letters")
            resp = c.chat.completions.create(model="scripted", user="alice", messages=messages)
            rates = c.memory.compliance("alice")
    else:
        rule, resp, rates = asyncio.run(main())
    assert resp.choices[0].message.content == "hello there!"
    assert resp.memstore.retried and resp.memstore.compliance == {rule.id: True}
    assert "Hello There!" in str(llm.requests[-1].body["messages"])  # the retry showed the model its draft
    assert metrics.snapshot()["memstore_rule_retries_total"] == before + 1
    assert [(r["checked"], r["passed"]) for r in rates] == [(1, 1)]
