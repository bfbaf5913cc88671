"""Each memory's vector is also kept in SQL (``memory_vectors``): a search loads its scope from there, so a fresh
process answers its first query without starting the vector index's client (issue 17: the first MemoryClient
reply), and a store written before the table existed fills it from the index as its scopes are searched.

Runs on the selected backend (SQLite + embedded chroma, or PostgreSQL + a chroma server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, func
from sqlmodel import Session, select

from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.records import MemoryVector
from memstore.storage.embed import HashEmbedder

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["I play the cello in an orchestra", "I grow tomatoes on my balcony", "My daughter Emma was born in 2021",
         "I am allergic to peanuts", "I work as a nurse in Porto", "I drive an old red Volvo"]
QUERIES = ["cello orchestra", "peanuts allergy", "Volvo car", "nurse Porto", "tomatoes"]


@pytest.fixture
def cfg(tmp_path: Path, backend_settings: Callable[[], dict[str, str]]) -> MemoryConfig:
    return MemoryConfig(home=tmp_path / "store", **backend_settings())


def _mem(cfg: MemoryConfig) -> Memory:
    return Memory(config=cfg, embedder=HashEmbedder(64))


def _rows(mem: Memory, user: str | None = None) -> dict[str, tuple[str, np.ndarray]]:
    with Session(mem.engine) as s:
        q = select(MemoryVector)
        if user is not None:
            q = q.where(MemoryVector.user_id == user)
        return {r.memory_id: (r.content_hash, np.frombuffer(r.vector, dtype=np.float32)) for r in s.exec(q).all()}


def _dense(mem: Memory, query: str, user: str = "alice") -> list[tuple[str, float]]:
    return mem.store.dense_query(mem.store.embed_query(query), user, "default", 3)


def test_every_indexed_memory_has_its_vector_in_sql_and_writes_keep_it_true(cfg: MemoryConfig) -> None:
    mem = _mem(cfg)
    ids = [o.memory.id for o in mem.add([{"role": "user", "content": t} for t in TEXTS], user_id="alice",
                                         infer=False)]
    mem.add("Bob plays the cello too", user_id="bob", infer=False)
    rows = _rows(mem, "alice")
    assert set(rows) == set(ids)
    for mid, (h, vec) in rows.items():
        rec = mem.get(mid)
        assert h == rec.content_hash
        np.testing.assert_allclose(vec, HashEmbedder(64).embed([rec.text])[0], atol=1e-6)
        np.testing.assert_allclose(vec, mem.store.index.vectors([mid])[mid], atol=1e-6)  # what chroma holds

    mem.update(ids[0], "I play the violin")
    h, vec = _rows(mem, "alice")[ids[0]]
    assert h == mem.get(ids[0]).content_hash
    np.testing.assert_allclose(vec, HashEmbedder(64).embed(["I play the violin"])[0], atol=1e-6)
    mem.delete(ids[1])
    assert ids[1] not in _rows(mem)
    mem.forget(user_id="alice")
    assert _rows(mem, "alice") == {} and len(_rows(mem, "bob")) == 1


def test_a_fresh_process_searches_without_starting_the_vector_index(cfg: MemoryConfig) -> None:
    mem = _mem(cfg)
    mem.add([{"role": "user", "content": t} for t in TEXTS], user_id="alice", infer=False)
    expected = {q: [[i, s] for i, s in _dense(mem, q)] for q in QUERIES}
    code = (
        "import json, sys; from memstore.config import MemoryConfig; from memstore.memory import Memory; "
        "from memstore.storage.embed import HashEmbedder; "
        "m = Memory(config=MemoryConfig(**json.loads(sys.argv[1])), embedder=HashEmbedder(64)); "
        "out = {q: [[i, s] for i, s in m.store.dense_query(m.store.embed_query(q), 'alice', 'default', 3)] "
        "for q in json.loads(sys.argv[2])}; "
        "hits = m.search('cello', user_id='alice'); "
        "print(json.dumps({'dense': out, 'search': hits[0].memory.text, 'chromadb': 'chromadb' in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code, cfg.model_dump_json(), json.dumps(QUERIES)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["chromadb"] is False  # the index's client was never imported, let alone started
    assert got["search"] == "I play the cello in an orchestra"
    for q in QUERIES:
        assert [i for i, _ in got["dense"][q]] == [i for i, _ in expected[q]]
        assert [s for _, s in got["dense"][q]] == pytest.approx([s for _, s in expected[q]], abs=1e-6)


def test_a_store_without_the_sql_copies_is_served_by_the_index_and_fills_them(cfg: MemoryConfig) -> None:
    """Stores written before ``memory_vectors`` existed: the first search of a scope reads the index, gives the
    same answers, and copies the vectors into SQL for the next process."""
    mem = _mem(cfg)
    mem.add([{"role": "user", "content": t} for t in TEXTS], user_id="alice", infer=False)
    expected = {q: _dense(mem, q) for q in QUERIES}
    with Session(mem.engine) as s:
        s.exec(delete(MemoryVector))  # type: ignore[call-overload]
        s.commit()
    older = _mem(cfg)  # a new process: nothing cached
    for q in QUERIES:
        got = _dense(older, q)
        assert [i for i, _ in got] == [i for i, _ in expected[q]]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected[q]], abs=1e-6)
    deadline = time.monotonic() + 30
    while len(_rows(older, "alice")) < len(TEXTS):
        assert time.monotonic() < deadline, "the vectors were never copied into SQL"
        time.sleep(0.05)
    for mid, (h, vec) in _rows(older, "alice").items():
        assert h == older.get(mid).content_hash
        np.testing.assert_allclose(vec, older.store.index.vectors([mid])[mid], atol=1e-6)


def test_a_stale_sql_copy_is_never_used(cfg: MemoryConfig) -> None:
    """A copy whose hash no longer matches the memory's text (a writer that did not replace it) is ignored: the
    vector comes from the index instead."""
    mem = _mem(cfg)
    [cello] = [o.memory.id for o in mem.add("I play the cello", user_id="alice", infer=False)]
    with Session(mem.engine) as s:
        row = s.exec(select(MemoryVector).where(MemoryVector.memory_id == cello)).one()
        row.content_hash = "0" * 64
        row.vector = HashEmbedder(64).embed(["tomatoes on the balcony"])[0].astype(np.float32).tobytes()
        s.add(row)
        s.commit()
    fresh = _mem(cfg)
    [(mid, score)] = fresh.store.dense_query(fresh.store.embed_query("I play the cello"), "alice", "default", 1)
    assert mid == cello and score == pytest.approx(1.0, abs=1e-5)


def test_reindex_rewrites_the_sql_copies(cfg: MemoryConfig) -> None:
    mem = _mem(cfg)
    mem.add([{"role": "user", "content": t} for t in TEXTS], user_id="alice", infer=False)
    other = Memory(config=cfg, embedder=HashEmbedder(32))  # the embedding model changed
    assert other.reindex() == len(TEXTS)
    with Session(other.engine) as s:
        assert s.exec(select(func.count()).select_from(MemoryVector)).one() == len(TEXTS)
        dims = {len(np.frombuffer(v, dtype=np.float32)) for v in s.exec(select(MemoryVector.vector)).all()}
    assert dims == {32}
    assert _dense(other, "cello orchestra")[0][0] in {o.id for o in other.get_all("alice")
                                                      if "cello" in o.text}
