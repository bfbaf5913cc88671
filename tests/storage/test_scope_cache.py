"""The in-process scope vector cache (memstore/dense.py): exact answers, and never stale, whoever writes.

Runs on the selected backend (SQLite + embedded chroma, or PostgreSQL + a chroma server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memstore import metrics
from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder
from memstore.storage.scope_cache import ROW_OVERHEAD_BYTES, ScopeVectorCache

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["I play the cello in an orchestra", "I grow tomatoes on my balcony", "My daughter Emma was born in 2021",
         "I am allergic to peanuts", "I work as a nurse in Porto", "My favourite film is Spirited Away",
         "I run a half marathon every spring", "I drive an old red Volvo"]


@pytest.fixture
def new_config(tmp_path: Path, backend_settings: Callable[[], dict[str, str]]) -> Callable[..., MemoryConfig]:
    counter = {"n": 0}

    def make(**kwargs: Any) -> MemoryConfig:
        counter["n"] += 1
        return MemoryConfig(home=tmp_path / f"d{counter['n']}", **{**backend_settings(), **kwargs})

    return make


def _mem(cfg: MemoryConfig) -> Memory:
    return Memory(config=cfg, embedder=HashEmbedder(64))


def _dense(mem: Memory, query: str, user: str = "alice", namespace: str = "default", k: int = 5) -> list[str]:
    return [i for i, _ in mem.store.dense_query(mem.store.embed_query(query), user, namespace, k)]


def _hits() -> float:
    return metrics.snapshot().get("memstore_vector_cache_hits_total", 0)


def test_cached_search_is_exact_and_matches_the_index(new_config) -> None:
    mem = _mem(new_config())
    ids = {o.memory.text: o.memory.id for o in mem.add([{"role": "user", "content": t} for t in TEXTS],
                                                        user_id="alice", infer=False)}
    mem.add("Bob plays the cello too", user_id="bob", infer=False)
    vecs = HashEmbedder(64).embed(TEXTS)
    for query in ("cello orchestra", "peanuts allergy", "Volvo car", "nurse Porto"):
        q = HashEmbedder(64).embed([query])[0]
        best = ids[TEXTS[int(np.argmax(vecs @ q))]]  # the queries each share words with one memory only
        before = _hits()
        got = mem.store.dense_query(q, "alice", "default", 3)
        assert _hits() == before + 1  # answered from the cache
        assert got[0][0] == best
        assert [s for _, s in got] == pytest.approx(sorted((vecs @ q).tolist(), reverse=True)[:3], abs=1e-5)
        # chroma's own (approximate) answer agrees on this small scope
        assert mem.store.index.query(q, "alice", "default", 1)[0][0] == best
    assert set(_dense(mem, "cello", k=20)) == set(ids.values())  # bob's memory is not alice's


def test_every_change_is_seen_by_the_next_search(new_config) -> None:
    mem = _mem(new_config())
    [cello] = [o.memory.id for o in mem.add("I play the cello", user_id="alice", infer=False)]
    assert _dense(mem, "cello") == [cello]
    [tomato] = [o.memory.id for o in mem.add("I grow tomatoes", user_id="alice", infer=False)]
    assert _dense(mem, "tomatoes")[0] == tomato
    mem.update(cello, "I play the violin")
    assert _dense(mem, "violin")[0] == cello
    assert mem.store.dense_query(mem.store.embed_query("violin"), "alice", "default", 1)[0][1] == \
        pytest.approx(float(HashEmbedder(64).embed(["violin"])[0] @ HashEmbedder(64).embed(["I play the violin"])[0]))
    mem.delete(tomato)
    assert tomato not in _dense(mem, "tomatoes")
    mem.add("I speak Japanese", user_id="alice", namespace="work", infer=False)
    mem.forget(user_id="alice")
    assert _dense(mem, "violin") == [] and _dense(mem, "Japanese", namespace="work") == []
    [again] = [o.memory.id for o in mem.add("I play the cello", user_id="alice", infer=False)]
    assert _dense(mem, "cello") == [again]


@pytest.fixture
def server_config(servers: Any, tmp_path: Path) -> Any:
    """A fresh store on PostgreSQL + the chroma server (conftest's ``servers``): several processes may share
    it (embedded chroma is single-process, docs/security.md)."""
    store = servers.new_store()
    yield MemoryConfig(home=tmp_path / "shared", **store)
    servers.drop(store)


@pytest.mark.servers
def test_writes_of_another_process_are_seen(server_config: MemoryConfig) -> None:
    cfg = server_config
    mem = _mem(cfg)
    [cello] = [o.memory.id for o in mem.add("I play the cello", user_id="alice", infer=False)]
    assert _dense(mem, "cello") == [cello]  # cached now
    code = (
        "import json, sys; from memstore.config import MemoryConfig; from memstore.memory import Memory; "
        "from memstore.storage.embed import HashEmbedder; "
        "m = Memory(config=MemoryConfig(**json.loads(sys.argv[1])), embedder=HashEmbedder(64)); "
        "new = m.add('I grow tomatoes', user_id='alice', infer=False)[0].memory.id; "
        "m.update(sys.argv[2], 'I play the violin'); print(new)"
    )
    out = subprocess.run([sys.executable, "-c", code, cfg.model_dump_json(), cello], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    tomato = out.stdout.split()[-1]
    assert _dense(mem, "tomatoes")[0] == tomato
    assert _dense(mem, "violin")[0] == cello
    hit = mem.search("violin", user_id="alice")[0]
    assert hit.memory.id == cello and hit.memory.text == "I play the violin" and "dense" in hit.sources


def test_a_big_scope_is_served_by_the_index_while_it_loads(new_config) -> None:
    mem = _mem(new_config())
    mem.add([{"role": "user", "content": f"{t} (note {n})"} for n in range(5) for t in TEXTS], user_id="alice",
            infer=False)
    cache = ScopeVectorCache(mem.engine, mem.store.index, max_bytes=2**24, sync_load_limit=10)
    q = HashEmbedder(64).embed(["cello orchestra"])[0]
    assert cache.query(q, "alice", "default", 3) is None  # 40 vectors > 10: loading in the background
    deadline = time.monotonic() + 60
    while (got := cache.query(q, "alice", "default", 3)) is None:
        assert time.monotonic() < deadline, "the scope never finished loading"
        time.sleep(0.05)
    assert [s for _, s in got] == pytest.approx([s for _, s in mem.store.index.query(q, "alice", "default", 3)],
                                                abs=1e-5)
    assert "cello" in mem.get(got[0][0]).text and cache.size[0] == 1


def test_the_byte_budget_evicts_least_recently_used_scopes(new_config) -> None:
    mem = _mem(new_config())
    for u in ("u1", "u2", "u3"):
        mem.add([{"role": "user", "content": f"{u}: {t}"} for t in TEXTS], user_id=u, infer=False)
    one_scope = 8 * (64 * 4 + ROW_OVERHEAD_BYTES)
    cache = ScopeVectorCache(mem.engine, mem.store.index, max_bytes=2 * one_scope)
    q = HashEmbedder(64).embed(["cello"])[0]
    for u in ("u1", "u2", "u3"):
        assert cache.query(q, u, "default", 1) is not None
    scopes, used = cache.size
    assert scopes == 2 and used <= 2 * one_scope
    # a scope bigger than the whole budget is never cached: the index answers it
    tiny = ScopeVectorCache(mem.engine, mem.store.index, max_bytes=one_scope // 2)
    assert tiny.query(q, "u1", "default", 1) is None and tiny.size == (0, 0)


def test_the_cache_can_be_turned_off_and_an_index_without_vectors_is_asked_directly(new_config) -> None:
    off = _mem(new_config(vector_cache_mb=0))
    assert off.store.vector_cache is None
    [cello] = [o.memory.id for o in off.add("I play the cello", user_id="alice", infer=False)]
    assert _dense(off, "cello") == [cello]

    class QueryOnly:  # a VectorIndex with no vectors(): nothing to cache from
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "vectors":
                raise AttributeError(name)
            return getattr(self.inner, name)

    cfg = new_config()
    first = _mem(cfg)
    [tomato] = [o.memory.id for o in first.add("I grow tomatoes", user_id="alice", infer=False)]
    mem = Memory(config=cfg, embedder=HashEmbedder(64), index=QueryOnly(first.store.index))
    assert _dense(mem, "tomatoes") == [tomato]


def test_opening_an_older_store_seeds_the_scope_tokens(new_config) -> None:
    from sqlalchemy import text

    from memstore.storage.db import migrate

    mem = _mem(new_config())
    mem.add("I play the cello", user_id="alice", infer=False)
    mem.add("I speak Japanese", user_id="alice", namespace="work", infer=False)
    with mem.engine.begin() as conn:  # as the store was before migration 004
        conn.execute(text("DELETE FROM scope_versions"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name = '004_scope_versions'"))
    assert migrate(mem.engine) == ["004_scope_versions"]
    with mem.engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, namespace, token FROM scope_versions ORDER BY namespace")).all()
    assert [(u, n) for u, n, _t in rows] == [("alice", "default"), ("alice", "work")]
    assert len({t for _u, _n, t in rows}) == 2 and all(len(t) == 32 for _u, _n, t in rows)


def test_search_results_do_not_depend_on_the_cache(new_config) -> None:
    """The same store searched with and without the cache: the same memories, in the same order."""
    cfg = new_config()
    mem = _mem(cfg)
    mem.add([{"role": "user", "content": t} for t in TEXTS], user_id="alice", infer=False)
    plain = Memory(config=cfg.model_copy(update={"vector_cache_mb": 0}), embedder=HashEmbedder(64))
    for query in ("what instrument do I play?", "food allergies", "my job", "family"):
        assert [h.memory.id for h in mem.search(query, user_id="alice")] == \
            [h.memory.id for h in plain.search(query, user_id="alice")]
    assert json.loads(cfg.model_dump_json())["vector_cache_mb"] == 256
