"""Crash safety: real processes killed with SIGKILL at random points during adds, streamed and plain chats,
inline extraction and background extraction, then restarted on the same store.

A "zygote" process imports memstore, chromadb and litellm once and forks one worker process per round, so a
restart costs a fork and opening the store rather than 7 s of imports; the crash semantics are those of any
process: the killed child holds real SQLite connections, a real chroma PersistentClient and HTTP streams.
Children use the real LLM extraction path (litellm -> the scripted model served by this test) and
``HashEmbedder`` (cheap restarts; a real, deterministic embedder).

After the kills the store is opened once more, repaired and drained, and must be consistent: SQLite and
FTS integrity, every memory indexed and no orphan vector, every logged write present, every recorded turn
done or skipped, and every fact extracted exactly once (one row, one ADD event) even where a killed
extraction had already applied its operations and the turn was extracted again after its lease expired.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
USERS = ["ann", "bo", "cy"]
LEASE = 1.0          # children reclaim a dead child's claims after one second (the default is 300 s)
KILLS = 50


# ---- the child side ---------------------------------------------------------------------------------------

def _config(spec: dict[str, Any]) -> Any:
    from memstore.config import MemoryConfig

    return MemoryConfig(home=Path(spec["home"]), llm_model="openai/scripted", llm_api_base=spec["base_url"],
                        llm_api_key="k", llm_max_retries=0, llm_timeout=20, extraction_batch_size=4)


def _open(spec: dict[str, Any]) -> Any:
    from memstore.memory import Memory
    from memstore.storage.embed import HashEmbedder

    return Memory(config=_config(spec), embedder=HashEmbedder())


def work(spec: dict[str, Any], seed: int, note: Any) -> None:
    """Loops forever doing random work on the shared store until it is killed."""
    from memstore import MemoryClient

    rng = random.Random(seed)
    mem = _open(spec)
    repaired = mem.repair()  # what the previous kill left: rows to index, vectors of deleted rows to drop
    note("ready", os.getpid(), repaired["indexed"], repaired["removed"])
    client = MemoryClient(memory=mem, base_url=spec["base_url"], api_key="k", start_worker=False, max_retries=0)
    wid = f"crash-{os.getpid()}"
    n = 0
    while True:
        n += 1
        tag = f"k{seed}x{n}"
        user = rng.choice(USERS)
        r = rng.random()
        if r < 0.22:
            text = f"Fact {tag} is a note"
            mem.add(text, user_id=user, infer=False)
            note("add", user, text)
        elif r < 0.42:
            stream = client.chat.completions.create(model="scripted", user=user, stream=True, messages=[
                {"role": "user", "content": f"I like item {tag}."}])
            for _chunk in stream:
                pass
            note("turn", stream.memstore.turn_id)
        elif r < 0.52:
            resp = client.chat.completions.create(model="scripted", user=user, messages=[
                {"role": "user", "content": f"I like item {tag}."}])
            note("turn", resp.memstore.turn_id)
        elif r < 0.62:
            mem.add(f"I love hobby {tag}.", user_id=user)  # inline extraction: records, extracts, marks done
            note("inline", user, tag)
        elif r < 0.70:
            facts = [m for m in mem.get_all(user) if m.text.startswith("Fact ")]
            if facts:
                victim = rng.choice(facts)
                mem.delete(victim.id, user_id=user)
                note("delete", user, victim.id)
        else:
            turns = mem.outbox.claim(wid, 4, lease_seconds=LEASE)
            mem.extraction.process(turns)
            note("drained", len(turns))


def warm_up(spec: dict[str, Any]) -> None:
    from memstore import MemoryClient
    from memstore.worker import drain

    mem = _open(spec)
    with MemoryClient(memory=mem, base_url=spec["base_url"], api_key="k", start_worker=False) as client:
        for _ in client.chat.completions.create(model="scripted", user="w", stream=True,
                                                messages=[{"role": "user", "content": "I like item warm1."}]):
            pass
        client.chat.completions.create(model="scripted", user="w", messages=[{"role": "user", "content": "hi"}])
    mem.add("I love hobby warm2.", user_id="w")
    mem.add("Fact warm3", user_id="w", infer=False)
    drain(mem.extraction)


def apply_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "home": spec["home"] + "-apply"}


def kill_after_apply(spec: dict[str, Any], seed: int, note: Any) -> None:
    """Records one turn, extracts it, and dies (SIGKILL) right after the operations were applied and before
    the turn is marked done."""
    from memstore.outbox import Outbox

    mem = _open(apply_spec(spec))
    turn = mem.outbox.record("dee", "default", [{"role": "user", "content": f"I like item apply{seed}."}], "ok")
    note("recorded", turn.id)

    class DiesBeforeDone(Outbox):  # the process is killed between applying and marking the turn done
        def mark(self, turns: Any, status: str, *a: Any, **k: Any) -> None:
            if status == "done":
                os.kill(os.getpid(), signal.SIGKILL)
            super().mark(turns, status, *a, **k)

    mem.extraction.outbox = DiesBeforeDone(mem.engine, max_attempts=mem.config.extraction_max_attempts)
    mem.extraction.process(mem.outbox.claim("doomed", 4))


def _notebook(log: Path) -> Any:
    """Appends one JSON line per call; a line is written whole by one write(2), so a kill cuts no line."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def note(*parts: Any) -> None:
        os.write(fd, (json.dumps([str(p) for p in parts]) + "\n").encode())

    return note


