"""The SQL tables (the source of truth) and the small public result types.

All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

MemoryKind = Literal["fact", "preference", "event", "instruction", "episode"]
KINDS: tuple[str, ...] = ("fact", "preference", "event", "instruction", "episode")
#: An excerpt of a past conversation (one recorded exchange), kept beside the facts extracted from it and
#: searched as its own pool: ``Memory.search`` / ``get_all`` return it only when asked (``kind="episode"``).
EPISODE = "episode"
FACT_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != EPISODE)
EventType = Literal["ADD", "UPDATE", "INVALIDATE", "DELETE", "RESTORE"]
Actor = Literal["llm", "heuristic", "rules", "user", "api", "cli", "import"]  # "rules": the heuristic before 0.2
TurnStatus = Literal["pending", "processing", "done", "failed", "skipped"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


# Default factories as plain functions: SQLModel inspects a factory's signature on every row it builds, and
# for the builtins ``list`` / ``dict`` that means parsing their text signature (0.1 ms a field, a third of
# the cost of building a MemoryRecord).
def empty_list() -> list[Any]:
    return []


def empty_dict() -> dict[str, Any]:
    return {}


def normalize_text(text: str) -> str:
    """The form used for duplicate detection: NFKC, casefolded, whitespace and end punctuation folded."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = re.sub(r"\s+", " ", t).strip()
    return t.rstrip(" .!;")


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


