"""MemoryStore: memory rows in SQL plus their vectors, kept in step.

A write lands in SQL first (with ``indexed=False``), then in the vector index; a failure or crash in
between is repaired by :meth:`MemoryStore.repair_index` (run on open), so no memory is ever lost.
Deletions leave a tombstone in the same transaction, so an orphan vector is removed on repair.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Engine, String, bindparam, cast, delete, func, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from memstore.errors import InvalidInputError, NotFoundError, StorageError
from memstore.records import (
    EPISODE,
    MemoryEvent,
    MemoryOp,
    MemoryRecord,
    MemoryVector,
    VectorTombstone,
    content_hash,
    new_id,
    utcnow,
)
from memstore.storage.db import provenance_from_meta, row_values, session_scope
from memstore.storage.embed import Embedder
from memstore.storage.scope_cache import (
    ScopeVectorCache,
    bump_scopes,
    delete_vectors,
    forget_scopes,
    write_vectors,
)
from memstore.storage.vectors import VectorIndex
from memstore.validate import check_text

log = logging.getLogger("memstore")


class RankingRow(NamedTuple):
    """The columns of a memory that ranking reads (MemoryStore.ranking_rows)."""

    id: str
    kind: str
    speaker: str | None
    when: datetime      # valid_from, else created_at
    pinned: bool
    invalid: bool
    text: str = ""
    conversation: str | None = None


def _check_pool(pool: str | None) -> None:
    if pool not in (None, "facts", "episodes"):
        raise InvalidInputError(f"pool must be facts, episodes or None, not {pool!r}")


@functools.cache
def _ranking_statements(with_text: bool) -> tuple[Any, dict[str | None, Any]]:
    """MemoryStore.ranking_rows's statements, built once: (by id, pinned of each pool). Building a statement
    cost more than running it."""
    cols = [MemoryRecord.id, MemoryRecord.user_id, MemoryRecord.namespace, MemoryRecord.kind,
            MemoryRecord.speaker, MemoryRecord.valid_from, MemoryRecord.created_at, MemoryRecord.pinned,
            MemoryRecord.invalid_at, MemoryRecord.conversation, *([MemoryRecord.text] if with_text else [])]
    by_id = select(*cols).where(col(MemoryRecord.id).in_(bindparam("ids", expanding=True)))
    pinned = select(*cols).where(MemoryRecord.user_id == bindparam("u"), MemoryRecord.namespace == bindparam("ns"),
                                 col(MemoryRecord.pinned).is_(True), col(MemoryRecord.invalid_at).is_(None)
                                 ).order_by(col(MemoryRecord.created_at), col(MemoryRecord.pk))
    return by_id, {None: pinned.limit(50),
                   "facts": pinned.where(MemoryRecord.kind != EPISODE).limit(50),
                   "episodes": pinned.where(MemoryRecord.kind == EPISODE).limit(50)}


@functools.cache
def _invalid_sources() -> Any:
    """The source turns of a scope's invalidated facts (MemoryStore.stale_turns), built once."""
    return select(MemoryRecord.source_turn_ids).where(
        MemoryRecord.user_id == bindparam("u"), MemoryRecord.namespace == bindparam("ns"),
        col(MemoryRecord.invalid_at).is_not(None), MemoryRecord.kind != EPISODE)


