"""Proxy keys for ``memstore serve``: what a client presents instead of the upstream provider's key.

A key looks like ``msk_<prefix>_<secret>``. Only the prefix (a public lookup id, shown by ``memstore keys
list``) and ``sha256(prefix + "." + secret)`` are stored; the full key is printed once, at creation.
Verification looks the row up by prefix and compares digests in constant time. A key may be bound to a
namespace: the server then refuses any request for another namespace. A key created with ``admin=True``
(``memstore keys create --admin``) may also sign in to the web inspector (``/ui``); every key works for the
proxy.

The table lives in the memstore database. ``open_keys`` creates it in an existing database, so a store
created before the proxy existed gains it on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from datetime import datetime

from sqlalchemy import Engine, inspect, text, update
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Field, Session, SQLModel, col, select

from memstore.errors import InvalidInputError, NotFoundError
from memstore.records import utcnow
from memstore.storage.db import session_scope
from memstore.validate import check_scope

KEY_SCHEME = "msk"
PREFIX_CHARS = 12
_KEY_RE = re.compile(r"^msk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")
MAX_NAME_CHARS = 100


class ProxyKey(SQLModel, table=True):
    """One proxy API key. ``hash`` is sha256 of ``prefix + "." + secret``; the secret is never stored."""

    __tablename__ = "proxy_keys"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=64)
    name: str = Field(max_length=MAX_NAME_CHARS, index=True)
    prefix: str = Field(max_length=32, unique=True, index=True)
    hash: str = Field(max_length=64)
    namespace: str | None = Field(default=None, max_length=256)
    admin: bool = False  # may sign in to the web inspector (/ui); keys made before the column existed: False
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public_dict(self) -> dict[str, object]:
        """Everything but the hash."""
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "namespace": self.namespace,
                "admin": bool(self.admin), "created_at": self.created_at, "revoked_at": self.revoked_at,
                "last_used_at": self.last_used_at}


def digest(prefix: str, secret: str) -> str:
    return hashlib.sha256(f"{prefix}.{secret}".encode()).hexdigest()


def ensure_table(engine: Engine) -> None:
    """Creates ``proxy_keys`` in a database that predates it, and adds the ``admin`` column to one made before
    admin keys existed (its keys stay proxy keys, not admin). Idempotent; safe when two processes race."""
    SQLModel.metadata.create_all(engine, tables=[ProxyKey.__table__])  # type: ignore[attr-defined]
    if "admin" in {c["name"] for c in inspect(engine).get_columns("proxy_keys")}:
        return
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE proxy_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE"))
    except (OperationalError, ProgrammingError):  # another process added it first
        if "admin" not in {c["name"] for c in inspect(engine).get_columns("proxy_keys")}:
            raise


def open_keys(engine: Engine | None = None, *, home: str | None = None, database_url: str | None = None) -> KeyStore:
    """The key store of an engine, or of the memstore database at ``home`` / ``database_url``
    (default: ``MemoryConfig()``'s, i.e. MEMSTORE_HOME / MEMSTORE_DATABASE_URL / ~/.memstore)."""
    if engine is None:
        from memstore.config import MemoryConfig
        from memstore.storage.db import get_engine

        kwargs: dict[str, object] = {}
        if home is not None:
            kwargs["home"] = home
        if database_url is not None:
            kwargs["database_url"] = database_url
        engine = get_engine(MemoryConfig(**kwargs).resolved_database_url())  # type: ignore[arg-type]
    return KeyStore(engine)


class KeyStore:
    """Create, list, revoke and verify proxy keys in one database."""

    def __init__(self, engine: Engine, touch_interval: float = 60.0) -> None:
        self.engine = engine
        ensure_table(engine)
        self.touch_interval = touch_interval
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self, name: str, namespace: str | None = None, *, admin: bool = False) -> tuple[ProxyKey, str]:
        """Returns the new row and the full key (the only time it is available). ``admin``: the key may also
        sign in to the web inspector (only within ``namespace`` when it is bound to one)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("key name must not be empty")
        name = name.strip()
        if len(name) > MAX_NAME_CHARS:
            raise InvalidInputError(f"key name is longer than {MAX_NAME_CHARS} characters")
        if namespace is not None:
            _user, namespace = check_scope("key", namespace)
        secret = secrets.token_urlsafe(32)
        for _attempt in range(5):
            prefix = secrets.token_hex(PREFIX_CHARS // 2)
            with Session(self.engine) as s:
                if s.exec(select(ProxyKey).where(ProxyKey.prefix == prefix)).first() is None:
                    break
        else:  # pragma: no cover - 48 random bits colliding five times
            raise RuntimeError("could not allocate a unique key prefix")
        row = ProxyKey(name=name, prefix=prefix, hash=digest(prefix, secret), namespace=namespace,
                       admin=bool(admin))
        with session_scope(self.engine) as s:
            s.add(row)
        return row, f"{KEY_SCHEME}_{prefix}_{secret}"

    def list(self, include_revoked: bool = True) -> list[ProxyKey]:
        q = select(ProxyKey).order_by(col(ProxyKey.created_at))
        if not include_revoked:
            q = q.where(col(ProxyKey.revoked_at).is_(None))
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(q).all())

    def count_active(self) -> int:
        return len(self.list(include_revoked=False))

    def find(self, ref: str) -> ProxyKey:
        """A key by id, prefix, full key or (if unique among active keys) name."""
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidInputError("give a key id, prefix or name")
        ref = ref.strip()
        m = _KEY_RE.match(ref)
        if m:
            ref = m.group(1)
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.exec(select(ProxyKey).where((ProxyKey.id == ref) | (ProxyKey.prefix == ref))).first()
            if row is not None:
                return row
            named = list(s.exec(select(ProxyKey).where(ProxyKey.name == ref,
                                                       col(ProxyKey.revoked_at).is_(None))).all())
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise InvalidInputError(f"{len(named)} active keys are named {ref!r}; give the prefix instead")
        raise NotFoundError(f"no proxy key {ref!r}")

    def revoke(self, ref: str) -> ProxyKey:
        """Revokes a key (idempotent); a revoked key fails verification at once."""
        row = self.find(ref)
        with session_scope(self.engine) as s:
            db_row = s.get(ProxyKey, row.id)
            assert db_row is not None
            if db_row.revoked_at is None:
                db_row.revoked_at = utcnow()
                s.add(db_row)
            row = db_row
        return row

    def verify(self, presented: str | None) -> ProxyKey | None:
        """The active key matching ``presented``, else None. Constant-time digest comparison."""
        if not presented:
            return None
        m = _KEY_RE.match(presented.strip())
        if not m:
            return None
        prefix, secret = m.group(1), m.group(2)
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.exec(select(ProxyKey).where(ProxyKey.prefix == prefix)).first()
        expected = row.hash if row is not None else digest("0" * PREFIX_CHARS, "x")
        ok = hmac.compare_digest(expected, digest(prefix, secret))
        if row is None or not ok or row.revoked_at is not None:
            return None
        return row

    def touch_due(self, key: ProxyKey) -> bool:
        """Whether ``touch`` would write (cheap: no database access)."""
        last = self._touched.get(key.id)
        return last is None or time.monotonic() - last >= self.touch_interval

    def touch(self, key: ProxyKey) -> None:
        """Records use: ``last_used_at`` is written at most once per ``touch_interval`` per key."""
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(key.id)
            if last is not None and now - last < self.touch_interval:
                return
            self._touched[key.id] = now
        with session_scope(self.engine) as s:
            s.exec(update(ProxyKey).where(col(ProxyKey.id) == key.id)  # type: ignore[call-overload]
                   .values(last_used_at=utcnow()))
