"""Engine, sessions and schema migrations (an ordered list of named functions).

SQLite (the embedded default) runs in WAL mode with a busy timeout so that several threads and
processes can share one file. Any SQLAlchemy URL works; PostgreSQL gets its own lexical index.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, SQLModel, create_engine

from memstore import records  # registers the tables on SQLModel.metadata
from memstore.errors import ConfigError, StorageError

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
BUSY_TIMEOUT_MS = 30000
_busy_ms: ContextVar[int | None] = ContextVar("memstore_busy_ms", default=None)


@contextmanager
def short_waits(seconds: float) -> Iterator[None]:
    """Database work inside waits at most ``seconds`` for a lock another connection holds (SQLite's busy
    timeout; other databases are unaffected), then fails with "database is locked" instead of stalling: for
    the request path of MemoryClient and the proxy, which must not hang on a long write elsewhere."""
    token = _busy_ms.set(max(0, int(seconds * 1000)))
    try:
        yield
    finally:
        _busy_ms.reset(token)


def _apply_busy_timeout(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
    """On checkout: the short wait of ``short_waits`` when inside one, else the normal busy timeout."""
    want = _busy_ms.get()
    want = BUSY_TIMEOUT_MS if want is None else want
    if record.info.get("busy_ms", BUSY_TIMEOUT_MS) == want:
        return
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(want)}")
    cur.close()
    record.info["busy_ms"] = want


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated to the newest schema on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                # a small pool: with no connection left open, SQLite checkpoints and deletes the WAL on every
                # session close (milliseconds per write); pooled connections keep it open
                url, connect_args={"check_same_thread": False, "timeout": 30}, poolclass=QueuePool,
                pool_size=4, max_overflow=16
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "checkout", _apply_busy_timeout)
        else:
            try:
                engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            except Exception as exc:  # missing driver, malformed URL
                raise ConfigError(f"cannot use database {url!r}: {exc}") from exc
        migrate(engine)
        _engines[url] = engine
        return engine


def row_values(obj: SQLModel) -> dict[str, Any]:
    """A new table object's row by column name (a field may have another column name: ``meta`` is
    ``metadata``), without its primary key, for a plain insert."""
    return {name: getattr(obj, key) for key, name in _columns(type(obj))}


@functools.cache
def _columns(model: type[SQLModel]) -> list[tuple[str, str]]:
    return [(prop.key, prop.columns[0].name) for prop in sa_inspect(model).column_attrs
            if not prop.columns[0].primary_key]


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success, rolled back on error; objects stay usable after commit."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


# ---- migrations -------------------------------------------------------------------------------------

def _m001_tables(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)


def _m002_lexical_index(engine: Engine) -> None:
    """Full-text index of memory text: FTS5 on SQLite, a tsvector + GIN index on PostgreSQL."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(
                "CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5("
                "scope, text, tokenize='porter unicode61 remove_diacritics 2')"
            ))
            scope = "'s' || lower(hex(new.user_id)) || 'x' || lower(hex(new.namespace))"
            conn.execute(text(
                "CREATE TRIGGER IF NOT EXISTS memories_fts_ai AFTER INSERT ON memories BEGIN "
                f"INSERT INTO memory_fts(rowid, scope, text) VALUES (new.pk, {scope}, new.text); END"
            ))
            conn.execute(text(
                "CREATE TRIGGER IF NOT EXISTS memories_fts_ad AFTER DELETE ON memories BEGIN "
                "DELETE FROM memory_fts WHERE rowid = old.pk; END"
            ))
            conn.execute(text(
                "CREATE TRIGGER IF NOT EXISTS memories_fts_au AFTER UPDATE OF text ON memories BEGIN "
                "DELETE FROM memory_fts WHERE rowid = old.pk; "
                f"INSERT INTO memory_fts(rowid, scope, text) VALUES (new.pk, {scope}, new.text); END"
            ))
            conn.execute(text(
                "INSERT INTO memory_fts(rowid, scope, text) "
                "SELECT pk, 's' || lower(hex(user_id)) || 'x' || lower(hex(namespace)), text FROM memories "
                "WHERE pk NOT IN (SELECT rowid FROM memory_fts)"
            ))
        elif engine.dialect.name == "postgresql":
            conn.execute(text(
                "ALTER TABLE memories ADD COLUMN IF NOT EXISTS tsv tsvector "
                "GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, ''))) STORED"
            ))
            conn.execute(text("CREATE INDEX IF NOT EXISTS ix_memories_tsv ON memories USING GIN (tsv)"))