class MemoryStore:
    """SQL rows + vector index + embedder. No validation of public input beyond the basics."""

    def __init__(self, engine: Engine, index: VectorIndex, embedder: Embedder, max_chars: int = 2000,
                 redact_secrets: bool = True, vector_cache_bytes: int = 256 * 2**20) -> None:
        self.engine = engine
        self.index = index
        self.embedder = embedder
        self.max_chars = max_chars
        self.redact_secrets = redact_secrets
        # exact search over a scope's vectors in memory; chroma answers what the cache cannot (dense.py)
        self.vector_cache = ScopeVectorCache(engine, index, vector_cache_bytes) if vector_cache_bytes > 0 else None
        self._repaired = False
        self._repair_lock = threading.Lock()

    def _clean(self, text: str) -> str:
        """Validated text, with secrets replaced by placeholders when ``redact_secrets`` (memstore.redact)."""
        text = check_text(text, self.max_chars)
        if self.redact_secrets:
            from memstore.redact import redact

            text = redact(text)[0]
        return text

    # ---- reads ------------------------------------------------------------------------------------
    def get(self, memory_id: str, user_id: str | None = None, namespace: str | None = None) -> MemoryRecord:
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInputError("memory_id must be a non-empty string")
        with Session(self.engine, expire_on_commit=False) as s:
            rec = s.exec(select(MemoryRecord).where(MemoryRecord.id == memory_id)).first()
        if rec is None or (user_id is not None and rec.user_id != user_id) or (
            namespace is not None and rec.namespace != namespace
        ):
            raise NotFoundError(f"no memory with id {memory_id!r}")
        return rec

    def get_many(self, ids: Sequence[str], user_id: str, namespace: str) -> dict[str, MemoryRecord]:
        if not ids:
            return {}
        with Session(self.engine, expire_on_commit=False) as s:
            # looked up by id alone and the scope checked here: a scope test in SQL let the planner walk the
            # whole scope through ix_memories_scope_valid (1.5 ms at 10k memories) instead of the unique id
            # index, and even kept out of its choice by coalesce() it doubled the query's cost
            rows = s.exec(select(MemoryRecord).where(col(MemoryRecord.id).in_(list(ids)))).all()
        return {r.id: r for r in rows if r.user_id == user_id and r.namespace == namespace}

    def ranking_rows(self, ids: Sequence[str], user_id: str, namespace: str, with_text: bool = False,
                     pinned: bool = False, pool: str | None = None) -> tuple[dict[str, RankingRow], list[str]]:
        """What ranking needs of each given memory of the scope (kind, speaker, time, pinned, invalid, and the
        text only when asked), read as plain rows: several times cheaper than loading the records, so a search
        ranks all its candidates and loads only the few it returns. ``pinned``: also the scope's valid pinned
        memories (of ``pool``, None for both; at most 50), whose ids come second. One connection, no ORM."""
        by_id, pinned_of = _ranking_statements(with_text)
        out: dict[str, RankingRow] = {}
        pins: list[str] = []

        def keep(r: Any) -> RankingRow:
            return RankingRow(r[0], r[3], r[4], r[5] or r[6], bool(r[7]), r[8] is not None, r[10] if with_text else "",
                              r[9])

        with self.engine.connect() as conn:
            for start in range(0, len(ids), 900):  # by id alone, scope checked here (see get_many)
                for r in conn.execute(by_id, {"ids": list(ids[start:start + 900])}):
                    if r[1] == user_id and r[2] == namespace:
                        out[r[0]] = keep(r)
            if pinned:
                for r in conn.execute(pinned_of[pool], {"u": user_id, "ns": namespace}):
                    out.setdefault(r[0], keep(r))
                    pins.append(r[0])
        return out, pins

    def pinned(self, user_id: str, namespace: str, pool: str | None = "facts") -> list[MemoryRecord]:
        """The scope's valid pinned memories of ``pool`` (at most 50, oldest first), as ``list(pinned=True)``
        gives them. Every request asks and most users pin nothing: the ids come from a prebuilt statement on a
        plain connection, and records are loaded only when there are some."""
        _check_pool(pool)
        _, pinned_of = _ranking_statements(False)
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(pinned_of[pool], {"u": user_id, "ns": namespace})]
        if not ids:
            return []
        found = self.get_many(ids, user_id, namespace)
        return [found[i] for i in ids if i in found]

    def stale_turns(self, user_id: str, namespace: str, turn_ids: Iterable[str]) -> set[str]:
        """Those of ``turn_ids`` whose every fact has since been invalidated (superseded, or no longer true):
        a turn that gave facts, none of them still valid, so that its excerpt says what is out of date. Every
        request with excerpts asks: one indexed read of the scope's invalid facts, and a read of the valid
        facts that name one of those turns only when there is one."""
        want = set(turn_ids)
        if not want:
            return set()
        with self.engine.connect() as conn:
            hit = {t for (ids,) in conn.execute(_invalid_sources(), {"u": user_id, "ns": namespace})
                   for t in ids or [] if t in want}
            if not hit:
                return set()
            text = cast(MemoryRecord.source_turn_ids, String)
            live = conn.execute(select(MemoryRecord.source_turn_ids).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                col(MemoryRecord.invalid_at).is_(None), MemoryRecord.kind != EPISODE,
                or_(*[text.contains(json.dumps(t), autoescape=True) for t in sorted(hit)])))
            return hit - {t for (ids,) in live for t in ids or []}

    def stale_episodes(self, user_id: str, namespace: str, episodes: Sequence[MemoryRecord]) -> set[str]:
        """The ids of ``episodes`` whose every turn is stale (:meth:`stale_turns`): kept and searchable, but
        left out of the block requests get."""
        stale = self.stale_turns(user_id, namespace, {t for r in episodes for t in r.source_turn_ids})
        return {r.id for r in episodes if r.source_turn_ids and set(r.source_turn_ids) <= stale}

    def list(self, user_id: str, namespace: str | None = "default", include_invalid: bool = False,
             kind: str | None = None, pinned: bool | None = None, limit: int | None = None,
             offset: int = 0, pool: str | None = None) -> list[MemoryRecord]:
        """The user's memories, oldest first; ``pool``: "facts" (every kind but episodes), "episodes" or
        None (both)."""
        q = select(MemoryRecord).where(MemoryRecord.user_id == user_id)
        if namespace is not None:
            q = q.where(MemoryRecord.namespace == namespace)
        if not include_invalid:
            q = q.where(col(MemoryRecord.invalid_at).is_(None))
        if kind is not None:
            q = q.where(MemoryRecord.kind == kind)
        _check_pool(pool)
        if pool == "facts":
            q = q.where(MemoryRecord.kind != EPISODE)
        elif pool == "episodes":
            q = q.where(MemoryRecord.kind == EPISODE)
        if pinned is not None:
            q = q.where(MemoryRecord.pinned == pinned)
        q = q.order_by(col(MemoryRecord.created_at), col(MemoryRecord.pk)).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(q).all())

    def find_by_text(self, user_id: str, namespace: str, text: str) -> MemoryRecord | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.exec(select(MemoryRecord).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                MemoryRecord.content_hash == content_hash(text),
            )).first()

    def history(self, memory_id: str, user_id: str | None = None) -> list[MemoryEvent]:
        q = select(MemoryEvent).where(MemoryEvent.memory_id == memory_id)
        if user_id is not None:
            q = q.where(MemoryEvent.user_id == user_id)
        with Session(self.engine, expire_on_commit=False) as s:
            rows = list(s.exec(q.order_by(col(MemoryEvent.created_at), col(MemoryEvent.pk))).all())
        if not rows:
            raise NotFoundError(f"no memory with id {memory_id!r}")
        return rows

    # ---- writes -----------------------------------------------------------------------------------
    def add_many(self, user_id: str, namespace: str, items: Iterable[dict[str, Any]], actor: str,
                 reason: str | None = None) -> list[MemoryOp]:
        """Inserts memories (dicts of MemoryRecord fields incl. ``text``); exact duplicates are NOOPs and
        a duplicate of an invalidated memory restores it. Embeds and indexes the new ones in one batch.
        When a concurrent writer stores the same text first, the batch is rolled back and run again (the
        text is then a NOOP), so racing writers never fail and never store a text twice."""
        items = list(items)
        for attempt in range(10):
            try:
                return self._add_many(user_id, namespace, items, actor, reason)
            except _ConcurrentDuplicate as exc:
                if attempt == 9:
                    raise StorageError("concurrent duplicate write; retry") from exc.__cause__
                time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    def _add_many(self, user_id: str, namespace: str, items: list[dict[str, Any]], actor: str,
                  reason: str | None) -> list[MemoryOp]:
        ops: list[MemoryOp] = []
        fresh: list[MemoryRecord] = []
        cleaned = [(item, self._clean(item["text"])) for item in items]
        with session_scope(self.engine) as s:
            hashes = sorted({content_hash(text) for _item, text in cleaned})
            stored: dict[str, MemoryRecord] = {}
            for i in range(0, len(hashes), 500):  # one lookup per 500 texts, not one per text
                stored.update((r.content_hash, r) for r in s.exec(select(MemoryRecord).where(
                    MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                    col(MemoryRecord.content_hash).in_(hashes[i:i + 500]),
                )).all())
            # the new texts' embedding runs on another thread while this transaction writes the rows
            new_texts = list(dict.fromkeys(t for _i, t in cleaned if content_hash(t) not in stored))
            vectors = _embed_pool().submit(self.embedder.embed, new_texts) \
                if len(new_texts) >= OVERLAP_MIN_TEXTS else None
            seen: dict[str, MemoryRecord] = {}
            for item, text in cleaned:
                h = content_hash(text)
                if h in seen:
                    ops.append(MemoryOp(event="NOOP", memory=seen[h], reason="duplicate in the same batch"))
                    continue
                existing = stored.get(h)
                if existing is not None:
                    seen[h] = existing
                    if existing.invalid_at is not None:
                        existing.invalid_at = None
                        existing.superseded_by = None
                        existing.updated_at = utcnow()
                        s.add(existing)
                        s.add(MemoryEvent(memory_id=existing.id, user_id=user_id, namespace=namespace,
                                          event="RESTORE", old_text=existing.text, new_text=existing.text,
                                          actor=actor, reason=reason or "stated again"))
                        ops.append(MemoryOp(event="RESTORE", memory=existing, reason=reason))
                    else:
                        merged = _merge_sources(existing, item)
                        if merged:
                            s.add(existing)
                        ops.append(MemoryOp(event="NOOP", memory=existing, reason="already stored"))
                    continue
                fields = {k: v for k, v in item.items() if k != "text"}
                if isinstance(fields.get("meta"), dict):  # provenance named in the metadata, unless given
                    found = provenance_from_meta(fields["meta"])
                    for key, value in zip(("conversation", "position", "speaker"), found, strict=True):
                        if fields.get(key) is None:
                            fields[key] = value
                rec = MemoryRecord(user_id=user_id, namespace=namespace, text=text, content_hash=h, **fields)
                seen[h] = rec
                fresh.append(rec)
                ops.append(MemoryOp(event="ADD", memory=rec, reason=reason))
            try:
                s.flush()
                _insert_fresh(s, fresh, actor, reason)
            except IntegrityError as exc:  # a concurrent writer stored the same text first
                raise _ConcurrentDuplicate() from exc
        self._index(fresh, _by_text(new_texts, vectors))
        return ops

    def update_text(self, memory_id: str, text: str, actor: str, reason: str | None = None,
                    user_id: str | None = None, **fields: Any) -> MemoryOp:
        text = self._clean(text)
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            old = rec.text
            h = content_hash(text)
            if h != rec.content_hash:
                clash = s.exec(select(MemoryRecord).where(
                    MemoryRecord.user_id == rec.user_id, MemoryRecord.namespace == rec.namespace,
                    MemoryRecord.content_hash == h,
                )).first()
                if clash is not None:
                    raise InvalidInputError(f"memory {clash.id} already says that")
            changed_text = text != old
            rec.text, rec.content_hash, rec.updated_at = text, h, utcnow()
            for k, v in fields.items():
                setattr(rec, k, v)
            if changed_text:
                rec.indexed = False
            s.add(rec)
            s.add(MemoryEvent(memory_id=rec.id, user_id=rec.user_id, namespace=rec.namespace, event="UPDATE",
                              old_text=old, new_text=text, actor=actor, reason=reason))
        if changed_text:
            self._index([rec])
        return MemoryOp(event="UPDATE", memory=rec, previous_text=old, reason=reason)

    def set_fields(self, memory_id: str, actor: str, user_id: str | None = None, reason: str | None = None,
                   **fields: Any) -> MemoryRecord:
        """Changes metadata fields (kind, pinned, importance, metadata) without touching the text."""
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            for k, v in fields.items():
                setattr(rec, k, v)
            rec.updated_at = utcnow()
            s.add(rec)
            s.add(MemoryEvent(memory_id=rec.id, user_id=rec.user_id, namespace=rec.namespace, event="UPDATE",
                              old_text=rec.text, new_text=rec.text, actor=actor,
                              reason=reason or "changed " + ", ".join(sorted(fields))))
        return rec

    def add_sources(self, memory_id: str, turn_ids: Sequence[str], user_id: str | None = None) -> MemoryRecord:
        """Records more turns a memory was stated in (said again, in other words or the same), as ``add_many``
        does for a text stored twice: no history event, the text unchanged."""
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            if _merge_sources(rec, {"source_turn_ids": list(turn_ids)}):
                s.add(rec)
        return rec

    def invalidate(self, memory_id: str, actor: str, reason: str | None = None,
                   superseded_by: str | None = None, user_id: str | None = None,
                   at: datetime | None = None) -> MemoryOp:
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            if rec.invalid_at is not None:
                return MemoryOp(event="NOOP", memory=rec, reason="already invalid")
            rec.invalid_at = at or utcnow()
            rec.superseded_by = superseded_by
            rec.updated_at = utcnow()
            s.add(rec)
            s.add(MemoryEvent(memory_id=rec.id, user_id=rec.user_id, namespace=rec.namespace,
                              event="INVALIDATE", old_text=rec.text, new_text=None, actor=actor,
                              reason=reason))
        return MemoryOp(event="INVALIDATE", memory=rec, previous_text=rec.text, reason=reason)

    def restore(self, memory_id: str, actor: str, reason: str | None = None,
                user_id: str | None = None) -> MemoryOp:
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            if rec.invalid_at is None:
                return MemoryOp(event="NOOP", memory=rec, reason="already valid")
            rec.invalid_at, rec.superseded_by, rec.updated_at = None, None, utcnow()
            s.add(rec)
            s.add(MemoryEvent(memory_id=rec.id, user_id=rec.user_id, namespace=rec.namespace, event="RESTORE",
                              old_text=rec.text, new_text=rec.text, actor=actor, reason=reason))
        return MemoryOp(event="RESTORE", memory=rec, reason=reason)

    def delete(self, memory_id: str, actor: str, reason: str | None = None,
               user_id: str | None = None) -> MemoryOp:
        with session_scope(self.engine) as s:
            rec = self._locked(s, memory_id, user_id)
            s.add(MemoryEvent(memory_id=rec.id, user_id=rec.user_id, namespace=rec.namespace, event="DELETE",
                              old_text=rec.text, actor=actor, reason=reason))
            s.merge(VectorTombstone(memory_id=rec.id))
            delete_vectors(s, [rec.id])
            s.delete(rec)
            bump_scopes(s, [(rec.user_id, rec.namespace)])
        self._drop_vectors([rec.id])
        return MemoryOp(event="DELETE", memory=rec, previous_text=rec.text, reason=reason)

    def forget(self, user_id: str, namespace: str | None = None) -> int:
        """Deletes every memory and event of the user (in one namespace, or all). Returns the count."""
        with session_scope(self.engine) as s:
            q = select(MemoryRecord.id).where(MemoryRecord.user_id == user_id)
            if namespace is not None:
                q = q.where(MemoryRecord.namespace == namespace)
            ids = list(s.exec(q).all())
            for i in ids:
                s.merge(VectorTombstone(memory_id=i))
            dm = delete(MemoryRecord).where(col(MemoryRecord.user_id) == user_id)
            de = delete(MemoryEvent).where(col(MemoryEvent.user_id) == user_id)
            if namespace is not None:
                dm = dm.where(col(MemoryRecord.namespace) == namespace)
                de = de.where(col(MemoryEvent.namespace) == namespace)
            s.exec(dm)  # type: ignore[call-overload]
            s.exec(de)  # type: ignore[call-overload]
            dv = delete(MemoryVector).where(col(MemoryVector.user_id) == user_id)
            if namespace is not None:
                dv = dv.where(col(MemoryVector.namespace) == namespace)
            s.exec(dv)  # type: ignore[call-overload]
            forget_scopes(s, user_id, namespace)
        try:
            ids = sorted(set(ids) | self.index.ids(user_id, namespace))
        except Exception as exc:  # the tombstones finish the job on the next repair
            log.warning("vector index unavailable while forgetting %s: %s", user_id, exc)
        self._drop_vectors(ids)
        return len(ids)

    # ---- the index --------------------------------------------------------------------------------
    def _index(self, recs: Sequence[MemoryRecord], embedded: Callable[[], dict[str, np.ndarray]] | None = None) -> None:
        """Embeds (or takes ``embedded()``: text -> vector, computed meanwhile) and upserts; on failure the rows
        stay ``indexed=False`` for the next repair."""
        if not recs:
            return
        try:
            ready = embedded() if embedded is not None else {}
            if all(r.text in ready for r in recs):
                vecs = np.stack([ready[r.text] for r in recs])
            else:
                vecs = self.embedder.embed([r.text for r in recs])
            self.index.upsert([r.id for r in recs], vecs, [r.user_id for r in recs],
                              [r.namespace for r in recs])
        except Exception as exc:
            log.warning("vector index write failed (%s); %d memories will be indexed on repair", exc, len(recs))
            return
        with session_scope(self.engine) as s:
            s.exec(update(MemoryRecord).where(col(MemoryRecord.id).in_([r.id for r in recs]))  # type: ignore[call-overload]
                   .values(indexed=True))
            write_vectors(s, recs, vecs)
            bump_scopes(s, [(r.user_id, r.namespace) for r in recs])
        for r in recs:
            r.indexed = True

    def _drop_vectors(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            self.index.delete(list(ids))
        except Exception as exc:
            log.warning("vector index delete failed (%s); will retry on repair", exc)
            return
        with session_scope(self.engine) as s:
            s.exec(delete(VectorTombstone).where(col(VectorTombstone.memory_id).in_(list(ids))))  # type: ignore[call-overload]

    def ensure_repaired(self) -> None:
        """Runs ``repair_index`` once per store, lazily, before the first index use. A failure is logged: the
        index may be down, search still works lexically, and ``memstore reindex`` or a restart repairs it."""
        if self._repaired:
            return
        with self._repair_lock:
            if self._repaired:
                return
            self._repaired = True
            try:
                self.repair_index()
            except Exception as exc:
                log.warning("index repair failed: %s", exc)

    def repair_index(self, batch: int = 512) -> dict[str, int]:
        """Indexes rows a crash or failure left unindexed and removes vectors of deleted rows."""
        with Session(self.engine) as s:
            dead = list(s.exec(select(VectorTombstone.memory_id)).all())
        self._drop_vectors(dead)
        indexed = 0
        while True:
            with Session(self.engine, expire_on_commit=False) as s:
                rows = list(s.exec(select(MemoryRecord).where(col(MemoryRecord.indexed).is_(False))
                                   .limit(batch)).all())
            if not rows:
                break
            self._index(rows)
            if not all(r.indexed for r in rows):
                break  # index still failing; try again later
            indexed += len(rows)
        return {"indexed": indexed, "removed": len(dead)}

    def reindex(self, progress: Any = None, batch: int = 256) -> int:
        """Drops the vector index and rebuilds it from SQL. ``progress(done, total)`` is called per batch."""
        self.index.reset()
        if self.vector_cache is not None:  # the embedding model may be another one now
            self.vector_cache.clear()
        with Session(self.engine) as s:
            total = s.exec(select(func.count()).select_from(MemoryRecord)).one()
            s.exec(delete(VectorTombstone))  # type: ignore[call-overload]
            s.exec(delete(MemoryVector))  # type: ignore[call-overload]  # the model may be another one now
            s.commit()
        done, last_pk = 0, 0
        while True:
            with Session(self.engine, expire_on_commit=False) as s:
                rows = list(s.exec(select(MemoryRecord).where(col(MemoryRecord.pk) > last_pk)
                                   .order_by(col(MemoryRecord.pk)).limit(batch)).all())
            if not rows:
                break
            last_pk = rows[-1].pk or last_pk
            vecs = self.embedder.embed([r.text for r in rows])
            self.index.upsert([r.id for r in rows], vecs, [r.user_id for r in rows], [r.namespace for r in rows])
            with session_scope(self.engine) as s:
                s.exec(update(MemoryRecord).where(col(MemoryRecord.id).in_([r.id for r in rows]))  # type: ignore[call-overload]
                       .values(indexed=True))
                write_vectors(s, rows, vecs)
                bump_scopes(s, [(r.user_id, r.namespace) for r in rows])
            done += len(rows)
            if progress:
                progress(done, total)
        return done

    def dense_query(self, vec: np.ndarray, user_id: str, namespace: str, limit: int,
                    context: float = 0.0, pool: str | None = None) -> list[tuple[str, float]]:
        """(id, cosine similarity) of the scope's nearest vectors, best first: exact, from the in-memory
        scope cache when it can answer, else the vector index's (approximate) query. ``context`` (0..1): that
        share of each memory's score comes from its context view (the scope cache only; the index answers
        with plain similarities). ``pool``: "facts" (every kind but episodes), "episodes" or None (both)."""
        return self.dense_query_pools(vec, user_id, namespace, limit, context, (pool,))[pool]

    def dense_query_pools(self, vec: np.ndarray, user_id: str, namespace: str, limit: int, context: float = 0.0,
                          pools: tuple[str | None, ...] = ("facts", "episodes"),
                          ) -> dict[str | None, list[tuple[str, float]]]:
        """:meth:`dense_query` for several pools at once (one pass over the scope's vectors, or one index
        query): ``{"facts": [...], "episodes": [...]}``, up to ``limit`` each."""
        if self.vector_cache is not None:
            try:
                held = self.vector_cache.query_pools(vec, user_id, namespace, limit, context, pools)
            except Exception as exc:  # the cache is an optimisation: never a reason to fail a search
                log.debug("vector cache failed, asking the index: %s", exc)
                held = None
            if held is not None:
                return held
        if pools == (None,):
            return {None: self.index.query(vec, user_id, namespace, limit)}
        # the index knows no kinds: ask for more and sort them into pools (SQL says which kind each one is)
        found = self.index.query(vec, user_id, namespace, limit * 4 + 20)
        kinds = self.kinds([i for i, _s in found])
        out: dict[str | None, list[tuple[str, float]]] = {p: [] for p in pools}
        for i, sim in found:
            mine = out.get("episodes" if kinds.get(i) == EPISODE else "facts")
            if mine is not None and len(mine) < limit:
                mine.append((i, sim))
        return out

    def kinds(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> kind of the given memories (ids that no longer exist are left out)."""
        if not ids:
            return {}
        with Session(self.engine) as s:
            return dict(s.exec(select(MemoryRecord.id, MemoryRecord.kind)
                               .where(col(MemoryRecord.id).in_(list(ids)))).all())

    def neighbours(self, user_id: str, namespace: str, ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The memories just before and after each given one in its conversation (by position), among the
        memories of its own pool (facts next to facts, episodes next to episodes)."""
        if not ids:
            return {}
        if self.vector_cache is not None:
            held = self.vector_cache.neighbours(user_id, namespace, list(ids))
            if held is not None and len(held) == len(set(ids)):
                return held
        with Session(self.engine) as s:
            mine = s.exec(select(MemoryRecord.id, MemoryRecord.conversation, MemoryRecord.kind).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                col(MemoryRecord.id).in_(list(ids)), col(MemoryRecord.conversation).is_not(None))).all()
            convs = sorted({c for _i, c, _k in mine})
            rows = s.exec(select(MemoryRecord.id, MemoryRecord.conversation, MemoryRecord.kind).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                col(MemoryRecord.conversation).in_(convs), col(MemoryRecord.position).is_not(None))
                .order_by(col(MemoryRecord.conversation), col(MemoryRecord.position), col(MemoryRecord.pk))
            ).all() if convs else []
        order: dict[tuple[str, bool], list[str]] = {}
        place: dict[str, int] = {}
        for mid, conv, kind in rows:
            seq = order.setdefault((conv, kind == EPISODE), [])
            place[mid] = len(seq)
            seq.append(mid)
        out: dict[str, tuple[str, ...]] = {}
        for mid, conv, kind in mine:
            if mid in place:
                seq, k = order[(conv, kind == EPISODE)], place[mid]
                out[mid] = tuple(seq[j] for j in (k - 1, k + 1) if 0 <= j < len(seq))
        return out

    def speakers(self, user_id: str, namespace: str) -> tuple[str, ...]:
        """Who speaks in the scope's conversations (provenance), most frequent first, at most 50."""
        if self.vector_cache is not None:
            held = self.vector_cache.speakers(user_id, namespace)
            if held is not None:
                return held
        with Session(self.engine) as s:
            rows = s.exec(select(MemoryRecord.speaker, func.count()).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                col(MemoryRecord.speaker).is_not(None)).group_by(MemoryRecord.speaker)
                .order_by(func.count().desc()).limit(50)).all()
        return tuple(sp for sp, _n in rows if sp)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.embed([text])[0]

    def embed_query_soon(self, text: str) -> Future[np.ndarray]:
        """The query's vector, computed alongside what the caller does next when the embedder can
        (``embed_soon``); otherwise computed now. Errors are raised by ``.result()``."""
        soon = getattr(self.embedder, "embed_soon", None)
        if soon is not None:
            return soon(text)
        done: Future[np.ndarray] = Future()
        try:
            done.set_result(self.embed_query(text))
        except Exception as exc:
            done.set_exception(exc)
        return done

    # ---- helpers ----------------------------------------------------------------------------------
    def _locked(self, s: Session, memory_id: str, user_id: str | None) -> MemoryRecord:
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInputError("memory_id must be a non-empty string")
        q = select(MemoryRecord).where(MemoryRecord.id == memory_id)
        if self.engine.dialect.name == "postgresql":
            q = q.with_for_update()
        rec = s.exec(q).first()
        if rec is None or (user_id is not None and rec.user_id != user_id):
            raise NotFoundError(f"no memory with id {memory_id!r}")
        return rec


