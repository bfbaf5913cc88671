"""Hybrid search: dense (vector index) + lexical (FTS5 / tsvector), fused by weighted reciprocal rank,
with a mild recency term and pinned memories. Every query is scoped by (user_id, namespace).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from memstore import metrics
from memstore.errors import StorageError
from memstore.records import MemoryHit, MemoryRecord, utcnow
from memstore.storage.lexical import lexical_search
from memstore.storage.store import MemoryStore

log = logging.getLogger("memstore")


@dataclass(frozen=True)
class SearchSettings:
    """Plain data: how hybrid search weighs its signals. See PRESETS for named variants."""

    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    rrf_k: int = 60
    candidates: int = 40          # per signal, at least; grows with the limit
    recency_weight: float = 0.1   # fraction of the best fused score a brand-new memory can gain
    recency_half_life_days: float = 90.0
    pinned_boost: float = 0.05
    min_dense_similarity: float = 0.0  # dense-only hits below this are dropped
    include_pinned: bool = True

    def with_(self, **changes: Any) -> SearchSettings:
        return replace(self, **changes)


PRESETS: dict[str, SearchSettings] = {
    "hybrid": SearchSettings(),
    "dense": SearchSettings(lexical_weight=0.0),
    "lexical": SearchSettings(dense_weight=0.0),
    "no_recency": SearchSettings(recency_weight=0.0),
}


def _matches(rec: MemoryRecord, filters: dict[str, Any] | None) -> bool:
    if not filters:
        return True
    for key, want in filters.items():
        if key == "kind":
            if rec.kind not in (want if isinstance(want, list | tuple | set) else [want]):
                return False
        elif key == "pinned":
            if rec.pinned != bool(want):
                return False
        elif key == "created_after":
            if rec.created_at < _as_dt(want):
                return False
        elif key == "created_before":
            if rec.created_at >= _as_dt(want):
                return False
        elif key == "metadata":
            if any(rec.meta.get(k) != v for k, v in dict(want).items()):
                return False
        elif rec.meta.get(key) != want:  # any other key: an exact metadata match
            return False
    return True


def _as_dt(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def hybrid_search(
    store: MemoryStore,
    query: str,
    user_id: str,
    namespace: str,
    limit: int = 10,
    filters: dict[str, Any] | None = None,
    include_invalid: bool = False,
    settings: SearchSettings | None = None,
    timings: dict[str, float] | None = None,
) -> list[MemoryHit]:
    st = settings or SearchSettings()
    n = max(st.candidates, limit * 4)
    t0 = time.perf_counter()
    dense: list[tuple[str, float]] = []
    if st.dense_weight > 0:
        vec = store.embed_query(query)
        t1 = time.perf_counter()
        try:
            dense = store.dense_query(vec, user_id, namespace, n)
        except StorageError as exc:  # SQL is the truth: an index that cannot answer leaves lexical search
            first = not metrics.snapshot().get("memstore_dense_fallback_total")
            log.log(logging.WARNING if first else logging.DEBUG, "vector search failed, searching lexically "
                    "only (counted in memstore_dense_fallback_total): %s", exc)
            metrics.inc("memstore_dense_fallback_total")
        t2 = time.perf_counter()
        if timings is not None:
            timings["embed"] = t1 - t0
            timings["dense"] = t2 - t1
    t2 = time.perf_counter()
    lexical = lexical_search(store.engine, user_id, namespace, query, n, include_invalid) \
        if st.lexical_weight > 0 else []
    if timings is not None:
        timings["lexical"] = time.perf_counter() - t2

    scores: dict[str, float] = {}
    sources: dict[str, list[str]] = {}
    sims = dict(dense)
    for rank, (mid, sim) in enumerate(dense):
        if sim < st.min_dense_similarity:
            continue
        scores[mid] = scores.get(mid, 0.0) + st.dense_weight / (st.rrf_k + rank + 1)
        sources.setdefault(mid, []).append("dense")
    for rank, (mid, _s) in enumerate(lexical):
        scores[mid] = scores.get(mid, 0.0) + st.lexical_weight / (st.rrf_k + rank + 1)
        sources.setdefault(mid, []).append("lexical")

    records = store.get_many(list(scores), user_id, namespace)
    if st.include_pinned:
        with Session(store.engine, expire_on_commit=False) as s:
            for rec in s.exec(select(MemoryRecord).where(
                MemoryRecord.user_id == user_id, MemoryRecord.namespace == namespace,
                col(MemoryRecord.pinned).is_(True), col(MemoryRecord.invalid_at).is_(None),
            ).limit(50)).all():
                records.setdefault(rec.id, rec)
                sources.setdefault(rec.id, []).append("pinned")
                scores.setdefault(rec.id, 0.0)

    best = (st.dense_weight + st.lexical_weight) / (st.rrf_k + 1) or 1.0
    now = utcnow()
    hits: list[MemoryHit] = []
    for mid, base in scores.items():
        rec = records.get(mid)
        if rec is None:  # a vector whose row is gone: repaired on the next open
            continue
        if rec.user_id != user_id or rec.namespace != namespace:
            continue
        if not include_invalid and rec.invalid_at is not None:
            continue
        if not _matches(rec, filters):
            continue
        score = base / best
        if st.recency_weight > 0:
            age_days = max(0.0, (now - (rec.valid_from or rec.created_at)).total_seconds() / 86400)
            score += st.recency_weight * math.pow(0.5, age_days / st.recency_half_life_days)
        if rec.pinned:
            score += st.pinned_boost
        hit_sources = sources.get(mid, [])
        if mid in sims and "dense" not in hit_sources and sims[mid] >= st.min_dense_similarity:
            hit_sources.append("dense")
        hits.append(MemoryHit(memory=rec, score=round(score, 6), sources=hit_sources))
    hits.sort(key=lambda h: h.score, reverse=True)
    if timings is not None:
        timings["total"] = time.perf_counter() - t0
    return hits[:limit]


class Retriever:
    """The one retriever every caller uses (Memory.search, the context builder, extraction): hybrid search
    over a MemoryStore with the configured settings. Input is validated by the caller (Memory)."""

    def __init__(self, store: MemoryStore, settings: SearchSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PRESETS["hybrid"]

    def search(self, query: str, user_id: str, namespace: str, limit: int = 10,
               filters: dict[str, Any] | None = None, include_invalid: bool = False,
               settings: SearchSettings | None = None, timings: dict[str, float] | None = None) -> list[MemoryHit]:
        self.store.ensure_repaired()
        return hybrid_search(self.store, query, user_id, namespace, limit, filters, include_invalid,
                             settings or self.settings, timings)