class MemoryRecord(SQLModel, table=True):
    """One memory. ``id`` is the public identifier; ``pk`` is an internal stable row number."""

    __tablename__ = "memories"
    __table_args__ = (
        UniqueConstraint("user_id", "namespace", "content_hash", name="uq_memory_scope_hash"),
        Index("ix_memories_scope_valid", "user_id", "namespace", "invalid_at"),
        Index("ix_memories_scope_pinned", "user_id", "namespace", "pinned", "created_at"),
        Index("ix_memories_scope_conversation", "user_id", "namespace", "conversation", "position"),
        Index("ix_memories_scope_kind", "user_id", "namespace", "kind"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=new_id, index=True, unique=True, max_length=64)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    text: str = Field(sa_column=Column(Text, nullable=False))
    kind: str = "fact"
    importance: float = 0.5
    pinned: bool = False
    confidence: float = 1.0
    source: str = "api"
    source_turn_ids: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    meta: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column("metadata", JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    valid_from: datetime | None = None
    invalid_at: datetime | None = None
    superseded_by: str | None = None
    content_hash: str = Field(default="", max_length=64)
    indexed: bool = Field(default=False, index=True)
    # where it came from: the conversation (a chat thread or session), the memory's place in it, who said it.
    # Retrieval uses them for context views, neighbours and names (memstore.recall.search).
    conversation: str | None = Field(default=None, max_length=256)
    position: int | None = None
    speaker: str | None = Field(default=None, max_length=256)

    @property
    def is_valid(self) -> bool:
        return self.invalid_at is None

    def public_dict(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"pk", "indexed"})
        d["metadata"] = d.pop("meta")
        return d


class MemoryEvent(SQLModel, table=True):
    """One change of one memory: kept after the memory itself is deleted."""

    __tablename__ = "memory_events"
    __table_args__ = (Index("ix_events_scope", "user_id", "namespace"),)

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=new_id, index=True, unique=True, max_length=64)
    memory_id: str = Field(index=True, max_length=64)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    event: str
    old_text: str | None = Field(default=None, sa_column=Column(Text))
    new_text: str | None = Field(default=None, sa_column=Column(Text))
    actor: str = "api"
    reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class ProfileRecord(SQLModel, table=True):
    """Custom instructions of one user in one namespace (ChatGPT's two fields)."""

    __tablename__ = "profiles"
    __table_args__ = (UniqueConstraint("user_id", "namespace", name="uq_profile_scope"),)

    pk: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    about_user: str = Field(default="", sa_column=Column(Text, nullable=False))
    response_style: str = Field(default="", sa_column=Column(Text, nullable=False))
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProfileVersion(SQLModel, table=True):
    """A snapshot of a profile and its rules after each change, for history and undo."""

    __tablename__ = "profile_versions"
    __table_args__ = (UniqueConstraint("user_id", "namespace", "version", name="uq_profile_version"),)

    pk: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    version: int
    snapshot: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    actor: str = "api"
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class StyleRule(SQLModel, table=True):
    """One standing instruction about replies, with an optional programmatic checker."""

    __tablename__ = "style_rules"
    __table_args__ = (Index("ix_rules_scope", "user_id", "namespace"),)

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=new_id, index=True, unique=True, max_length=64)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    text: str = Field(sa_column=Column(Text, nullable=False))
    checker: str | None = None
    params: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    source: str = "user"  # user | extracted
    status: str = "active"  # active | proposed | rejected
    enabled: bool = True
    source_turn_ids: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Turn(SQLModel, table=True):
    """The extraction outbox: one finished exchange, written before the response returns."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_status", "status", "user_id", "namespace"),)

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=new_id, index=True, unique=True, max_length=64)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    messages: list[dict[str, Any]] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    response: str = Field(default="", sa_column=Column(Text, nullable=False))
    response_id: str | None = Field(default=None, index=True, max_length=128)
    model: str | None = None
    extract: bool = True
    status: str = "pending"
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    processed_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column("metadata", JSON, nullable=False))


class Feedback(SQLModel, table=True):
    """A person's judgement of a reply: a rating, or a preference between two replies."""

    __tablename__ = "feedback"

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=new_id, index=True, unique=True, max_length=64)
    user_id: str = Field(max_length=256, index=True)
    namespace: str = Field(default="default", max_length=256)
    response_id: str = Field(max_length=128, index=True)
    other_response_id: str | None = Field(default=None, max_length=128)
    rating: int | None = None
    preferred: str | None = None  # the preferred response id of a comparison
    comment: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class ComplianceRecord(SQLModel, table=True):
    """Whether one reply obeyed one checkable rule."""

    __tablename__ = "compliance"
    __table_args__ = (Index("ix_compliance_scope", "user_id", "namespace", "rule_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=256)
    namespace: str = Field(default="default", max_length=256)
    response_id: str | None = Field(default=None, max_length=128)
    rule_id: str = Field(max_length=64)
    rule_text: str = Field(sa_column=Column(Text, nullable=False))
    checker: str
    passed: bool
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    attempt: int = 1
    created_at: datetime = Field(default_factory=utcnow)


class VectorTombstone(SQLModel, table=True):
    """Ids deleted from SQL whose vectors may still be in the index (written in the same transaction)."""

    __tablename__ = "vector_tombstones"

    memory_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class MemoryVector(SQLModel, table=True):
    """Each indexed memory's embedding (float32 bytes) and the content hash of the text it embeds, written in
    the transaction that marks the memory indexed. Searches load a scope's vectors from here (one indexed
    query, no vector-index client to start); the vector index (chroma) stays the approximate index for scopes
    too big to hold in memory, and the fallback for stores written before this table existed."""

    __tablename__ = "memory_vectors"
    __table_args__ = (Index("ix_memory_vectors_scope", "user_id", "namespace"),)

    memory_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=256)
    namespace: str = Field(max_length=256)
    content_hash: str = Field(max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ScopeVersion(SQLModel, table=True):
    """A random token per (user_id, namespace), replaced whenever the scope's vectors change: in-process
    vector caches (memstore/dense.py) compare it to know when to refresh. Holds no memory content."""

    __tablename__ = "scope_versions"

    user_id: str = Field(primary_key=True, max_length=256)
    namespace: str = Field(primary_key=True, max_length=256)
    token: str = Field(max_length=32)


# ---- public result types --------------------------------------------------------------------------

class MemoryHit(BaseModel):
    """A search result: the memory, its fused score and why it matched (dense, lexical, pinned)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: MemoryRecord
    score: float
    sources: list[str]

    @property
    def id(self) -> str:
        return self.memory.id

    @property
    def text(self) -> str:
        return self.memory.text


class MemoryOp(BaseModel):
    """What one ``add`` did to one memory."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    event: Literal["ADD", "UPDATE", "INVALIDATE", "DELETE", "RESTORE", "NOOP"]
    memory: MemoryRecord | None = None
    previous_text: str | None = None
    reason: str | None = None

    @property
    def id(self) -> str | None:
        return self.memory.id if self.memory else None