class _ConcurrentDuplicate(Exception):
    pass


def _insert_fresh(s: Session, recs: list[MemoryRecord], actor: str, reason: str | None) -> None:
    """Inserts new memories and their ADD events as two multi-row statements in the session's transaction
    (a session's unit of work took about as long as the rest of a batch's SQL), then makes each record
    what a session would have left: detached, with its primary key."""
    if not recs:
        return
    table, events = MemoryRecord.__table__, MemoryEvent.__table__  # type: ignore[attr-defined]
    conn = s.connection()
    rows = [row_values(r) for r in recs]
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        pks = conn.execute(insert(table).returning(table.c.pk, sort_by_parameter_order=True), rows).scalars().all()
    else:  # SQLite before 3.35 has no RETURNING
        pks = [conn.execute(insert(table), row).inserted_primary_key[0] for row in rows]
    conn.execute(insert(events), [
        {"id": new_id(), "memory_id": r.id, "user_id": r.user_id, "namespace": r.namespace, "event": "ADD",
         "old_text": None, "new_text": r.text, "actor": actor, "reason": reason, "created_at": r.created_at}
        for r in recs])
    for rec, pk in zip(recs, pks, strict=True):
        rec.pk = pk
        make_transient_to_detached(rec)


OVERLAP_MIN_TEXTS = 8  # smaller batches embed inline: a thread hand-off would cost more than it saves
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _embed_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="memstore-embed")
        return _pool


def _by_text(texts: list[str], future: Future[np.ndarray] | None) -> Callable[[], dict[str, np.ndarray]] | None:
    """A callable giving text -> vector once the background embedding is done (None when there is none)."""
    if future is None:
        return None
    return lambda: dict(zip(texts, future.result(), strict=True))


def _merge_sources(existing: MemoryRecord, item: dict[str, Any]) -> bool:
    new = [t for t in item.get("source_turn_ids", []) if t not in existing.source_turn_ids]
    if new:
        existing.source_turn_ids = [*existing.source_turn_ids, *new]
        existing.updated_at = utcnow()
    return bool(new)
