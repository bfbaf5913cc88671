"""A conversation-aware retriever over a memstore scope: what the LoCoMo harness measures as ``plus``.

It reads the same store as :func:`memstore.recall.search.hybrid_search` (the chroma index, FTS5 / tsvector and
the SQL rows) and adds, each measured on LoCoMo (docs/benchmarks.md):

* **score fusion** -- cosine divided by the best cosine, plus BM25 divided by the best BM25 (times
  ``lexical_weight``), instead of reciprocal-rank fusion, which throws away how far apart the scores are;
* **context vectors** -- a second embedding of each memory together with the memory before it in the
  same session (kept in its own chroma collection, same ids), so a reply such as "yes, last week!" is
  found by the question it answers; the dense score is the mean of both views;
* **neighbour propagation** -- a memory gains ``neighbour_weight`` x the score of the memories next to it
  in its session;
* **speaker awareness** -- names of the scope's speakers (``meta["speaker"]``) are taken out of the
  dense query (the keyed text already carries them) and, when the question names exactly one speaker,
  that speaker's memories gain ``speaker_boost`` x the best score;
* **date awareness** -- a month / year / day named in the question ("in June", "on 13 October, 2023")
  adds ``date_boost`` x the best score to memories dated then (half as much for the month after).

Memories are expected to carry ``meta`` keys ``speaker``, ``session`` and ``turn`` (order within the
conversation) when they come from a transcript; without them the extra signals simply do not fire.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memstore.records import MemoryHit, MemoryRecord

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.storage.vectors import VectorIndex

__all__ = ["PLUS_PRESETS", "ConversationRetriever", "PlusSettings", "query_dates", "strip_names"]

CONTEXT_COLLECTION = "memstore_context_views"


@dataclass(frozen=True)
class PlusSettings:
    """Plain data: how the conversation-aware retriever weighs its signals."""

    fusion: str = "score"            # "score" (normalised scores) | "rrf" (reciprocal rank)
    dense_weight: float = 1.0
    lexical_weight: float = 0.5
    rrf_k: int = 60
    context_vectors: bool = True     # also match the (previous memory + this one) embedding
    neighbour_weight: float = 0.1
    speaker_boost: float = 0.2
    strip_speakers: bool = True
    date_boost: float = 0.1
    candidates: int = 100            # per signal, at least; grows with the limit

    def with_(self, **changes: Any) -> PlusSettings:
        return replace(self, **changes)


_NONE = PlusSettings(fusion="rrf", lexical_weight=1.0, context_vectors=False, neighbour_weight=0.0,
                     speaker_boost=0.0, strip_speakers=False, date_boost=0.0)
#: The ablation ladder of docs/benchmarks.md, each step adding one signal to the one before.
PLUS_PRESETS: dict[str, PlusSettings] = {
    "rrf": _NONE,
    "score": _NONE.with_(fusion="score", lexical_weight=0.5),
    "context": _NONE.with_(fusion="score", lexical_weight=0.5, context_vectors=True),
    "neighbours": _NONE.with_(fusion="score", lexical_weight=0.5, context_vectors=True, neighbour_weight=0.1),
    "speakers": _NONE.with_(fusion="score", lexical_weight=0.5, context_vectors=True, neighbour_weight=0.1,
                            speaker_boost=0.2, strip_speakers=True),
    "plus": PlusSettings(),
}

# ---- query analysis -------------------------------------------------------------------------------

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_DATE = re.compile(
    r"\b(?:(\d{1,2})\s+)?(January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\b\.?(?:\s+(\d{1,2})(?:st|nd|rd|th)?)?,?"
    r"(?:\s+(\d{4}))?", re.I)
_YEAR = re.compile(r"\b(?:in|of|during|since|from)\s+((?:19|20)\d\d)\b", re.I)


def query_dates(query: str) -> list[tuple[int | None, int | None, int | None]]:
    """(year, month, day) triples named in a question; parts not named are None.

    "May" counts as a month only when capitalised or next to a day or year (not the modal verb)."""
    out: list[tuple[int | None, int | None, int | None]] = []
    for m in _DATE.finditer(query):
        d1, mon, d2, year = m.groups()
        if mon.lower() == "may" and not (d1 or d2 or year) and not mon[0].isupper():
            continue
        if mon.lower() == "may" and not (d1 or d2 or year) and m.start() == 0:
            continue  # "May I ..." at the start of a question
        month = _MONTHS.get(mon.lower()) or _MONTHS.get(mon.lower()[:3])
        day = int(d1 or d2) if (d1 or d2) else None
        out.append((int(year) if year else None, month, day))
    for m in _YEAR.finditer(query):
        y = int(m.group(1))
        if not any(o[0] == y for o in out):
            out.append((y, None, None))
    return out


def date_match(dates: Sequence[tuple[int | None, int | None, int | None]], when: datetime | None) -> float:
    """1.0 when ``when`` falls in a named month (or year), 0.5 for the month after (events are often told
    a session later), else 0."""
    if when is None:
        return 0.0
    best = 0.0
    for year, month, _day in dates:
        if year is not None and when.year != year and not (month == 12 and when.year == year + 1):
            continue
        if month is None:
            best = max(best, 1.0 if year == when.year else 0.0)
            continue
        diff = (when.year * 12 + when.month) - ((year or when.year) * 12 + month)
        best = max(best, 1.0 if diff == 0 else 0.5 if diff == 1 else 0.0)
    return best


def strip_names(query: str, names: Iterable[str]) -> str:
    """The query without the given names (and their possessive 's), whitespace folded."""
    out = query
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        out = re.sub(r"\b" + re.escape(name) + r"(?:'s|’s)?\b", " ", out)
    out = re.sub(r"\s+", " ", out).strip()
    return out or query


def named_speakers(query: str, speakers: Iterable[str]) -> list[str]:
    """Speakers whose name (or first name) the query mentions as a word."""
    found = []
    for sp in speakers:
        first = sp.split()[0] if sp.split() else sp
        if re.search(r"\b" + re.escape(sp) + r"\b", query) or re.search(r"\b" + re.escape(first) + r"\b", query):
            found.append(sp)
    return found


# ---- the scope's layout ---------------------------------------------------------------------------

@dataclass
class _Scope:
    records: dict[str, MemoryRecord] = field(default_factory=dict)
    prev: dict[str, str] = field(default_factory=dict)
    next: dict[str, str] = field(default_factory=dict)
    speakers: list[str] = field(default_factory=list)


def _order_key(r: MemoryRecord) -> tuple[Any, ...]:
    turn = r.meta.get("turn")
    return (turn if isinstance(turn, int | float) else float("inf"), r.valid_from or r.created_at, r.pk or 0)


def context_text(rec: MemoryRecord, prev: MemoryRecord | None) -> str:
    """The text of a memory's context view: the memory before it (speaker-tagged) and then its own text."""
    if prev is None:
        return rec.text
    sp = prev.meta.get("speaker")
    return (f"{sp}: {prev.text}" if sp and not prev.text.startswith(str(sp)) else prev.text) + "\n" + rec.text


class ConversationRetriever:
    """Search over one Memory with the signals of :class:`PlusSettings` (see the module docstring)."""

    def __init__(self, mem: Memory, settings: PlusSettings | str = "plus",
                 context_index: VectorIndex | None = None) -> None:
        self.mem = mem
        self.settings = PLUS_PRESETS[settings] if isinstance(settings, str) else settings
        self._context_index = context_index
        self._scopes: dict[tuple[str, str], _Scope] = {}

    @property
    def context_index(self) -> VectorIndex:
        if self._context_index is None:
            from memstore.storage.vectors import ChromaIndex

            cfg = self.mem.config
            self._context_index = ChromaIndex(url=cfg.vector_url, collection=CONTEXT_COLLECTION) if cfg.vector_url \
                else ChromaIndex(path=cfg.resolved_vector_path(), collection=CONTEXT_COLLECTION)
        return self._context_index

    # -- indexing -------------------------------------------------------------------------------------
    def scope(self, user_id: str, namespace: str, refresh: bool = False) -> _Scope:
        key = (user_id, namespace)
        if refresh or key not in self._scopes:
            recs = sorted(self.mem.store.list(user_id, namespace), key=_order_key)
            sc = _Scope(records={r.id: r for r in recs})
            speakers: dict[str, None] = {}
            for a, b in itertools.pairwise(recs):
                if a.meta.get("session") == b.meta.get("session"):
                    sc.next[a.id], sc.prev[b.id] = b.id, a.id
            for r in recs:
                sp = r.meta.get("speaker")
                if isinstance(sp, str) and sp:
                    speakers.setdefault(sp, None)
            sc.speakers = list(speakers)
            self._scopes[key] = sc
        return self._scopes[key]

    def index_context(self, user_id: str, namespace: str, batch: int = 256) -> int:
        """Embeds every memory of the scope with the one before it into the context collection."""
        sc = self.scope(user_id, namespace, refresh=True)
        recs = list(sc.records.values())
        for i in range(0, len(recs), batch):
            part = recs[i:i + batch]
            texts = [context_text(r, sc.records.get(sc.prev.get(r.id, ""))) for r in part]
            vecs = self.mem.store.embedder.embed(texts)
            self.context_index.upsert([r.id for r in part], vecs, [user_id] * len(part), [namespace] * len(part))
        return len(recs)

    # -- search ---------------------------------------------------------------------------------------
    def search(self, query: str, user_id: str, namespace: str = "default", limit: int = 10) -> list[MemoryHit]:
        from memstore.storage.lexical import lexical_search

        st = self.settings
        sc = self.scope(user_id, namespace)
        n = max(st.candidates, limit * 4)
        named = named_speakers(query, sc.speakers)
        dense_query = strip_names(query, sc.speakers) if st.strip_speakers and sc.speakers else query
        store = self.mem.store
        vec = store.embed_query(dense_query)
        views = [store.index.query(vec, user_id, namespace, n)]
        if st.context_vectors:
            views.append(self.context_index.query(vec, user_id, namespace, n))
        lexical = lexical_search(store.engine, user_id, namespace, query, n)

        scores: dict[str, float] = {}
        sources: dict[str, list[str]] = {}
        if st.fusion == "rrf":
            for view in views:
                for rank, (mid, _s) in enumerate(view):
                    scores[mid] = scores.get(mid, 0.0) + st.dense_weight / len(views) / (st.rrf_k + rank + 1)
                    _add(sources, mid, "dense")
            for rank, (mid, _s) in enumerate(lexical):
                scores[mid] = scores.get(mid, 0.0) + st.lexical_weight / (st.rrf_k + rank + 1)
                _add(sources, mid, "lexical")
        else:
            ids = {mid for view in views for mid, _ in view}
            dense: dict[str, float] = {}
            for view in views:
                got = dict(view)
                floor = min(got.values()) if got else 0.0
                for mid in ids:
                    dense[mid] = dense.get(mid, 0.0) + got.get(mid, floor) / len(views)
                    if mid in got:
                        _add(sources, mid, "dense")
            if dense:  # scaled by the best cosine: unlike min-max, independent of the candidate cut-off
                hi = max(dense.values()) or 1.0
                for mid, d in dense.items():
                    scores[mid] = st.dense_weight * d / hi
            top = max((s for _, s in lexical), default=0.0) or 1.0
            for mid, s in lexical:
                scores[mid] = scores.get(mid, 0.0) + st.lexical_weight * s / top
                _add(sources, mid, "lexical")

        if st.neighbour_weight > 0:
            spread = dict(scores)
            for mid, s in scores.items():
                for nb in (sc.prev.get(mid), sc.next.get(mid)):
                    if nb is not None:
                        spread[nb] = spread.get(nb, 0.0) + st.neighbour_weight * s
                        _add(sources, nb, "neighbour")
            scores = spread

        best = max(scores.values(), default=0.0)
        if st.speaker_boost > 0 and len(named) == 1:
            for mid in scores:
                rec = sc.records.get(mid)
                if rec is not None and rec.meta.get("speaker") == named[0]:
                    scores[mid] += st.speaker_boost * best
        dates = query_dates(query) if st.date_boost > 0 else []
        if dates:
            for mid in scores:
                rec = sc.records.get(mid)
                if rec is not None:
                    scores[mid] += st.date_boost * best * date_match(dates, rec.valid_from or rec.created_at)

        missing = [mid for mid in scores if mid not in sc.records]
        records = dict(sc.records)
        if missing:  # written after the scope was read
            records.update(store.get_many(missing, user_id, namespace))
        hits = [MemoryHit(memory=records[mid], score=round(s, 6), sources=sources.get(mid, []))
                for mid, s in scores.items() if mid in records and records[mid].invalid_at is None]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:limit]


def _add(sources: dict[str, list[str]], mid: str, what: str) -> None:
    lst = sources.setdefault(mid, [])
    if what not in lst:
        lst.append(what)
