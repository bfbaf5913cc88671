"""The one retriever: dense (vectors) + lexical (FTS5 / tsvector) search within one scope, fused by score,
with the signals that measured best on long conversations (docs/benchmarks.md):

* **score fusion**: cosine / best cosine + ``lexical_weight`` x BM25 / best BM25 (reciprocal-rank fusion,
  ``fusion="rrf"``, throws away how far apart the scores are);
* **context views**: a memory also matches through its context view, its vector plus the previous
  memory's in the same conversation, so "yes, last week!" is found by the question it answers;
* **neighbours**: a memory gains ``neighbour_weight`` x the score of the memories just before and after it
  in its conversation;
* **names**: when a query names one of the people in the scope's conversations, the name leaves the dense
  query (which then matches on content) and memories they said or that name them gain ``name_boost``;
* **dates**: memories dated in a month or year the query names gain ``date_boost``;
* **conversations**: a memory gains ``conversation_weight`` x the score of the best other memory of its
  conversation among the candidates: what a conversation that matches elsewhere too said is more likely
  the answer than a lone look-alike;
* recency and pinned memories, as before.

Facts and episodes (excerpts of past conversations, ``kind="episode"``) are separate candidate pools: a
search runs over one pool (``pool="facts"``, the default, or ``"episodes"``), so long exchanges never crowd
the facts out; the context builder asks both (memstore.recall.context).

Scores are in [0, 1]: the share of the best score a memory could get with these settings.
Every query is scoped by (user_id, namespace).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from memstore import metrics
from memstore.errors import StorageError
from memstore.recall.query import date_match, entity_names, named_people, names_in, query_dates, said_by, strip_names
from memstore.records import EPISODE, MemoryHit, MemoryRecord, utcnow
from memstore.storage.lexical import lexical_search, lexical_search_pools
from memstore.storage.store import MemoryStore, RankingRow

log = logging.getLogger("memstore")
POOLS: tuple[str | None, ...] = ("facts", "episodes", None)


@dataclass(frozen=True)
class SearchSettings:
    """Plain data: how the retriever weighs its signals. See PRESETS for named variants."""

    fusion: str = "score"           # "score" (scores scaled by the best) | "rrf" (reciprocal rank)
    dense_weight: float = 1.0
    lexical_weight: float = 0.5
    rrf_k: int = 60
    # candidates per signal, at least (each grows with the limit): the dense list is cheap to lengthen (a
    # partial sort of the scope's similarities) and a memory just outside a short one still adds its score;
    # chosen on LoCoMo conversations 0-2 (docs/benchmarks.md)
    candidates: int = 40          # lexical (at least the limit)
    dense_candidates: int = 240   # (at least 4x the limit)
    context_weight: float = 0.5   # share of the dense score from the context view (this memory + the previous)
    neighbour_weight: float = 0.1
    conversation_weight: float = 0.2  # x the best score of another memory of the same conversation
    name_boost: float = 0.2
    strip_names: bool = True
    date_boost: float = 0.1
    recency_weight: float = 0.1   # fraction of the best fused score a brand-new memory can gain
    recency_half_life_days: float = 90.0
    pinned_boost: float = 0.05
    min_dense_similarity: float = 0.0  # dense-only hits below this are dropped
    # both pools ranked together (pool=None, Memory.search(episodes=True)): a fact's score counts this much
    # against an excerpt's, since a short statement matches a question more closely than an exchange that
    # says the same; chosen on LoCoMo conversations 0-2, with heuristic and with LLM-written facts
    merged_fact_weight: float = 0.8
    include_pinned: bool = True

    def with_(self, **changes: Any) -> SearchSettings:
        return replace(self, **changes)

    @property
    def ceiling(self) -> float:
        """The highest score these settings can give (fused 1.0 plus every boost), for scaling to [0, 1]."""
        return 1.0 + self.neighbour_weight + self.conversation_weight + self.name_boost + self.date_boost + \
            self.recency_weight + self.pinned_boost


_RRF = SearchSettings(fusion="rrf", lexical_weight=1.0, context_weight=0.0, neighbour_weight=0.0, name_boost=0.0,
                      strip_names=False, date_boost=0.0, conversation_weight=0.0)
#: Named settings. ``hybrid`` is the default; the others are the ablation ladder of docs/benchmarks.md
#: (``memstore eval locomo -r NAME``), each adding one signal to the one before, and single-signal views.
PRESETS: dict[str, SearchSettings] = {
    "hybrid": SearchSettings(),
    "rrf": _RRF,
    "score": _RRF.with_(fusion="score", lexical_weight=0.5),
    "context": _RRF.with_(fusion="score", lexical_weight=0.5, context_weight=0.5),
    "neighbours": _RRF.with_(fusion="score", lexical_weight=0.5, context_weight=0.5, neighbour_weight=0.1),
    "names": _RRF.with_(fusion="score", lexical_weight=0.5, context_weight=0.5, neighbour_weight=0.1,
                        name_boost=0.2, strip_names=True),
    "no_recency": SearchSettings(recency_weight=0.0),
    "no_conversation": SearchSettings(conversation_weight=0.0),
    "dense": SearchSettings(lexical_weight=0.0),
    "lexical": SearchSettings(dense_weight=0.0, context_weight=0.0),
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
    pool: str | None = "facts",
) -> list[MemoryHit]:
    """The ``limit`` best memories of one pool ("facts": every kind but episodes; "episodes"; None: both)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
    return search_pools(store, query, user_id, namespace, {pool: limit}, filters, include_invalid, settings,
                        timings)[pool]


