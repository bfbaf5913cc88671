"""Model faults: rate limits, server errors, timeouts, truncated streams and garbage JSON.

Requests through MemoryClient succeed (after the SDK-style retries the caller asked for) or fail with the
provider's own error (the openai exception types, with their status codes); a failed request records no
turn, a stream cut mid-way records what arrived, marked partial. Background extraction retries transient
errors with exponential backoff, repairs invalid JSON, and never drops a turn: after the last attempt it
stays in the outbox as failed, with the error, and can be retried.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from memstore import MemoryClient
from memstore.config import MemoryConfig
from memstore.errors import LLMError
from memstore.memory import Memory
from memstore.records import Turn
from memstore.storage.db import session_scope
from memstore.storage.embed import HashEmbedder
from memstore.testing import ScriptedLLM, ScriptedReply
from memstore.worker import Worker

GOOD = json.dumps({"operations": [{"op": "ADD", "text": "Likes green tea", "kind": "preference", "turn": 0}],
                   "instructions": []})


def make_memory(tmp_path: Path, llm: ScriptedLLM, **cfg: Any) -> Memory:
    cfg = {"llm_max_retries": 0, "llm_timeout": 5.0, **cfg}
    return Memory(config=MemoryConfig(home=tmp_path / "store", llm_model="openai/scripted",
                                      llm_api_base=llm.base_url, llm_api_key="k", **cfg), embedder=HashEmbedder())


def all_turns(mem: Memory) -> list[Turn]:
    with Session(mem.engine) as s:
        return list(s.exec(select(Turn).order_by(col(Turn.pk))).all())


def age_turns(mem: Memory, seconds: float) -> None:
    """Moves every turn's last processing time into the past (instead of waiting out the retry delay)."""
    with session_scope(mem.engine) as s:
        for t in s.exec(select(Turn)).all():
            if t.processed_at is not None:
                s.exec(update(Turn).where(col(Turn.id) == t.id)  # type: ignore[call-overload]
                       .values(processed_at=t.processed_at - timedelta(seconds=seconds)))


def extraction_calls(llm: ScriptedLLM) -> list[Any]:
    return [r for r in llm.requests if "long-term memory" in r.system_text]


# ---- the request path ---------------------------------------------------------------------------------------

FAULTS = [
    ("429", ScriptedReply(status=429, error="slow down"), openai.RateLimitError, 429),
    ("500", ScriptedReply(status=500, error="upstream exploded"), openai.InternalServerError, 500),
    ("503", ScriptedReply(status=503, error="overloaded"), openai.APIStatusError, 503),
    ("400", ScriptedReply(status=400, error="bad request"), openai.BadRequestError, 400),
    ("timeout", ScriptedReply(content="too late", delay=2.0), openai.APITimeoutError, None),
]


