"""memstore serve killed with SIGKILL while a slow stream is in flight, then restarted on the same store.

The guarantee: a turn is written to the outbox (committed to SQL) when its response ends, before the last
byte reaches the client. Every turn recorded before the kill survives it and is extracted after the restart
(the worker replays pending turns); a stream cut by the kill never ended, so it is not recorded at all.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from memstore.adapters.server.keys import open_keys
from sqlmodel import Session, create_engine, select

from memstore.records import Turn
from memstore.testing import ScriptedLLM, ScriptedReply
from memstore.testing.server_process import ServerProcess


def _turns(home: Path) -> list[Turn]:
    engine = create_engine(f"sqlite:///{home / 'memstore.db'}")
    try:
        with Session(engine) as s:
            return list(s.exec(select(Turn).order_by(Turn.pk)).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_sigkill_mid_stream_loses_no_recorded_turn(tmp_path: Path, llm: ScriptedLLM) -> None:
    home = tmp_path / "store"
    _row, key = open_keys(home=str(home)).create("crash-test")
    common = ["--upstream-base-url", llm.base_url, "--upstream-max-retries", "0", "--extractor", "heuristic",
              "--rate-limit", "0"]
    first = ServerProcess(home, [*common, "--no-worker"]).start()
    try:
        c = openai.OpenAI(base_url=first.base_url, api_key=key, max_retries=0)
        said = ["I'm vegetarian.", "I live in Porto.", "I love hiking."]
        for text in said:
            llm.enqueue(f"noted: {text}")
            c.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": text}], user="zoe")
        llm.enqueue("streamed answer")
        assert "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="scripted-model", messages=[{"role": "user", "content": "I play the cello."}], user="zoe",
            stream=True) if ch.choices) == "streamed answer"

        words = " ".join(f"word{i}" for i in range(40))
        llm.enqueue(ScriptedReply(content=words, chunk_delay=0.2))
        got: list[str] = []
        failure: list[BaseException] = []
        first_chunk = threading.Event()

        def slow_stream() -> None:
            try:
                for ch in c.chat.completions.create(model="scripted-model", user="zoe", stream=True,
                                                    messages=[{"role": "user", "content": "I have two cats."}]):
                    if ch.choices and ch.choices[0].delta.content:
                        got.append(ch.choices[0].delta.content)
                        first_chunk.set()
            except BaseException as exc:  # the connection dies with the server
                failure.append(exc)
            finally:
                first_chunk.set()

        reader = threading.Thread(target=slow_stream)
        reader.start()
        assert first_chunk.wait(30)
        first.kill()
        reader.join(30)
        assert got and len(got) < 40, "the stream was cut mid-way"
        assert failure and isinstance(failure[0], openai.APIConnectionError | httpx.HTTPError)
    finally:
        first.kill()

    # the four finished turns are durable; the cut stream was never recorded
    turns = _turns(home)
    assert [t.response for t in turns] == [*(f"noted: {t}" for t in said), "streamed answer"]
    assert all(t.status == "pending" for t in turns)
    assert not any("two cats" in str(t.messages) for t in turns)

    with ServerProcess(home, common) as second:  # restart, now with the worker: pending turns are replayed
        def memories() -> list[str]:
            resp = httpx.get(f"{second.url}/v1/memory/users/zoe/memories", headers={"Authorization": f"Bearer {key}"})
            return [m["text"].lower() for m in resp.json()["data"]]

        deadline = time.monotonic() + 30
        found: list[str] = []
        while time.monotonic() < deadline:
            found = memories()
            if len(found) >= 4:
                break
            time.sleep(0.2)
        for fact in ("vegetarian", "porto", "hiking", "cello"):
            assert any(fact in m for m in found), (fact, found)
        assert not any("cats" in m for m in found)
        depth = _gauge(httpx.get(f"{second.url}/metrics").text, "memstore_extraction_queue_depth")
        assert depth == 0
    assert {t.status for t in _turns(home)} <= {"done", "skipped"}


def _gauge(text: str, name: str) -> Any:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