def search_pools(
    store: MemoryStore,
    query: str,
    user_id: str,
    namespace: str,
    limits: dict[str | None, int],
    filters: dict[str, Any] | None = None,
    include_invalid: bool = False,
    settings: SearchSettings | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str | None, list[MemoryHit]]:
    """The best memories of each pool in ``limits`` (pool -> how many), from one candidate phase: one query
    embedding, one pass over the scope's vectors, one lexical query, one neighbour look-up and one read of
    the candidates' rows, however many pools are asked. Each pool is ranked on its own (its scores scaled by
    its own best), so ``{"facts": 10, "episodes": 6}`` gives what two searches would, at the cost of one.
    ``None`` (both pools ranked together) cannot be combined with another pool."""
    pools = list(limits)
    if not pools or any(p not in POOLS for p in pools) or (None in pools and len(pools) > 1):
        raise ValueError(f"pools must be one of {POOLS} (None alone), not {pools!r}")
    st = settings or SearchSettings()
    # a search for up to 60 results ranks the same candidates whatever its limit, so its top 10 are those a
    # search for 10 returns (what the eval's recall@k reports is what a request of that limit gets)
    n = max(st.candidates, max(limits.values()))
    n_dense = max(st.dense_candidates, max(limits.values()) * 4)
    both = len(pools) > 1
    t0 = time.perf_counter()
    named, dense_text = _dense_query(store, query, user_id, namespace, st)
    # the query embedding runs on the embedder's thread while the lexical query runs here
    vec_soon = store.embed_query_soon(dense_text) if st.dense_weight > 0 else None
    t1 = time.perf_counter()
    lexical: dict[str | None, list[tuple[str, float]]] = {p: [] for p in pools}
    if st.lexical_weight > 0:
        if both:
            lexical.update(lexical_search_pools(store.engine, user_id, namespace, query, n, include_invalid))
        else:
            lexical[pools[0]] = lexical_search(store.engine, user_id, namespace, query, n, include_invalid,
                                               pools[0])
    t2 = time.perf_counter()
    dense: dict[str | None, list[tuple[str, float]]] = {p: [] for p in pools}
    if vec_soon is not None:
        vec = vec_soon.result()
        t3 = time.perf_counter()
        try:
            dense.update(store.dense_query_pools(vec, user_id, namespace, n_dense, st.context_weight, tuple(pools)))
        except StorageError as exc:  # SQL is the truth: an index that cannot answer leaves lexical search
            first = not metrics.snapshot().get("memstore_dense_fallback_total")
            log.log(logging.WARNING if first else logging.DEBUG, "vector search failed, searching lexically "
                    "only (counted in memstore_dense_fallback_total): %s", exc)
            metrics.inc("memstore_dense_fallback_total")
        if timings is not None:  # "embed": what was left to wait for once the lexical query was done
            timings["embed"] = (t1 - t0) + (t3 - t2)
            timings["dense"] = time.perf_counter() - t3
    if timings is not None:
        timings["lexical"] = t2 - t1

    scores: dict[str | None, dict[str, float]] = {}
    # which signal found each memory ("dense", "lexical", "neighbour", "pinned"), read only for the hits returned
    found: dict[str, set[str]] = {"dense": set(), "lexical": set(), "neighbour": set(), "pinned": set()}
    for p in pools:
        kept = [(m, sim) for m, sim in dense[p] if sim >= st.min_dense_similarity]
        scores[p] = _fuse(kept, lexical[p], st)
        found["dense"].update(m for m, _s in kept)
        found["lexical"].update(m for m, _s in lexical[p])
    if st.neighbour_weight > 0 and any(scores.values()):
        near_of = store.neighbours(user_id, namespace, [m for p in pools for m in scores[p]])
        for p in pools:  # a memory's neighbours are in its own pool
            spread = dict(scores[p])
            for mid, near in near_of.items():
                if mid in scores[p]:
                    for nb in near:
                        spread[nb] = spread.get(nb, 0.0) + st.neighbour_weight * scores[p][mid]
                        found["neighbour"].add(nb)
            scores[p] = spread

    dates = query_dates(query) if st.date_boost > 0 else []
    # a query naming one person who speaks in the user's conversations is about what they said; other names
    # (family, pets, places, colleagues) favour the memories that name them
    person = named[0] if st.name_boost > 0 and len(named) == 1 else None
    others = [] if person is not None or st.name_boost <= 0 else \
        [n for n in entity_names(query) if not any(n in p.split() for p in named)]
    # Only memories that can still reach the top ``limit`` are loaded: the boosts add at most ``headroom``, and
    # the conversation signal its weight x the pool's best score, to a fused score. Filters need every record;
    # a short page (invalidated or filtered hits) loads the rest.
    headroom = (st.name_boost if person is not None or others else 0.0) + (st.date_boost if dates else 0.0) + \
        st.recency_weight + st.pinned_boost
    # both pools on one scale (pool None): a fact's score counts merged_fact_weight against an excerpt's
    fact_weight = {p: st.merged_fact_weight if p is None else 1.0 for p in pools}
    order: dict[str | None, list[str]] = {}
    first: dict[str | None, list[str]] = {}
    for p in pools:
        order[p] = sorted(scores[p], key=scores[p].__getitem__, reverse=True)
        first[p] = order[p]
        if not filters and len(order[p]) > limits[p]:
            # the cut-off score may be a weighed fact's
            kth = scores[p][order[p][limits[p] - 1]] * min(1.0, fact_weight[p])
            floor = kth - headroom - st.conversation_weight * scores[p][order[p][0]]
            first[p] = [mid for mid in order[p] if scores[p][mid] >= floor]
    # Ranking reads a few columns of each candidate; whole records are loaded only for what is returned
    # (or for every candidate when filters need them: metadata, dates).
    records: dict[str, MemoryRecord] = {}
    pinned_pool = None if both else pools[0]

    def rows_of(ids: list[str], pinned: bool = False) -> tuple[dict[str, RankingRow], list[str]]:
        if not filters:
            return store.ranking_rows(ids, user_id, namespace, with_text=bool(others), pinned=pinned,
                                      pool=pinned_pool)
        # filters read whole records: those of the candidates and of the pinned memories the store names
        pins = store.ranking_rows([], user_id, namespace, pinned=True, pool=pinned_pool)[1] if pinned else []
        loaded = {mid: rec for mid, rec in store.get_many([*ids, *pins], user_id, namespace).items()
                  if _matches(rec, filters)}
        records.update(loaded)
        return {mid: _row(rec) for mid, rec in loaded.items()}, [mid for mid in pins if mid in loaded]

    rows, pins = rows_of([m for p in pools for m in first[p]], pinned=st.include_pinned)
    for mid in pins:
        found["pinned"].add(mid)
        scores[_pool_of(rows[mid].kind, pools)].setdefault(mid, 0.0)

    now = utcnow()

    def score_of(row: RankingRow, base: float) -> float:
        score = base
        if person is not None and said_by(row.speaker, person):
            score += st.name_boost
        elif others:
            score += st.name_boost * names_in(row.text, others)
        if dates:
            score += st.date_boost * date_match(dates, row.when)
        if st.recency_weight > 0:
            age_days = max(0.0, (now - row.when).total_seconds() / 86400)
            score += st.recency_weight * math.pow(0.5, age_days / st.recency_half_life_days)
        if row.pinned:
            score += st.pinned_boost
        return score

    ranked: dict[str | None, list[tuple[float, str]]] = {}
    for p in pools:
        sc = scores[p]
        if st.conversation_weight > 0:  # a memory of a conversation that other strong matches come from
            top2: dict[str, list[tuple[float, str]]] = {}
            for mid, row in rows.items():
                if mid in sc and row.conversation is not None:
                    best = top2.setdefault(row.conversation, [])
                    best.append((sc[mid], mid))
                    best.sort(reverse=True)
                    del best[2:]
            boosted = dict(sc)
            for mid, row in rows.items():
                if mid in sc and row.conversation is not None:
                    other = next((x for x, m in top2[row.conversation] if m != mid), None)
                    if other is not None:
                        boosted[mid] += st.conversation_weight * other
            sc = boosted
        weight = fact_weight[p]
        # a vector whose row is gone (repaired on the next open), another scope, invalid, or filtered out
        mine = [(round(min(1.0, score_of(row, sc[mid]) / st.ceiling) * (1.0 if row.kind == EPISODE else weight),
                       6), mid) for mid, row in rows.items()
                if mid in sc and (include_invalid or not row.invalid) and _pool_of(row.kind, pools) == p]
        if len(mine) < limits[p] and len(first[p]) < len(order[p]):  # the loaded page ran short: rank the rest
            more = rows_of([mid for mid in order[p][len(first[p]):] if mid not in rows])[0]
            rows.update(more)
            mine += [(round(min(1.0, score_of(row, sc[mid]) / st.ceiling) * (1.0 if row.kind == EPISODE
                                                                               else weight), 6), mid)
                     for mid, row in more.items()
                     if (include_invalid or not row.invalid) and _pool_of(row.kind, pools) == p]
        mine.sort(key=lambda x: x[0], reverse=True)
        ranked[p] = mine[:limits[p]]
    records.update(store.get_many([mid for p in pools for _s, mid in ranked[p] if mid not in records],
                                  user_id, namespace))
    out = {p: [MemoryHit(memory=records[mid], score=score, sources=[k for k, ids in found.items() if mid in ids])
               for score, mid in ranked[p] if mid in records] for p in pools}
    if timings is not None:
        timings["total"] = time.perf_counter() - t0
    return out