@pytest.mark.parametrize(("name", "fault", "error", "status"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_failed_request_raises_the_providers_error_and_records_nothing(
        tmp_path: Path, name: str, fault: ScriptedReply, error: type[Exception], status: int | None,
        stream: bool) -> None:
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        mem.add("I like green tea", user_id="alice", infer=False)
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", max_retries=0, timeout=0.5,
                          start_worker=False) as c:
            llm.enqueue(fault)
            with pytest.raises(error) as info:
                resp = c.chat.completions.create(model="scripted", user="alice", stream=stream,
                                                 messages=[{"role": "user", "content": "what do I drink?"}])
                if stream:
                    list(resp)
            if status is not None:
                assert info.value.status_code == status  # type: ignore[attr-defined]
            assert "Green tea" not in str(info.value) and "green tea" not in str(info.value)
            assert all_turns(mem) == []  # nothing happened, nothing is recorded
            # the memory layer is unharmed: the next request gets its memory and is recorded
            resp = c.chat.completions.create(model="scripted", user="alice",
                                             messages=[{"role": "user", "content": "what do I drink?"}])
            assert resp.choices[0].message.content == "ok" and resp.memstore.memory_ids
            assert len(all_turns(mem)) == 1


def test_transient_errors_are_retried_when_the_caller_asks(tmp_path: Path) -> None:
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", max_retries=3, start_worker=False) as c:
            llm.enqueue(ScriptedReply(status=429, error="slow down", retry_after=0.05),
                        ScriptedReply(status=500, error="boom"), "third time lucky")
            resp = c.chat.completions.create(model="scripted", user="alice",
                                             messages=[{"role": "user", "content": "hello"}])
            assert resp.choices[0].message.content == "third time lucky"
            assert len(llm.requests) == 3 and [t.response for t in all_turns(mem)] == ["third time lucky"]


def test_a_stream_cut_mid_way_raises_and_records_the_partial_reply(tmp_path: Path) -> None:
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", max_retries=0, start_worker=False) as c:
            llm.enqueue(ScriptedReply(content="alpha beta gamma delta epsilon", truncate_stream_after=3))
            got: list[str] = []
            with pytest.raises(openai.APIError):
                for chunk in c.chat.completions.create(model="scripted", user="alice", stream=True,
                                                       messages=[{"role": "user", "content": "I love greek letters"}]):
                    if chunk.choices and chunk.choices[0].delta.content:
                        got.append(chunk.choices[0].delta.content)
            (turn,) = all_turns(mem)
            assert got and turn.response == "".join(got) and turn.meta["partial"] is True
            assert "gamma delta" not in turn.response


def test_a_stream_that_ends_before_its_first_chunk_is_no_reply_and_records_nothing(tmp_path: Path) -> None:
    """An upstream that answers a stream with no event at all (only ``[DONE]``): the caller gets the empty
    stream the SDK would give, and no turn is recorded or checked against the rules, as for a plain answer that
    is no completion. A stream the caller closes before reading is still recorded (what the user said)."""
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        mem.rules("alice").add("Never use capital letters")
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", max_retries=0, start_worker=False) as c:
            llm.enqueue(ScriptedReply(content="Hello", edit=lambda _payload: None))
            stream = c.chat.completions.create(model="scripted", user="alice", stream=True,
                                               messages=[{"role": "user", "content": "hi"}])
            assert list(stream) == []
            assert all_turns(mem) == [] and mem.compliance("alice") == []
            llm.enqueue(ScriptedReply(content="hello there"))
            c.chat.completions.create(model="scripted", user="alice", stream=True,
                                      messages=[{"role": "user", "content": "I moved to Porto"}]).close()
            (turn,) = all_turns(mem)
            assert turn.messages[-1]["content"] == "I moved to Porto" and turn.meta["partial"] is True


def test_garbage_from_the_chat_model_passes_through_untouched(tmp_path: Path) -> None:
    garbage = '{"operations": [ {"op": "ADD", "text": "trunc\x01\ufffd </memstore_context> \\u0000'
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            llm.enqueue(garbage)
            resp = c.chat.completions.create(model="scripted", user="alice",
                                             messages=[{"role": "user", "content": "hi"}])
            assert resp.choices[0].message.content == garbage
            assert all_turns(mem)[0].response == garbage


def test_requests_keep_working_while_extraction_fails(tmp_path: Path) -> None:
    """The extraction model is down (500 on every call): chat requests are unaffected, and every turn stays
    in the outbox, failed with the error, instead of disappearing."""

    def reply(req: Any) -> Any:
        if "long-term memory" in req.system_text:
            return ScriptedReply(status=500, error="extraction model is down")
        return "fine"

    with ScriptedLLM(reply) as llm:
        mem = make_memory(tmp_path, llm, extraction_max_attempts=1)
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k") as c:
            c.worker.poll_interval = 0.05
            for i in range(5):
                resp = c.chat.completions.create(model="scripted", user="alice",
                                                 messages=[{"role": "user", "content": f"I like tea number {i}."}])
                assert resp.choices[0].message.content == "fine"
            assert c.flush(timeout=30)
        turns = all_turns(mem)
    assert len(turns) == 5 and {t.status for t in turns} == {"failed"}
    assert all("extraction model is down" in (t.error or "") for t in turns)


# ---- background extraction ----------------------------------------------------------------------------------

class FlakyModel:
    """Extraction replies from a script of faults, then GOOD; records when each call arrived."""

    def __init__(self, *faults: Any) -> None:
        self.faults = list(faults)
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, req: Any) -> Any:
        with self.lock:
            self.times.append(time.monotonic())
            return self.faults.pop(0) if self.faults else GOOD


def test_transient_extraction_errors_are_retried_with_exponential_backoff(tmp_path: Path) -> None:
    model = FlakyModel(ScriptedReply(status=429, error="rate limited"), ScriptedReply(status=500, error="boom"),
                       ScriptedReply(status=503, error="busy"))
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm, llm_max_retries=3)
        mem.llm.backoff = 0.2
        ops = mem.add("I like green tea.", user_id="alice")
    assert [o.memory.text for o in ops] == ["Likes green tea"]
    gaps = [b - a for a, b in zip(model.times, model.times[1:], strict=False)]
    assert len(gaps) == 3
    # backoff * 2**attempt * jitter(0.5..1.5): at least 0.1, 0.2, 0.4 seconds
    for attempt, gap in enumerate(gaps):
        assert gap >= 0.2 * 2 ** attempt * 0.5, gaps
    (turn,) = all_turns(mem)
    assert turn.status == "done" and turn.attempts == 1


def test_an_extraction_timeout_is_retried(tmp_path: Path) -> None:
    model = FlakyModel(ScriptedReply(content=GOOD, delay=3.0))
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm, llm_max_retries=1, llm_timeout=0.5)
        mem.llm.backoff = 0.05
        ops = mem.add("I like green tea.", user_id="alice")
    assert [o.memory.text for o in ops] == ["Likes green tea"] and len(model.times) == 2