def _m003_unbounded_response_ids(engine: Engine) -> None:
    """Provider response ids can be longer than the 128 characters first declared (litellm's Responses
    ids are ~150). SQLite ignores VARCHAR lengths; PostgreSQL enforces them, so widen the columns there
    (a catalog-only change, no table rewrite)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table, column in (("turns", "response_id"), ("feedback", "response_id"),
                              ("feedback", "other_response_id"), ("compliance", "response_id")):
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR"))


def _m004_scope_versions(engine: Engine) -> None:
    """The per-scope change tokens of the vector cache, seeded for the scopes that already have memories."""
    records.ScopeVersion.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
    token = "'m004' || " + ("lower(hex(randomblob(14)))" if engine.dialect.name == "sqlite"
                            else "substr(md5(random()::text), 1, 28)")
    with engine.begin() as conn:
        conn.execute(text(
            f"INSERT INTO scope_versions (user_id, namespace, token) SELECT d.user_id, d.namespace, {token} "
            "FROM (SELECT DISTINCT user_id, namespace FROM memories) d WHERE NOT EXISTS (SELECT 1 FROM "
            "scope_versions v WHERE v.user_id = d.user_id AND v.namespace = d.namespace)"))


def _m005_pinned_index(engine: Engine) -> None:
    """Pinned memories are read on every request: an index so that reading them does not scan the scope."""
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_memories_scope_pinned "
                          "ON memories (user_id, namespace, pinned, created_at)"))


def _m006_provenance(engine: Engine) -> None:
    """Memories carry where they came from (conversation, position, speaker), filled in for stores that kept
    them in the metadata (``session``/``conversation``, ``turn``/``position``, ``speaker``)."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(engine).get_columns("memories")}
    with engine.begin() as conn:
        for name, sql_type in (("conversation", "VARCHAR(256)"), ("position", "INTEGER"), ("speaker", "VARCHAR(256)")):
            if name not in have:
                conn.execute(text(f"ALTER TABLE memories ADD COLUMN {name} {sql_type}"))
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_memories_scope_conversation "
                          "ON memories (user_id, namespace, conversation, position)"))
    rows: list[tuple[int, dict]] = []
    with engine.connect() as conn:
        for pk, meta in conn.execute(text("SELECT pk, metadata FROM memories WHERE conversation IS NULL")):
            data = json.loads(meta) if isinstance(meta, str) else (meta or {})
            if isinstance(data, dict) and any(k in data for k in ("session", "conversation", "turn", "speaker")):
                rows.append((pk, data))
    if not rows:
        return
    with engine.begin() as conn:
        for pk, data in rows:
            conv, pos, speaker = provenance_from_meta(data)
            conn.execute(text("UPDATE memories SET conversation = :c, position = :p, speaker = :s WHERE pk = :pk"),
                         {"c": conv, "p": pos, "s": speaker, "pk": pk})


def _m007_memory_vectors(engine: Engine) -> None:
    """A copy of each memory's vector in SQL, so that a search loads its scope without the vector index
    (filled as memories are indexed; older memories are copied from the index the first time their scope is
    searched), and an index on each scope's kinds."""
    records.MemoryVector.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
    with engine.begin() as conn:  # whether a scope holds episodes is asked on every request
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_memories_scope_kind ON memories (user_id, namespace, kind)"))


def provenance_from_meta(meta: dict) -> tuple[str | None, int | None, str | None]:
    """(conversation, position, speaker) named in a memory's metadata, each None when absent or unusable."""
    conv = meta.get("conversation", meta.get("session"))
    pos = meta.get("position", meta.get("turn"))
    speaker = meta.get("speaker")
    return (str(conv)[:256] if isinstance(conv, str | int) and not isinstance(conv, bool) and str(conv) else None,
            int(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else None,
            speaker[:256] if isinstance(speaker, str) and speaker.strip() else None)


MIGRATIONS: list[tuple[str, Callable[[Engine], None]]] = [
    ("001_tables", _m001_tables),
    ("002_lexical_index", _m002_lexical_index),
    ("003_unbounded_response_ids", _m003_unbounded_response_ids),
    ("004_scope_versions", _m004_scope_versions),
    ("005_pinned_index", _m005_pinned_index),
    ("006_provenance", _m006_provenance),
    ("007_memory_vectors", _m007_memory_vectors),
]


MIGRATION_LOCK_KEY = 727274  # pg_advisory_lock key: one migrator at a time per PostgreSQL database


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations this database has not seen yet, in order. Returns the names applied.

    Several processes may open a fresh database at once: on PostgreSQL a session-level advisory lock,
    held on its own connection for the whole run, makes them take turns (the second one finds the work
    done); on SQLite an exclusive lock file next to the database does the same."""
    applied: list[str] = []
    try:
        with _migration_lock(engine):
            with engine.begin() as conn:
                conn.execute(text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR(200) PRIMARY KEY, "
                    "applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                ))
                done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
            for name, fn in MIGRATIONS:
                if name in done:
                    continue
                fn(engine)
                with engine.begin() as conn:
                    if engine.dialect.name == "postgresql":
                        conn.execute(text(
                            "INSERT INTO schema_migrations(name) VALUES (:n) ON CONFLICT DO NOTHING"
                        ), {"n": name})
                    else:
                        conn.execute(text("INSERT OR IGNORE INTO schema_migrations(name) VALUES (:n)"),
                                     {"n": name})
                applied.append(name)
    except OperationalError as exc:
        raise StorageError(f"cannot open or migrate the database: {exc}") from exc
    return applied


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as lock_conn:
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            lock_conn.commit()
            try:
                yield
            finally:
                try:
                    lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    lock_conn.commit()
                except Exception:  # never return a connection that may still hold the lock to the pool
                    lock_conn.invalidate()
        return
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(f"{path}.migrate-lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dispose_engine(url: str) -> bool:
    """Closes the pooled connections of the engine of ``url`` and forgets it (long-running processes and
    test suites that open many databases). The next ``get_engine(url)`` builds a fresh one."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is None:
        return False
    engine.dispose()
    return True
