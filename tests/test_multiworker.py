"""Many app servers, one store: four worker processes drain one outbox of 1,000 turns.

Runs on the selected backend (see conftest.py): SQLite in WAL mode shared by four processes, or
PostgreSQL (outbox claimed with SELECT ... FOR UPDATE SKIP LOCKED) + a chroma server. The extraction model
is a scripted OpenAI-compatible server in this process; every request it receives is recorded, so the
number of times each turn was shown to the model is counted directly: it must be exactly one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session, select

from memstore.records import EPISODE, MemoryEvent, MemoryRecord, Turn
from memstore.testing import ScriptedLLM

N_TURNS = 1000
N_WORKERS = 4
N_USERS = 25
BLOCK = 4  # consecutive turns of one user, so that one claim holds a few users' batches

TURN_RE = re.compile(r'<turn index="(\d+)"[^>]*><user>(.*?)</user>', re.S)
MARK_RE = re.compile(r"\bT(\d{4})\b")


class RandomEmbedder:
    """A deterministic random unit vector per text: no model to load in five processes, and no two
    memories near-duplicates of each other (a bag-of-words embedder would merge "... T0001" into "... T0002")."""

    dim = 64
    name = "random-64"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


def _turns_section(prompt: str) -> str:
    start = prompt.rfind("<turns>")
    return prompt[start:] if start >= 0 else ""


class ExtractionModel:
    """The scripted model's reply: one ADD per turn shown, and a count of how often each turn was shown."""

    def __init__(self) -> None:
        self.seen: Counter[int] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request) -> str:  # type: ignore[no-untyped-def]
        ops = []
        for index, user in TURN_RE.findall(_turns_section(request.last_user_text)):
            for mark in MARK_RE.findall(user):
                with self.lock:
                    self.seen[int(mark)] += 1
                ops.append({"op": "ADD", "text": f"Collects stamps from town T{mark}", "kind": "fact",
                            "turn": int(index)})
        return json.dumps({"operations": ops, "instructions": []})


def _worker_main(cfg_json: str, ready: str, go: str, worker_id: str) -> None:
    """One app server's extraction worker, in its own process: open the store, wait for the start signal,
    drain the outbox, report how many turns it handled."""
    from memstore.config import MemoryConfig
    from memstore.memory import Memory
    from memstore.worker import drain

    mem = Memory(config=MemoryConfig(**json.loads(cfg_json)), embedder=RandomEmbedder())
    mem.store.index.count()  # connect to the index before the race starts
    mem.llm  # noqa: B018  (litellm imported before the race starts)
    Path(ready).touch()
    deadline = time.monotonic() + 300
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("never told to start")
        time.sleep(0.005)
    t0 = time.perf_counter()
    handled = drain(mem.extraction, worker_id=worker_id, batch=8)
    print(json.dumps({"worker": worker_id, "handled": handled, "seconds": round(time.perf_counter() - t0, 2)}))


