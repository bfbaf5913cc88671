"""Lexical (keyword) search over memory text: SQLite FTS5 BM25 or PostgreSQL full-text search.

The query string is reduced to its content words and OR-ed, so natural-language questions work.
Results are always joined back to ``memories`` and filtered by scope in SQL.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, text

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your yours
    yourself yourselves tell know think remember did does ever
    """.split()
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def query_terms(query: str, max_terms: int = 24) -> list[str]:
    """Content words of a query, lowercased, deduplicated, in order."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(query.lower()):
        if w in STOPWORDS or (len(w) < 2 and not w.isdigit()):
            continue
        seen.setdefault(w, None)
    return list(seen)[:max_terms]


def pool_clause(pool: str | None) -> str:
    """The SQL condition (on ``memories m``) that keeps one retrieval pool, "" for both."""
    if pool is None:
        return ""
    if pool == "facts":
        return " AND m.kind <> 'episode'"
    if pool == "episodes":
        return " AND m.kind = 'episode'"
    raise ValueError(f"pool must be facts, episodes or None, not {pool!r}")


def fts_scope_key(user_id: str, namespace: str) -> str:
    """The value of the FTS5 ``scope`` column: one quoted-safe word per (user_id, namespace)."""
    return "s" + user_id.encode("utf-8").hex() + "x" + namespace.encode("utf-8").hex()


def lexical_search(
    engine: Engine, user_id: str, namespace: str, query: str, limit: int, include_invalid: bool = False,
    pool: str | None = None,
) -> list[tuple[str, float]]:
    """(memory id, score) pairs, best first; score is positive, higher is better. ``pool``: "facts" (every
    kind but episodes), "episodes" (past-conversation excerpts) or None (both)."""
    return _search(engine, user_id, namespace, query, limit, include_invalid, pool)


def lexical_search_pools(
    engine: Engine, user_id: str, namespace: str, query: str, limit: int, include_invalid: bool = False,
) -> dict[str, list[tuple[str, float]]]:
    """:func:`lexical_search` for both pools at once, in one query: ``{"facts": [...], "episodes": [...]}``,
    each the same list its own ``pool=`` search returns (up to ``limit`` each)."""
    if engine.dialect.name not in ("sqlite", "postgresql"):
        return {p: _search(engine, user_id, namespace, query, limit, include_invalid, p)
                for p in ("facts", "episodes")}
    out: dict[str, list[tuple[str, float]]] = {"facts": [], "episodes": []}
    for mid, score, kind in _search(engine, user_id, namespace, query, limit, include_invalid, None, split=True):
        lst = out["episodes" if kind == "episode" else "facts"]
        if len(lst) < limit:
            lst.append((mid, score))
    return out


def _search(engine: Engine, user_id: str, namespace: str, query: str, limit: int, include_invalid: bool,
            pool: str | None, split: bool = False) -> list[Any]:
    """``split``: both pools, up to ``limit`` of each, as (id, score, kind), best first; the SQLite inner
    ranking is the one a single pool's search uses, so each pool's list is the same as its own search's."""
    terms = query_terms(query)
    if not terms:
        return []
    valid = ("" if include_invalid else " AND m.invalid_at IS NULL") + pool_clause(pool)
    kind = ", m.kind" if split else ""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            match = f'scope:"{fts_scope_key(user_id, namespace)}" AND (' + " OR ".join(
                '"' + t.replace('"', '""') + '"' for t in terms
            ) + ")"
            inner = (2 * limit + 20) * (1 if pool is None and not split else 3)
            # rank inside FTS5 first (its scope column already restricts the match to the scope), then join
            # the best few to their rows: ranking the joined rows instead cost 40% more at 10k memories. The
            # inner limit leaves room for invalidated memories dropped by the outer filter.
            rows = conn.execute(
                text(
                    "SELECT m.id, f.score" + kind + " FROM (SELECT rowid, -bm25(memory_fts, 0.0, 1.0) AS score "
                    "FROM memory_fts WHERE memory_fts MATCH :q ORDER BY bm25(memory_fts, 0.0, 1.0) LIMIT :inner) f "
                    "JOIN memories m ON m.pk = f.rowid WHERE m.user_id = :u AND m.namespace = :ns" + valid +
                    " ORDER BY f.score DESC LIMIT :k"
                ),
                # split: every joined row of the inner ranking, which the caller cuts per pool
                {"q": match, "u": user_id, "ns": namespace, "k": inner if split else limit, "inner": inner},
            ).all()
        elif engine.dialect.name == "postgresql":
            tsq = " | ".join(re.sub(r"[^\w]", "", t) for t in terms if re.sub(r"[^\w]", "", t))
            if not tsq:
                return []
            ranked = ("SELECT m.id, ts_rank_cd(m.tsv, q) AS score" + kind + " FROM memories m, "
                      "to_tsquery('english', :q) q WHERE m.tsv @@ q AND m.user_id = :u AND m.namespace = :ns" + valid)
            if split:  # the best ``limit`` of each pool
                ranked = ("SELECT id, score, kind FROM (SELECT r.*, row_number() OVER (PARTITION BY "
                          "r.kind = 'episode' ORDER BY r.score DESC) AS n FROM (" + ranked + ") r) t WHERE n <= :k")
            rows = conn.execute(text(ranked + " ORDER BY score DESC" + ("" if split else " LIMIT :k")),
                                {"q": tsq, "u": user_id, "ns": namespace, "k": limit}).all()
        else:  # any other database: a plain LIKE scan, correct but slow
            clauses = " OR ".join(f"lower(m.text) LIKE :t{i}" for i in range(len(terms)))
            params: dict[str, object] = {f"t{i}": f"%{t}%" for i, t in enumerate(terms)}
            params.update({"u": user_id, "ns": namespace, "k": limit})
            rows = conn.execute(
                text(f"SELECT m.id, 1.0 FROM memories m WHERE ({clauses}) AND m.user_id = :u "
                     "AND m.namespace = :ns" + valid + " LIMIT :k"),
                params,
            ).all()
    return [(r[0], float(r[1]), r[2]) if split else (r[0], float(r[1])) for r in rows]