def one_per_exchange(hits: list[MemoryHit], limit: int) -> list[MemoryHit]:
    """The first ``limit`` hits without those whose source turns are all those of hits before them (the
    excerpt of the exchange a listed fact came from, or a second fact of it): they would only repeat them."""
    out: list[MemoryHit] = []
    told: set[str] = set()
    for hit in hits:
        turns = set(hit.memory.source_turn_ids or [])
        if turns and turns <= told:
            continue
        told |= turns
        out.append(hit)
        if len(out) >= limit:
            break
    return out


def _dense_query(store: MemoryStore, query: str, user_id: str, namespace: str,
                 st: SearchSettings) -> tuple[list[str], str]:
    """(the people of the scope's conversations the query names, the text the dense signal embeds: the query
    without those names when ``strip_names``, so that it matches on content)."""
    named: list[str] = []
    if st.name_boost > 0 or st.strip_names:
        named = named_people(query, store.speakers(user_id, namespace))
    return named, strip_names(query, named) if st.strip_names and named else query


def _row(rec: MemoryRecord) -> RankingRow:
    return RankingRow(rec.id, rec.kind, rec.speaker, rec.valid_from or rec.created_at, rec.pinned,
                      rec.invalid_at is not None, rec.text, rec.conversation)


def _pool_of(kind: str, pools: list[str | None]) -> str | None:
    """The asked pool a memory of this kind belongs to (None when both are ranked together)."""
    if pools == [None]:
        return None
    return "episodes" if kind == EPISODE else "facts"


