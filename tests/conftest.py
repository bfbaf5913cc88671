"""Shared fixtures: a scripted model over real HTTP, and Memory stores on the selected backend.

Backends (``MEMSTORE_TEST_BACKEND``):

* ``embedded`` (default): SQLite + embedded chroma in a fresh temporary directory per store.
* ``servers``: PostgreSQL (``MEMSTORE_TEST_DATABASE_URL``, a SQLAlchemy URL of a database the role may
  create schemas in) + a chroma server (``MEMSTORE_TEST_VECTOR_URL``; when unset, the suite starts
  ``chroma run`` from this venv on a free port). Every store gets its own PostgreSQL schema (through the
  URL's ``options=-csearch_path=...``) and its own chroma collection, both dropped after the test.

The fixtures ``config``, ``make_memory`` and ``mem`` build stores on the selected backend, so the same
tests run on both. Tests about embedded files (the index directory, local crash repair) build their own
``MemoryConfig(home=...)`` and stay on SQLite.

A backend that is selected but unreachable skips its tests, unless ``MEMSTORE_REQUIRE_SERVERS=1`` (set by
``.ci/run``): then they fail.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from memstore.config import MemoryConfig
from memstore.testing import ScriptedLLM
from memstore.testing.chroma_server import chroma_alive, start_chroma_server, stop

BACKENDS = ("embedded", "servers")
BACKEND_FIXTURES = {"config", "make_memory", "mem", "backend_settings"}


def selected_backend() -> str:
    name = (os.environ.get("MEMSTORE_TEST_BACKEND") or "embedded").strip().lower()
    if name not in BACKENDS:
        raise pytest.UsageError(f"MEMSTORE_TEST_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


def servers_required() -> bool:
    return os.environ.get("MEMSTORE_REQUIRE_SERVERS", "").strip().lower() in {"1", "true", "yes", "on"}


def unavailable(reason: str) -> None:
    """A missing server: a failure under MEMSTORE_REQUIRE_SERVERS=1, a clean skip otherwise."""
    if servers_required():
        pytest.fail(f"{reason} (MEMSTORE_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> str:
    backend = selected_backend()
    if backend == "embedded":
        return "memstore test backend: embedded (SQLite + embedded chroma)"
    from sqlalchemy.engine import make_url

    db = os.environ.get("MEMSTORE_TEST_DATABASE_URL")
    shown = make_url(db).render_as_string(hide_password=True) if db else "<unset>"
    return (f"memstore test backend: servers (database {shown}, "
            f"chroma {os.environ.get('MEMSTORE_TEST_VECTOR_URL') or '<started by the suite>'})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the servers backend, every test that builds its store through the fixtures is marked
    ``servers`` (``-m servers`` runs just those)."""
    if selected_backend() != "servers":
        return
    for item in items:
        if BACKEND_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


# ---- the servers ------------------------------------------------------------------------------------