@pytest.mark.parametrize("bad", [
    "I think the user likes tea!",                                            # prose, no JSON
    '{"operations": [{"op": "ADD", "text": "Likes gr',                        # truncated JSON
    '{"operations": [{"op": "DELETE_EVERYTHING", "target": "*"}]}',           # schema violation
    '{"operations": "all of them", "instructions": 7}',                       # wrong types
    "```json\n{\"operations\": [}\n```",                                      # fenced, broken
    "",                                                                        # empty reply
])
def test_invalid_json_is_repaired_by_asking_again(tmp_path: Path, bad: str) -> None:
    model = FlakyModel(bad)
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm)
        ops = mem.add("I like green tea.", user_id="alice")
        repair_prompt = json.dumps(extraction_calls(llm)[-1].body["messages"][-2:])
    assert [o.memory.text for o in ops] == ["Likes green tea"] and len(model.times) == 2
    assert "not valid" in repair_prompt  # the second call told the model what was wrong


def test_a_turn_is_never_dropped_failed_turns_are_retried_by_the_worker(tmp_path: Path) -> None:
    """Attempt 1: garbage twice (repair fails) -> failed. Attempt 2, after the outbox backoff: a 500 -> failed.
    Attempt 3: good JSON -> done. The worker does all of it on its own."""
    model = FlakyModel("garbage", "more garbage", ScriptedReply(status=500, error="boom"))
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm, extraction_max_attempts=3)

        turn = mem.outbox.record("alice", "default", [{"role": "user", "content": "I like green tea."}], "ok")
        worker = Worker(mem.extraction, poll_interval=0.05).start()
        try:
            deadline = time.monotonic() + 60
            while all_turns(mem)[0].status != "done":
                assert time.monotonic() < deadline, all_turns(mem)[0]
                time.sleep(0.05)
        finally:
            worker.stop()
    (done,) = all_turns(mem)
    assert done.id == turn.id and done.attempts == 3 and done.error is None
    assert [m.text for m in mem.get_all("alice")] == ["Likes green tea"]
    assert len(model.times) == 4 and model.times[2] - model.times[1] >= 5  # the outbox waits before a retry


def test_after_the_last_attempt_the_turn_stays_failed_and_can_be_retried(tmp_path: Path) -> None:
    model = FlakyModel(*(["not json"] * 6))
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm, extraction_max_attempts=3)

        mem.outbox.record("alice", "default", [{"role": "user", "content": "I like green tea."}], "ok")
        for _ in range(3):
            mem.extraction.process(mem.outbox.claim("w", 8))
            age_turns(mem, 60)  # skip the outbox's wait between attempts
        assert mem.outbox.claim("w", 8) == []  # out of attempts: no more automatic retries ...
        (turn,) = all_turns(mem)
        assert turn.status == "failed" and turn.attempts == 3 and "valid JSON" in (turn.error or "")
        assert mem.outbox.retry("alice") == 1  # ... but it is still there, visible and retryable
        mem.extraction.process(mem.outbox.claim("w", 8))
    (turn,) = all_turns(mem)
    assert turn.status == "done" and [m.text for m in mem.get_all("alice")] == ["Likes green tea"]


def test_inline_extraction_failure_raises_and_keeps_the_turn(tmp_path: Path) -> None:
    model = FlakyModel(ScriptedReply(status=500, error="boom"))
    with ScriptedLLM(model) as llm:
        mem = make_memory(tmp_path, llm)
        with pytest.raises(LLMError):
            mem.add("I like green tea.", user_id="alice")
        (turn,) = all_turns(mem)
        assert turn.status == "failed" and "boom" in (turn.error or "")
        age_turns(mem, 60)
        mem.extraction.process(mem.outbox.claim("w", 8))
    assert all_turns(mem)[0].status == "done" and [m.text for m in mem.get_all("alice")] == ["Likes green tea"]


def test_a_model_cannot_reach_memories_it_was_not_shown(tmp_path: Path) -> None:
    """Targets are handles (m1, r1 ...) of what the prompt showed; a model that names a raw id, another user's
    memory or an unknown handle changes nothing it was not shown."""
    with ScriptedLLM() as llm:
        mem = make_memory(tmp_path, llm)
        (victim,) = mem.add("Lives in Berlin", user_id="bob", infer=False)
        (own,) = mem.add("Has a cat", user_id="alice", infer=False)
        llm.reply_fn = lambda req: json.dumps({"operations": [
            {"op": "INVALIDATE", "target": victim.memory.id, "reason": "raw id of another user"},
            {"op": "UPDATE", "target": victim.memory.id[:8], "text": "Lives nowhere"},
            {"op": "INVALIDATE", "target": own.memory.id},
            {"op": "NOOP", "target": "m999"},
            {"op": "INVALIDATE", "target": "r1"},
        ], "instructions": [{"action": "remove", "text": "anything", "target": "r42"}]})
        mem.add("I like green tea.", user_id="alice")
    assert mem.get(victim.memory.id).invalid_at is None and mem.get(victim.memory.id).text == "Lives in Berlin"
    assert mem.get(own.memory.id).invalid_at is None
    assert [m.text for m in mem.get_all("bob")] == ["Lives in Berlin"]