def _fuse(dense: list[tuple[str, float]], lexical: list[tuple[str, float]], st: SearchSettings,
          ) -> dict[str, float]:
    """Dense and lexical candidates -> one score each, 1.0 for a memory best on both signals."""
    scores: dict[str, float] = {}
    total = (st.dense_weight if dense else 0.0) + (st.lexical_weight if lexical else 0.0) or 1.0
    if st.fusion == "rrf":
        for rank, (mid, _s) in enumerate(dense):
            scores[mid] = scores.get(mid, 0.0) + st.dense_weight * (st.rrf_k + 1) / (st.rrf_k + rank + 1)
        for rank, (mid, _s) in enumerate(lexical):
            scores[mid] = scores.get(mid, 0.0) + st.lexical_weight * (st.rrf_k + 1) / (st.rrf_k + rank + 1)
    else:
        # scaled by the best score, not min-max: independent of where the candidate list was cut off
        hi = max((s for _m, s in dense), default=0.0)
        for mid, sim in dense:
            scores[mid] = st.dense_weight * max(0.0, sim) / hi if hi > 0 else 0.0
        top = max((s for _m, s in lexical), default=0.0) or 1.0
        for mid, s in lexical:
            scores[mid] = scores.get(mid, 0.0) + st.lexical_weight * s / top
    return {mid: s / total for mid, s in scores.items()}


