"""What only the server backends have: PostgreSQL full-text search, row locks, migrations under concurrency,
timestamps whatever the session time zone, and a chroma server shared by several processes.

These tests need a PostgreSQL database and a chroma server (conftest.py's ``servers`` fixture:
MEMSTORE_TEST_DATABASE_URL / MEMSTORE_TEST_VECTOR_URL). Without them they skip, unless
MEMSTORE_REQUIRE_SERVERS=1 (``.ci/run``), which makes them fail. The rest of the suite runs on these
backends too, with MEMSTORE_TEST_BACKEND=servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.records import Turn
from memstore.storage.embed import HashEmbedder

pytestmark = pytest.mark.servers
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg(servers: Any, tmp_path: Path) -> Iterator[Callable[..., MemoryConfig]]:
    """``pg(**config)``: the MemoryConfig of a fresh store on PostgreSQL + the chroma server.
    ``pg_options="-ctimezone=..."`` adds PostgreSQL session settings."""
    made: list[dict[str, str]] = []

    def fresh(pg_options: str = "", **kwargs: Any) -> MemoryConfig:
        store = servers.new_store(pg_options)
        made.append(store)
        return MemoryConfig(home=tmp_path / store["collection"], **store, **kwargs)

    yield fresh
    for store in made:
        servers.drop(store)


def _mem(cfg: MemoryConfig) -> Memory:
    return Memory(config=cfg, embedder=HashEmbedder(64))


# ---- PostgreSQL: schema and full-text search ------------------------------------------------------------

def test_migrations_are_recorded_and_idempotent(pg) -> None:
    from memstore.storage.db import MIGRATIONS, migrate

    mem = _mem(pg())
    with mem.engine.connect() as conn:
        applied = [r[0] for r in conn.execute(text("SELECT name FROM schema_migrations ORDER BY name"))]
        tsv = conn.execute(text(
            "SELECT data_type, is_generated FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'memories' AND column_name = 'tsv'")).one()
        gin = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                                "AND indexname = 'ix_memories_tsv'")).scalar_one()
        width = conn.execute(text(
            "SELECT character_maximum_length FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'turns' AND column_name = 'response_id'")).scalar_one()
    assert applied == sorted(name for name, _fn in MIGRATIONS)
    assert tuple(tsv) == ("tsvector", "ALWAYS") and "USING gin (tsv)" in gin
    assert width is None  # provider response ids longer than 128 characters fit
    assert migrate(mem.engine) == []


def test_lexical_search_is_postgres_full_text_search(pg) -> None:
    from memstore.storage.lexical import lexical_search

    mem = _mem(pg())
    ids = {t: mem.add(t, user_id="alice", infer=False)[0].memory.id for t in (
        "I grow tomatoes and basil on my balcony",
        "My daughter plays the violin",
        "Tomato soup is my favourite lunch",
        "I am allergic to peanuts",
    )}
    bob = mem.add("Bob also grows tomatoes", user_id="bob", infer=False)[0].memory.id
    other_ns = mem.add("tomatoes in the work namespace", user_id="alice", namespace="work", infer=False)
    hits = lexical_search(mem.engine, "alice", "default", "What about the tomatoes I'm growing?", 10)
    found = [i for i, _score in hits]
    # stemmed: "tomatoes"/"growing" match "tomatoes", "grow" and "Tomato"; scoped to alice/default
    assert found[0] == ids["I grow tomatoes and basil on my balcony"]
    assert set(found) == {ids["I grow tomatoes and basil on my balcony"], ids["Tomato soup is my favourite lunch"]}
    assert bob not in found and other_ns[0].memory.id not in found
    assert all(score > 0 for _i, score in hits)
    # tsquery syntax in the user's text is just text; stopword-only queries find nothing and do not fail
    for query in ("peanuts & | ! :* ( ' \" \\", "it's (peanuts)!", "<->peanuts"):
        assert [i for i, _ in lexical_search(mem.engine, "alice", "default", query, 5)] == \
            [ids["I am allergic to peanuts"]]
    assert lexical_search(mem.engine, "alice", "default", "what is the", 5) == []
    assert lexical_search(mem.engine, "alice", "default", "over under", 5) == []
    # the generated column follows edits; invalidated memories only on request
    violin = ids["My daughter plays the violin"]
    mem.update(violin, "My daughter plays the cello")
    assert [i for i, _ in lexical_search(mem.engine, "alice", "default", "cello", 5)] == [violin]
    assert lexical_search(mem.engine, "alice", "default", "violin", 5) == []
    mem.store.invalidate(violin, actor="api")
    assert lexical_search(mem.engine, "alice", "default", "cello", 5) == []
    assert [i for i, _ in lexical_search(mem.engine, "alice", "default", "cello", 5, include_invalid=True)] == [violin]
    with mem.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT id FROM memories m WHERE m.tsv @@ to_tsquery('english', 'tomato')")))
    assert "memories" in plan  # the statement is valid SQL against the generated column


def test_hybrid_search_fuses_dense_and_postgres_lexical(pg) -> None:
    mem = _mem(pg())
    target = mem.add("My cat Miso loves sardines", user_id="alice", infer=False)[0].memory.id
    mem.add("I work as a nurse in Porto", user_id="alice", infer=False)
    hits = mem.search("sardines for Miso", user_id="alice")
    assert hits[0].memory.id == target and set(hits[0].sources) >= {"dense", "lexical"}
    assert [h.memory.id for h in mem.search("sardines", user_id="alice", settings="lexical")] == [target]


# ---- PostgreSQL: types -----------------------------------------------------------------------------------

def test_timestamps_are_utc_whatever_the_session_time_zone(pg) -> None:

    cfg = pg("-ctimezone=Pacific/Kiritimati")  # UTC+14
    mem = _mem(cfg)
    before = datetime.now(UTC)
    rec = mem.add("I moved to Lisbon", user_id="alice", infer=False)[0].memory
    with mem.engine.connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar_one() == "Pacific/Kiritimati"
    stored = mem.get(rec.id)
    assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset() == timedelta(0)
    assert stored.created_at == rec.created_at and before <= stored.created_at <= datetime.now(UTC)
    # filters and recency compare aware datetimes with the stored ones
    assert mem.search("Lisbon", user_id="alice", filters={"created_after": before - timedelta(seconds=1)})
    assert not mem.search("Lisbon", user_id="alice", filters={"created_after": datetime.now(UTC) + timedelta(hours=1)})
    users = mem.users()
    assert users[0]["last_activity"].utcoffset() == timedelta(0)
    # outbox leases: a claim is not stale until its lease has passed, then it is taken over
    mem.outbox.record("alice", "default", [{"role": "user", "content": "I have a dog"}], "nice")
    assert len(mem.outbox.claim("w1", lease_seconds=300)) == 1
    assert mem.outbox.claim("w2", lease_seconds=300) == []
    taken = mem.outbox.claim("w3", lease_seconds=0.0)
    assert len(taken) == 1 and taken[0].claimed_by == "w3"


def test_json_columns_round_trip(pg) -> None:
    mem = _mem(pg())
    meta = {"source": "crm", "tags": ["a", "ü", "漢字"], "nested": {"n": 1, "ok": True, "none": None}}
    rec = mem.add("I speak Portuguese", user_id="alice", infer=False, metadata=meta)[0].memory
    assert mem.get(rec.id).meta == meta
    assert [h.memory.id for h in mem.search("Portuguese", user_id="alice", filters={"source": "crm"})] == [rec.id]
    assert mem.search("Portuguese", user_id="alice", filters={"source": "other"}) == []
    data = mem.export("alice")
    other = _mem(pg())
    other.import_(data)
    assert other.get_all("alice")[0].meta == meta


def test_users_and_compliance_counts_cast_booleans(pg) -> None:

    mem = _mem(pg())
    mem.add("fact one", user_id="alice", infer=False)
    old = mem.add("fact two", user_id="alice", infer=False)[0].memory
    mem.store.invalidate(old.id, actor="api")
    mem.add("fact three", user_id="bob", infer=False)
    users = {u["user_id"]: u for u in mem.users()}
    assert (users["alice"]["memories"], users["alice"]["invalidated"]) == (1, 1)
    assert (users["bob"]["memories"], users["bob"]["invalidated"]) == (1, 0)
    rule = mem.rules("alice").add("Never use capital letters")
    mem.profiles.record_compliance("alice", "default", "resp_" + "x" * 200, [(rule, True, "ok")])
    mem.profiles.record_compliance("alice", "default", "resp_2", [(rule, False, "capital A")])
    mem.profiles.record_compliance("alice", "default", "resp_3", [(rule, True, "ok")])
    (rate,) = mem.compliance("alice")
    assert (rate["checked"], rate["passed"]) == (3, 2) and abs(rate["rate"] - 2 / 3) < 1e-9


# ---- PostgreSQL: the outbox under row locks -----------------------------------------------------------

def test_claim_skips_rows_another_worker_holds(pg) -> None:
    """SELECT ... FOR UPDATE SKIP LOCKED: a claim never waits for, nor takes, rows locked by another."""

    mem = _mem(pg())
    turns = [mem.outbox.record("alice", "default", [{"role": "user", "content": f"I like tea number {i}"}], "ok")
             for i in range(6)]
    held, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with Session(mem.engine) as s:
            s.exec(select(Turn).where(col(Turn.id).in_([t.id for t in turns[:3]])).with_for_update()).all()
            held.set()
            release.wait(30)
            s.rollback()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert held.wait(10)
        got = mem.outbox.claim("w1", limit=10)
        assert {t.id for t in got} == {t.id for t in turns[3:]}
    finally:
        release.set()
        thread.join()
    assert {t.id for t in mem.outbox.claim("w2", limit=10)} == {t.id for t in turns[:3]}


def test_migrations_wait_for_each_other(pg) -> None:
    """A migrator takes the advisory lock before it touches the schema, and waits while another holds it
    (four processes opening one fresh database at once: test_multiworker.py)."""
    from memstore.storage.db import MIGRATION_LOCK_KEY, get_engine

    cfg = pg()
    url = cfg.resolved_database_url()
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    holder = create_engine(url, poolclass=NullPool)
    done = threading.Event()
    with holder.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        opener = threading.Thread(target=lambda: (get_engine(url), done.set()))
        opener.start()
        assert not done.wait(1.5), "migrate() did not wait for the lock"
        tables = conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_schema = current_schema()")).scalar_one()
        assert tables == 0, "migrate() changed the schema before it held the lock"
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
    opener.join(60)
    holder.dispose()
    assert done.is_set()


# ---- the chroma server ----------------------------------------------------------------------------------

def test_chroma_server_index_ids_paginate_and_filter(servers) -> None:
    from memstore.storage.vectors import ChromaIndex

    store = servers.new_store()
    try:
        index = ChromaIndex(url=store["vector_url"], collection=store["collection"])
        n = 5200  # more than one page of ids() (5,000) and more than one upsert batch (2,000)
        ids = [f"m{i:05d}" for i in range(n)]
        vecs = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
        users = ["alice" if i % 2 else "bob" for i in range(n)]
        index.upsert(ids, vecs, users, ["default"] * n)
        assert index.count() == n
        assert index.ids() == set(ids)
        assert index.ids("alice") == {i for i, u in zip(ids, users, strict=True) if u == "alice"}
        assert index.ids("alice", "other") == set()
        hit = index.query(vecs[1], "alice", "default", 3)
        assert hit[0][0] == ids[1] and hit[0][1] > 0.99
        assert all(i in index.ids("alice") for i, _ in hit)
        index.delete(ids[:100])
        assert index.count() == n - 100
        index.reset()
        assert index.count() == 0
    finally:
        servers.drop(store)


def test_reindex_by_another_process_keeps_a_running_app_working(pg) -> None:
    """An operator runs ``memstore reindex`` (which drops and rebuilds the collection) while an app server
    keeps serving: its next search and write reopen the collection instead of failing."""
    cfg = pg()
    app = Memory(config=cfg)  # the real embedder, as the CLI uses it
    ids = [o.memory.id for o in app.add(
        [{"role": "user", "content": t} for t in ("I play the cello", "I grow tomatoes", "I speak Japanese")],
        user_id="alice", infer=False)]
    assert app.search("musical instrument", user_id="alice")[0].memory.id == ids[0]
    env = {**os.environ, "MEMSTORE_DATABASE_URL": cfg.database_url or "", "MEMSTORE_VECTOR_URL": cfg.vector_url or "",
           "MEMSTORE_COLLECTION": cfg.collection, "MEMSTORE_HOME": str(cfg.resolved_home()),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", "from memstore.cli.app import main; main()", "reindex", "--json"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["indexed"] == 3
    # the app's cached collection handle points at the dropped collection: it recovers by name
    assert app.search("vegetables in my garden", user_id="alice")[0].memory.id == ids[1]
    new = app.add("I keep bees", user_id="alice", infer=False)[0].memory
    assert new.indexed and app.store.index.ids("alice") == {*ids, new.id}


def test_sqlite_can_use_the_chroma_server_too(servers, tmp_path: Path) -> None:
    """The two choices are independent: an embedded database with a shared vector index."""
    store = servers.new_store()
    try:
        mem = _mem(MemoryConfig(home=tmp_path / "h", vector_url=store["vector_url"], collection=store["collection"]))
        assert mem.engine.dialect.name == "sqlite"
        rec = mem.add("I ride a blue bicycle", user_id="alice", infer=False)[0].memory
        assert mem.store.index.ids("alice") == {rec.id}
        assert mem.search("bicycle", user_id="alice")[0].memory.id == rec.id
    finally:
        servers.drop(store)