@pytest.mark.slow
def test_four_worker_processes_extract_each_turn_exactly_once(make_memory, backend: str, tmp_path: Path) -> None:
    from memstore.memory import Memory

    model = ExtractionModel()
    with ScriptedLLM(reply_fn=model) as llm:
        base = make_memory(llm_model="openai/scripted", llm_api_base=llm.base_url, llm_api_key="test-key",
                           llm_max_retries=0, extraction_batch_size=8)
        mem = Memory(config=base.config, embedder=RandomEmbedder())
        turn_of: dict[int, str] = {}
        users = [f"user{u:02d}" for u in range(N_USERS)]
        for i in range(N_TURNS):
            user = users[(i // BLOCK) % N_USERS]
            said = [{"role": "user", "content": f"I collect stamps from town T{i:04d}."}]
            turn = mem.outbox.record(user, "default", said, "Nice collection!")
            turn_of[i] = turn.id

        ready = [tmp_path / f"ready-{n}" for n in range(N_WORKERS)]
        go = tmp_path / "go"
        cfg_json = mem.config.model_dump_json()
        procs = [subprocess.Popen([sys.executable, __file__, cfg_json, str(ready[n]), str(go), f"worker-{n}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
                 for n in range(N_WORKERS)]
        try:
            deadline = time.monotonic() + 300
            while not all(r.exists() for r in ready):
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, dead[0].communicate()[1][-3000:]
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.05)
            t0 = time.perf_counter()
            go.touch()
            outs = [p.communicate(timeout=900) for p in procs]
            wall = time.perf_counter() - t0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-3000:]
        reports = [json.loads(out.strip().splitlines()[-1]) for out, _err in outs]
        print(f"\n{backend}: {N_TURNS} turns, {N_WORKERS} workers, {wall:.1f}s: "
              + ", ".join(f"{r['worker']}={r['handled']}" for r in reports)
              + f"; {len(llm.requests)} model calls")

    # every turn claimed by exactly one worker, and all four took part
    assert sum(r["handled"] for r in reports) == N_TURNS
    assert all(r["handled"] > 0 for r in reports), reports
    # every turn shown to the model exactly once
    assert set(model.seen) == set(range(N_TURNS))
    assert max(model.seen.values()) == 1, [t for t, n in model.seen.items() if n > 1][:10]
    with Session(mem.engine) as s:
        turns = {t.id: t for t in s.exec(select(Turn)).all()}
        memories = list(s.exec(select(MemoryRecord)).all())
        adds = [e for e in s.exec(select(MemoryEvent)).all() if e.event == "ADD"]
    assert len(turns) == N_TURNS
    assert {t.status for t in turns.values()} == {"done"}
    assert {t.attempts for t in turns.values()} == {1}
    assert all(t.error is None for t in turns.values())
    # one fact and one episode per turn, no duplicates, each traced to its own turn, each indexed
    facts = [m for m in memories if m.kind != EPISODE]
    episodes = [m for m in memories if m.kind == EPISODE]
    assert len(facts) == N_TURNS and len(episodes) == N_TURNS and len(adds) == 2 * N_TURNS
    assert len({m.content_hash for m in facts}) == N_TURNS
    assert {m.source_turn_ids[0] for m in episodes if len(m.source_turn_ids) == 1} == set(turn_of.values())
    by_turn = {m.source_turn_ids[0]: m for m in facts if len(m.source_turn_ids) == 1}
    assert set(by_turn) == set(turn_of.values())
    for i, tid in turn_of.items():
        assert by_turn[tid].text == f"Collects stamps from town T{i:04d}"
        assert by_turn[tid].user_id == turns[tid].user_id
    assert all(m.indexed for m in memories)
    assert mem.store.index.ids() == {m.id for m in memories}
    # and every vector is findable by dense search in its user's scope, as searches run it (the scope's
    # vectors, written by the four processes, loaded from SQL): none lost between processes
    vectors = RandomEmbedder().embed([m.text for m in memories])
    missed = [m.id for m, v in zip(memories, vectors, strict=True)
              if [i for i, _ in mem.store.dense_query(v, m.user_id, m.namespace, 1, pool=None)] != [m.id]]
    assert not missed, f"{len(missed)} memories not found by dense search"


def _open_main(cfg_json: str, go: str, n: str) -> None:
    """Opens a store (migrating it and creating its collection if nobody has yet) and writes to it."""
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    cfg = MemoryConfig(**json.loads(cfg_json))
    while not Path(go).exists():
        time.sleep(0.002)
    mem = Memory(config=cfg, embedder=RandomEmbedder())
    op = mem.add(f"I collect stamps from town T{int(n):04d}", user_id="alice", infer=False)[0]
    print(json.dumps({"event": op.event, "indexed": op.memory.indexed}))


def test_four_processes_open_a_fresh_store_at_once(backend_settings, tmp_path: Path) -> None:
    """Migrations and the index collection are created once, whoever comes first; nobody fails."""
    cfg = {"home": str(tmp_path / "fresh"), **backend_settings()}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, __file__, "open", json.dumps(cfg), str(go), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for n in range(N_WORKERS)]
    time.sleep(3)  # let them import
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert [json.loads(out.strip().splitlines()[-1]) for out, _ in outs] == [{"event": "ADD", "indexed": True}] * 4
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    mem = Memory(config=MemoryConfig(**cfg), embedder=RandomEmbedder())
    assert len(mem.get_all("alice")) == 4 and len(mem.store.index.ids("alice")) == 4


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}


if __name__ == "__main__":
    if sys.argv[1] == "open":
        _open_main(*sys.argv[2:5])
    else:
        _worker_main(*sys.argv[1:5])