def zygote(spec_json: str) -> None:
    """Imports everything once, then forks a child per ``<command> <seed>`` line read from stdin."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    spec = json.loads(spec_json)
    import chromadb  # noqa: F401
    import memstore.adapters.openai.client

    import memstore.extract.pipeline
    import memstore.memory  # noqa: F401
    from memstore.llm import litellm

    litellm()
    log = Path(spec["log"])
    # litellm, openai and httpx import hundreds of modules on their first call: a throwaway child does one
    # round of every operation on a scratch store and reports them, so that every worker starts warm
    modules = Path(f"{log}.modules")
    pid = os.fork()
    if pid == 0:
        before = set(sys.modules)
        try:
            warm_up({**spec, "home": spec["home"] + "-warm"})
        finally:
            modules.write_text("\n".join(sorted(set(sys.modules) - before)))
            os._exit(0)
    os.waitpid(pid, 0)
    for name in modules.read_text().split():
        with contextlib.suppress(Exception):  # optional extras some modules probe for
            importlib.import_module(name)
    assert threading.active_count() == 1, "forking needs a single-threaded parent"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    print("zygote-ready", flush=True)
    for line in sys.stdin:
        cmd, seed = line.split()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # stdout is the zygote's pipe to the test: only pids go there
            note = _notebook(log)
            try:
                {"work": work, "kill_after_apply": kill_after_apply}[cmd](spec, int(seed), note)
            except BaseException:
                note("error", os.getpid(), traceback.format_exc())
                os._exit(1)
            os._exit(0)
        print(pid, flush=True)


# ---- the test side ----------------------------------------------------------------------------------------

class Zygote:
    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, __file__, "zygote", json.dumps(spec)], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "zygote-ready"

    def fork(self, cmd: str, seed: int) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{cmd} {seed}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.01)


def read_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    return out


class Model:
    """The scripted model: chat replies (streamed slowly enough to be killed mid-stream) and a naive extractor
    that ADDs every fact it sees, even one the prompt shows as already stored."""

    def __init__(self) -> None:
        self.extracted: Counter[str] = Counter()   # tag -> extraction requests that contained it
        self.already_stored: set[str] = set()      # tags re-extracted after their memory was applied
        self.lock = threading.Lock()

    def __call__(self, req: Any) -> Any:
        from memstore.testing import ScriptedReply

        if "long-term memory" not in req.system_text:
            return ScriptedReply(content="sure thing, " * 8, chunk_delay=0.01)
        prompt = req.last_user_text
        ops = []
        for idx, body in re.findall(r'<turn index="(\d+)"[^>]*><user>(.*?)</user>', prompt, re.S):
            for verb, noun, tag in re.findall(r"I (like|love) (item|hobby) (\w+)\.", body):
                text = f"{'Likes' if verb == 'like' else 'Loves'} {noun} {tag}"
                with self.lock:
                    self.extracted[tag] += 1
                    if f">{text}</memory>" in prompt:
                        self.already_stored.add(tag)
                ops.append({"op": "ADD", "text": text, "kind": "preference", "turn": int(idx)})
        return json.dumps({"operations": ops, "instructions": []})


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from memstore.testing import ScriptedLLM

    tmp = tmp_path_factory.mktemp("crash")
    model = Model()
    with ScriptedLLM(model) as llm:
        spec = {"home": str(tmp / "store"), "base_url": llm.base_url, "log": str(tmp / "ops.log")}
        z = Zygote(spec)
        try:
            yield z, spec, model, llm
        finally:
            z.close()


def final_open(spec: dict[str, Any]) -> Any:

    mem = _open(spec)
    repaired = mem.repair()
    while True:  # every claim of a dead process is stale now
        turns = mem.outbox.claim("final", 32, lease_seconds=0)
        if not turns:
            break
        mem.extraction.process(turns)
    return mem, repaired


def check_consistent(mem: Any) -> dict[str, Any]:
    """SQLite, FTS and vector index agree; every turn is finished; no memory exists twice."""
    from sqlalchemy import text
    from sqlmodel import Session, select

    from memstore.records import MemoryEvent, MemoryRecord, Turn, VectorTombstone, normalize_text

    with mem.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        conn.execute(text("INSERT INTO memory_fts(memory_fts) VALUES('integrity-check')"))
        fts = {r[0] for r in conn.execute(text("SELECT rowid FROM memory_fts"))}
    with Session(mem.engine) as s:
        memories = list(s.exec(select(MemoryRecord)).all())
        events = list(s.exec(select(MemoryEvent)).all())
        turns = list(s.exec(select(Turn)).all())
        tombstones = list(s.exec(select(VectorTombstone)).all())
    assert fts == {m.pk for m in memories}
    assert all(m.indexed for m in memories) and tombstones == []
    for user in USERS:
        assert mem.store.index.ids(user) == {m.id for m in memories if m.user_id == user}, user
    assert mem.store.index.count() == len(memories)
    keys = Counter((m.user_id, m.namespace, normalize_text(m.text)) for m in memories)
    assert max(keys.values(), default=1) == 1, "a memory is stored twice"
    adds = Counter(e.memory_id for e in events if e.event == "ADD")
    assert max(adds.values(), default=1) == 1, "a memory was added twice"
    statuses = Counter(t.status for t in turns)
    assert set(statuses) <= {"done", "skipped"}, statuses
    return {"memories": memories, "events": events, "turns": turns, "statuses": statuses}


def test_fifty_sigkills_lose_nothing_and_extract_exactly_once(rig: Any) -> None:
    zygote_, spec, model, llm = rig
    log = Path(spec["log"])
    rng = random.Random(2026)
    t0 = time.monotonic()
    kills = 0
    for k in range(KILLS):
        pid = zygote_.fork("work", k)
        if k % 5 == 4:  # now and then during start-up: opening the store, WAL recovery, index repair
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            deadline = time.monotonic() + 60
            while not any(e[:2] == ["ready", str(pid)] for e in read_log(log)):
                assert alive(pid), f"child {pid} died on its own: {read_log(log)[-3:]}"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 1.6))
        assert alive(pid), f"child {pid} died on its own: {read_log(log)[-3:]}"
        os.kill(pid, signal.SIGKILL)
        kills += 1
        wait_gone(pid)
    elapsed = time.monotonic() - t0
    entries = read_log(log)
    errors = [e for e in entries if e[0] == "error"]
    assert errors == [], errors[0][2] if errors else ""

    mem, repaired = final_open(spec)
    state = check_consistent(mem)
    by_user = {u: {m.text: m for m in state["memories"] if m.user_id == u} for u in USERS}

    deleted = {e[2] for e in entries if e[0] == "delete"}
    added = [(e[1], e[2]) for e in entries if e[0] == "add"]
    deleted_texts = {(e.user_id, e.old_text) for e in state["events"] if e.event == "DELETE"}
    for user, text in added:
        assert text in by_user[user] or (user, text) in deleted_texts, (user, text)
    assert not deleted & {m.id for m in state["memories"]}, "a deleted memory came back"
    turn_ids = {t.id for t in state["turns"]}
    logged_turns = [e[1] for e in entries if e[0] == "turn"]
    assert set(logged_turns) <= turn_ids, "a turn whose response was returned is missing"
    for user, tag in [(e[1], e[2]) for e in entries if e[0] == "inline"]:
        assert f"Loves hobby {tag}" in by_user[user]

    # exactly once: every recorded turn's fact is stored once, with one ADD event
    expected: set[tuple[str, str]] = set()
    for t in state["turns"]:
        for verb, noun, tag in re.findall(r"I (like|love) (item|hobby) (\w+)\.", json.dumps(t.messages)):
            expected.add((t.user_id, f"{'Likes' if verb == 'like' else 'Loves'} {noun} {tag}"))
    derived = {(m.user_id, m.text) for m in state["memories"] if m.text.startswith(("Likes ", "Loves "))}
    assert derived == expected
    twice = {tag for tag, n in model.extracted.items() if n > 1}
    readies = [e for e in entries if e[0] == "ready"]
    chats = sum(1 for r in llm.requests if r.path.endswith("/chat/completions")
                and "long-term memory" not in r.system_text)
    report = {"kills": kills, "seconds": round(elapsed, 1), "turns": dict(state["statuses"]),
              "memories": len(state["memories"]), "logged adds": len(added), "logged deletes": len(deleted),
              "chat calls": chats,
              "chat turns recorded": sum(1 for t in state["turns"] if t.meta.get("mode") == "chat"),
              "rows indexed by repair on restart": sum(int(e[2]) for e in readies) + repaired["indexed"],
              "orphan vectors removed on restart": sum(int(e[3]) for e in readies) + repaired["removed"],
              "extracted more than once": len(twice), "re-extracted after apply (NOOP)": len(model.already_stored)}
    print("\ncrash report:", report)
    assert len(logged_turns) > 10 and len(added) > 5, report  # the kills really landed among real work


def test_a_turn_killed_after_apply_is_reextracted_after_its_lease_as_noop(rig: Any) -> None:
    """The worst moment to die: the memory is written, the turn is still 'processing'. Within the lease the
    turn is left alone; after it, the turn is extracted again, and reconciliation makes that a NOOP."""
    from datetime import timedelta

    from sqlalchemy import update
    from sqlmodel import Session, col, select

    from memstore.records import MemoryEvent, Turn
    from memstore.storage.db import session_scope

    zygote_, spec, model, _llm = rig
    pid = zygote_.fork("kill_after_apply", 7)
    wait_gone(pid)
    entries = read_log(Path(spec["log"]))
    (turn_id,) = [e[1] for e in entries if e[0] == "recorded"]
    assert not [e for e in entries if e[0] == "error" and e[1] == str(pid)]

    mem = _open(apply_spec(spec))
    with Session(mem.engine) as s:
        turn = s.exec(select(Turn).where(Turn.id == turn_id)).one()
    assert turn.status == "processing" and turn.claimed_by == "doomed"
    (stored,) = [m for m in mem.get_all("dee") if m.text == "Likes item apply7"]  # applied before the kill

    assert mem.outbox.claim("impatient", 32) == []  # within the 300 s lease nobody takes it
    with session_scope(mem.engine) as s:  # ... 301 s later
        s.exec(update(Turn).where(col(Turn.id) == turn_id)  # type: ignore[call-overload]
               .values(claimed_at=turn.claimed_at - timedelta(seconds=301)))
    turns = mem.outbox.claim("after-lease", 32)
    assert [t.id for t in turns] == [turn_id]
    ops = mem.extraction.process(turns)
    assert [op.event for op in ops] == ["NOOP"] and ops[0].memory.id == stored.id
    assert "apply7" in model.already_stored  # the model was shown the memory and (naively) proposed it again
    with Session(mem.engine) as s:
        turn = s.exec(select(Turn).where(Turn.id == turn_id)).one()
        adds = s.exec(select(MemoryEvent).where(MemoryEvent.memory_id == stored.id,
                                                MemoryEvent.event == "ADD")).all()
    assert turn.status == "done" and turn.attempts == 1 and len(adds) == 1
    assert [m.text for m in mem.get_all("dee")].count("Likes item apply7") == 1


if __name__ == "__main__" and sys.argv[1:2] == ["zygote"]:
    zygote(sys.argv[2])