@dataclass
class Servers:
    """A reachable PostgreSQL database and chroma server, and the isolated stores made in them."""

    database_url: str
    vector_url: str
    schemas: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    _admin: Any = None

    def admin(self) -> Any:
        if self._admin is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._admin = create_engine(self.database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        return self._admin

    def new_store(self, options: str = "") -> dict[str, str]:
        """MemoryConfig fields for a fresh, empty store: its own schema and its own collection.
        ``options``: more PostgreSQL session settings, e.g. ``"-ctimezone=Asia/Tokyo"``."""
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = "ms_" + uuid.uuid4().hex[:20]
        with self.admin().connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        self.schemas.append(name)
        self.collections.append(name)
        url = make_url(self.database_url).update_query_dict(
            {"options": f"-csearch_path={name} {options}".strip(), "application_name": name})
        return {"database_url": url.render_as_string(hide_password=False), "vector_url": self.vector_url,
                "collection": name}

    def drop(self, store: dict[str, str]) -> None:
        """Closes the store's connections and drops its schema and collection."""
        from sqlalchemy import text

        from memstore.storage.db import dispose_engine

        name = store["collection"]
        dispose_engine(store["database_url"])
        with contextlib.suppress(Exception), self.admin().connect() as conn:
            # a background worker thread a test left running must not keep the schema alive
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(text("SET lock_timeout = '20s'"))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            self.schemas.remove(name)
        with contextlib.suppress(Exception):
            chroma_client(self.vector_url).delete_collection(name)
            self.collections.remove(name)

    def close(self) -> None:
        for name in list(self.schemas):
            self.drop({"database_url": "", "vector_url": self.vector_url, "collection": name})
        if self._admin is not None:
            self._admin.dispose()


def chroma_client(url: str) -> Any:
    from memstore.storage.vectors import _client

    return _client(None, url)


def _check_database(url: str) -> str | None:
    """None when the database answers, else why not."""
    try:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """PostgreSQL + a chroma server, for tests that need them whatever the selected backend."""
    db = os.environ.get("MEMSTORE_TEST_DATABASE_URL", "").strip()
    if not db:
        unavailable("PostgreSQL not configured: set MEMSTORE_TEST_DATABASE_URL "
                    "(e.g. postgresql+psycopg://memstore:memstore@127.0.0.1:5432/memstore_test)")
    if not db.startswith("postgresql"):
        unavailable(f"MEMSTORE_TEST_DATABASE_URL must be a postgresql URL, got {db.split(':', 1)[0]!r}")
    problem = _check_database(db)
    if problem:
        unavailable(f"PostgreSQL at MEMSTORE_TEST_DATABASE_URL is unreachable: {problem}")
    vec = os.environ.get("MEMSTORE_TEST_VECTOR_URL", "").strip()
    proc = None
    if vec:
        if not chroma_alive(vec, 5.0):
            unavailable(f"chroma server at MEMSTORE_TEST_VECTOR_URL={vec} is unreachable")
    else:
        try:
            proc, vec = start_chroma_server(tmp_path_factory.mktemp("chroma-server") / "data")
        except Exception as exc:
            unavailable(f"could not start a chroma server: {exc}")
    srv = Servers(database_url=db, vector_url=vec)
    try:
        yield srv
    finally:
        srv.close()
        if proc is not None:
            stop(proc)


@pytest.fixture
def backend() -> str:
    """The selected backend: ``embedded`` or ``servers``."""
    return selected_backend()


@pytest.fixture
def backend_settings(request: pytest.FixtureRequest) -> Iterator[Callable[[], dict[str, str]]]:
    """``fresh()`` returns the MemoryConfig fields of a new, empty store on the selected backend
    (nothing for embedded, where ``home`` alone decides); server stores are dropped after the test."""
    if selected_backend() == "embedded":
        yield dict
        return
    srv: Servers = request.getfixturevalue("servers")
    made: list[dict[str, str]] = []

    def fresh() -> dict[str, str]:
        store = srv.new_store()
        made.append(store)
        return dict(store)

    yield fresh
    for store in made:
        srv.drop(store)


# ---- the shared fixtures ----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches ~/.memstore or a user's MEMSTORE_* settings."""
    for key in list(os.environ):
        if key.startswith("MEMSTORE_") and key != "MEMSTORE_REQUIRE_SERVERS" and not key.startswith("MEMSTORE_TEST_"):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("MEMSTORE_HOME", str(home))
    return home


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    """A scripted OpenAI-compatible model on 127.0.0.1."""
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, llm: ScriptedLLM, backend_settings: Callable[[], dict[str, str]]) -> MemoryConfig:
    """A config whose extraction model is the scripted server (reached through litellm), on the selected
    backend."""
    return MemoryConfig(home=tmp_path / "store", llm_model="openai/scripted", llm_api_base=llm.base_url,
                        llm_api_key="test-key", llm_max_retries=0, **backend_settings())


@pytest.fixture
def make_memory(tmp_path: Path, backend_settings: Callable[[], dict[str, str]]) -> Callable[..., Any]:
    """Builds a Memory in a fresh store on the selected backend; keyword arguments go to MemoryConfig."""
    from memstore.memory import Memory

    counter = {"n": 0}

    def make(config: MemoryConfig | None = None, **kwargs: Any) -> Memory:
        counter["n"] += 1
        cfg = config or MemoryConfig(home=tmp_path / f"mem{counter['n']}", **{**backend_settings(), **kwargs})
        return Memory(config=cfg)

    return make


@pytest.fixture
def mem(config: MemoryConfig) -> Any:
    from memstore.memory import Memory

    return Memory(config=config)