class Retriever:
    """The one retriever every caller uses (Memory.search, the context builder, extraction): hybrid search
    over a MemoryStore with the configured settings. Input is validated by the caller (Memory)."""

    def __init__(self, store: MemoryStore, settings: SearchSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PRESETS["hybrid"]

    def search(self, query: str, user_id: str, namespace: str, limit: int = 10,
               filters: dict[str, Any] | None = None, include_invalid: bool = False,
               settings: SearchSettings | None = None, timings: dict[str, float] | None = None,
               pool: str | None = "facts") -> list[MemoryHit]:
        """The best memories of one pool: "facts" (every kind but episodes, the default), "episodes"
        (excerpts of past conversations) or None (both, ranked together)."""
        self.store.ensure_repaired()
        return hybrid_search(self.store, query, user_id, namespace, limit, filters, include_invalid,
                             settings or self.settings, timings, pool)

    def prefetch(self, query: str, user_id: str, namespace: str, settings: SearchSettings | None = None) -> None:
        """Starts embedding what a search for ``query`` will embed, so that work done before the search
        (reading the profile, say) overlaps it. Errors surface in the search."""
        st = settings or self.settings
        if st.dense_weight > 0:
            try:
                self.store.embed_query_soon(_dense_query(self.store, query, user_id, namespace, st)[1])
            except Exception as exc:  # the search will meet it again and report it
                log.debug("query prefetch failed: %s", exc)

    def search_merged(self, query: str, user_id: str, namespace: str, limit: int = 10,
                      filters: dict[str, Any] | None = None, include_invalid: bool = False,
                      settings: SearchSettings | None = None) -> list[MemoryHit]:
        """Facts and excerpts of past conversations ranked together on one scale (a fact's score weighed by
        ``merged_fact_weight``), one place per exchange (:func:`one_per_exchange`)."""
        self.store.ensure_repaired()
        hits = hybrid_search(self.store, query, user_id, namespace, limit * 3, filters, include_invalid,
                             settings or self.settings, pool=None)
        return one_per_exchange(hits, limit)

    def search_pools(self, query: str, user_id: str, namespace: str, limits: dict[str | None, int],
                     settings: SearchSettings | None = None,
                     timings: dict[str, float] | None = None) -> dict[str | None, list[MemoryHit]]:
        """The best memories of several pools from one candidate phase (``{"facts": 10, "episodes": 6}``):
        what one search per pool would find, at the cost of one."""
        self.store.ensure_repaired()
        return search_pools(self.store, query, user_id, namespace, limits, settings=settings or self.settings,
                            timings=timings)
