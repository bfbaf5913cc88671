"""Exact dense search over one scope's vectors, held in memory and kept in step with SQL.

Why: chroma applies a metadata filter (our ``user_id`` / ``namespace`` scope) by scanning the whole
collection, so a scoped query costs about 35 ms at 10,000 vectors and 80 ms at 100,000 on a 2-core
machine, however few of them belong to the scope (docs/benchmarks.md). A scope's vectors fit in memory
(10,000 x 384 float32 is 15 MB) and a matrix product over them takes a fraction of a millisecond, so
searches are served from a per-process LRU cache of scope matrices. chroma stays the persistent index: the
cache is loaded from it, and it answers a scope's queries while that scope is loading.

Freshness, across threads and processes: every vector write changes the scope's random token in the
``scope_versions`` table, in the transaction that marks the rows indexed (:func:`bump_scopes`, called by
memstore/store.py). A search reads the token (one primary-key lookup); when it moved, the cache compares
the scope's ``(id, content_hash)`` pairs in SQL with its own and fetches only the vectors that changed.
A vector is always written before the token that announces it, so a reader never caches a vector older
than the text SQL holds for it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, bindparam, delete, insert, update
from sqlmodel import Session, col, select

from memstore import metrics
from memstore.records import EPISODE, MemoryRecord, MemoryVector, ScopeVersion

log = logging.getLogger("memstore")

ScopeKey = tuple[str, str]

ROW_OVERHEAD_BYTES = 200  # per cached vector besides the vector: its id, hash, row entry, conversation links
SYNC_LOAD_LIMIT = 2000   # scopes up to this many vectors load inline (cheaper than one filtered chroma query)
FETCH_PAGE = 1000        # ids per chroma get
SQL_PAGE = 900           # ids per SQL IN (...) list
REVALIDATE_S = 60.0      # an entry is diffed against SQL at least this often, token or not (a writer that
                         # bumps no token, e.g. an older memstore sharing the store, is caught up with)


def bump_scopes(session: Session, scopes: Iterable[ScopeKey]) -> None:
    """Gives each scope a new random token, inside the caller's transaction (sorted, so that concurrent
    writers on PostgreSQL lock the rows in one order)."""
    dialect = session.get_bind().dialect.name
    for user_id, namespace in sorted(set(scopes)):
        token = uuid.uuid4().hex
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(ScopeVersion).values(user_id=user_id, namespace=namespace, token=token)
            session.exec(stmt.on_conflict_do_update(  # type: ignore[call-overload]
                index_elements=["user_id", "namespace"], set_={"token": token}))
        else:
            res = session.exec(update(ScopeVersion).where(  # type: ignore[call-overload]
                col(ScopeVersion.user_id) == user_id, col(ScopeVersion.namespace) == namespace).values(token=token))
            if not res.rowcount:
                session.add(ScopeVersion(user_id=user_id, namespace=namespace, token=token))


def forget_scopes(session: Session, user_id: str, namespace: str | None = None) -> None:
    """Drops the tokens of a forgotten user (absent reads as a change to every cache that held one)."""
    q = delete(ScopeVersion).where(col(ScopeVersion.user_id) == user_id)
    if namespace is not None:
        q = q.where(col(ScopeVersion.namespace) == namespace)
    session.exec(q)  # type: ignore[call-overload]


def write_vectors(session: Session, recs: Iterable[MemoryRecord], vecs: np.ndarray) -> None:
    """Stores each memory's vector with the hash of the text it embeds (``memory_vectors``), replacing any
    older one, inside the caller's transaction (the one that marks the memories indexed)."""
    recs = list(recs)
    if not recs:
        return
    ids = [r.id for r in recs]
    session.exec(delete(MemoryVector).where(col(MemoryVector.memory_id).in_(ids)))  # type: ignore[call-overload]
    arr = np.asarray(vecs, dtype=np.float32)
    # one statement with a parameter list (compiled once per process), not a VALUES list per batch (compiled
    # again for each: three times the cost of the insert at 50 rows)
    session.execute(insert(MemoryVector), [
        {"memory_id": r.id, "user_id": r.user_id, "namespace": r.namespace, "content_hash": r.content_hash,
         "vector": arr[n].tobytes()} for n, r in enumerate(recs)])


def delete_vectors(session: Session, ids: Iterable[str]) -> None:
    """Drops the stored vectors of ``ids`` inside the caller's transaction."""
    ids = list(ids)
    for i in range(0, len(ids), SQL_PAGE):
        session.exec(delete(MemoryVector).where(  # type: ignore[call-overload]
            col(MemoryVector.memory_id).in_(ids[i:i + SQL_PAGE])))


def read_vectors(engine: Engine, want: dict[str, str]) -> dict[str, np.ndarray]:
    """The stored vectors of ``want``'s ids whose text hash still matches (id -> float32 vector)."""
    out: dict[str, np.ndarray] = {}
    ids = list(want)
    with Session(engine) as s:
        for i in range(0, len(ids), SQL_PAGE):
            for mid, h, blob in s.exec(select(MemoryVector.memory_id, MemoryVector.content_hash,
                                              MemoryVector.vector).where(
                    col(MemoryVector.memory_id).in_(ids[i:i + SQL_PAGE]))).all():
                if want.get(mid) == h and blob:
                    out[mid] = np.frombuffer(blob, dtype=np.float32)
    return out


_TOKEN = select(ScopeVersion.token).where(ScopeVersion.user_id == bindparam("u"),
                                          ScopeVersion.namespace == bindparam("ns"))


def scope_version(engine: Engine, user_id: str, namespace: str) -> str | None:
    """The scope's current version token (``scope_versions``), or None if it has none. Every search asks,
    so the statement is built once and runs on a plain connection (a fifth of the cost through a Session)."""
    with engine.connect() as conn:
        return conn.execute(_TOKEN, {"u": user_id, "ns": namespace}).scalar()


Provenance = tuple[str | None, int | None, str | None]  # (conversation, position, speaker)


@dataclass(frozen=True)
class _Entry:
    token: str | None
    ids: list[str]
    hashes: dict[str, str]     # id -> content_hash of the text its vector embeds
    matrix: np.ndarray         # (len(ids), dim), rows L2-normalised
    loaded_at: float           # time.monotonic() of the last diff against SQL
    prev: np.ndarray           # row of the memory before each one in its conversation, -1 if none
    next: np.ndarray           # row of the memory after it, -1 if none
    ctx_norm: np.ndarray       # |v + v_prev| per row (1 where there is no previous memory)
    speakers: tuple[str, ...]  # who speaks in the scope's conversations (provenance), most frequent first
    row: dict[str, int]        # id -> its row in ``matrix``
    near: dict[str, tuple[str, ...]]  # id -> the memories before and after it, for those that have any
                                      # (built once: every search looks its candidates up)
    episode: np.ndarray        # True for the rows of episodes (past-conversation excerpts): their own pool

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + ROW_OVERHEAD_BYTES * len(self.ids)


def _layout(ids: list[str], matrix: np.ndarray, provenance: dict[str, Provenance],
            episodes: frozenset[str] = frozenset()) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Links each memory to the one before and after it in its conversation (by position) and pool (facts
    link to facts, episodes to episodes), the norms of the context views (this vector + the previous one),
    and the scope's speakers."""
    n = len(ids)
    prev = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    placed = sorted((mid in episodes, c, p, i) for i, mid in enumerate(ids)
                    for c, p, _s in [provenance.get(mid, (None, None, None))] if c is not None and p is not None)
    for (e1, c1, _p1, a), (e2, c2, _p2, b) in itertools.pairwise(placed):
        if c1 == c2 and e1 == e2:
            prev[b], nxt[a] = a, b
    ctx_norm = np.ones(n, dtype=np.float32)
    has = prev >= 0
    if has.any():
        ctx_norm[has] = np.linalg.norm(matrix[has] + matrix[prev[has]], axis=1)
        ctx_norm[ctx_norm == 0] = 1.0
    counts: dict[str, int] = {}
    for _c, _p, s in provenance.values():
        if s:
            counts[s] = counts.get(s, 0) + 1
    return prev, nxt, ctx_norm, tuple(sorted(counts, key=lambda s: -counts[s])[:50])


class ScopeVectorCache:
    """An LRU of scope matrices under a byte budget. ``query`` returns None when it cannot answer (the
    scope is too big, still loading, or the index has no vectors to give): the caller asks the index."""

    def __init__(self, engine: Engine, index: object, max_bytes: int, max_scope_vectors: int = 200_000,
                 sync_load_limit: int = SYNC_LOAD_LIMIT) -> None:
        self.engine = engine
        self.index = index
        self.max_bytes = max_bytes
        self.max_scope_vectors = max_scope_vectors
        self.sync_load_limit = sync_load_limit
        self._entries: OrderedDict[ScopeKey, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: set[ScopeKey] = set()
        self._too_big: dict[ScopeKey, str | None] = {}   # scope -> token when it was found too big

    # ---- reads ----------------------------------------------------------------------------------------
    def query(self, vec: np.ndarray, user_id: str, namespace: str, limit: int,
              context: float = 0.0, pool: str | None = None) -> list[tuple[str, float]] | None:
        """(id, similarity) of the scope's ``limit`` nearest memories, or None when the cache cannot answer.
        ``context`` (0..1): that share of the similarity comes from the memory's context view (its vector plus
        the previous memory's in the same conversation), so a reply is found by the question it answers.
        ``pool``: "facts", "episodes" or None (both)."""
        found = self.query_pools(vec, user_id, namespace, limit, context, (pool,))
        return None if found is None else found[pool]

    def query_pools(self, vec: np.ndarray, user_id: str, namespace: str, limit: int, context: float = 0.0,
                    pools: tuple[str | None, ...] = ("facts", "episodes"),
                    ) -> dict[str | None, list[tuple[str, float]]] | None:
        """:meth:`query` for several pools from one pass over the scope's vectors (``{"facts": [...],
        "episodes": [...]}``, up to ``limit`` each), or None when the cache cannot answer."""
        entry = self._current(user_id, namespace)
        if entry is None:
            metrics.inc("memstore_vector_cache_misses_total")
            return None
        metrics.inc("memstore_vector_cache_hits_total")
        sims = _similarities(entry, vec, context)
        return {p: [] if sims is None else _best(entry, sims, limit, p) for p in pools}

    def neighbours(self, user_id: str, namespace: str, ids: list[str]) -> dict[str, tuple[str, ...]] | None:
        """The memories just before and after each given one in its conversation (as of the last query),
        or None when the scope is not held."""
        with self._lock:
            entry = self._entries.get((user_id, namespace))
        if entry is None:
            return None
        row, near = entry.row, entry.near
        return {mid: near.get(mid, ()) for mid in ids if mid in row}

    def speakers(self, user_id: str, namespace: str) -> tuple[str, ...] | None:
        """Who speaks in the scope's conversations (as of the last query), or None when it is not held."""
        with self._lock:
            entry = self._entries.get((user_id, namespace))
        return None if entry is None else entry.speakers

    def _current(self, user_id: str, namespace: str) -> _Entry | None:
        scope = (user_id, namespace)
        token = scope_version(self.engine, user_id, namespace)
        with self._lock:
            entry = self._entries.get(scope)
            if entry is not None:
                self._entries.move_to_end(scope)
            if scope in self._loading or (scope in self._too_big and self._too_big[scope] == token):
                return None
        if entry is None or entry.token != token or time.monotonic() - entry.loaded_at > REVALIDATE_S:
            entry = self._refresh(scope, token, entry)
        return entry

    def holds(self, user_id: str, namespace: str) -> bool:
        """Whether the scope's vectors are in memory now (as of their last refresh)."""
        with self._lock:
            return (user_id, namespace) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._too_big.clear()
            self._bytes = 0

    @property
    def size(self) -> tuple[int, int]:
        """(scopes cached, bytes used)."""
        with self._lock:
            return len(self._entries), self._bytes

    # ---- loading --------------------------------------------------------------------------------------
    def _refresh(self, scope: ScopeKey, token: str | None, old: _Entry | None) -> _Entry | None:
        """Brings the scope up to date with SQL: a diff against ``old`` when there is one, else a load
        (inline for small scopes, in the background for big ones)."""
        want, provenance, episodes = self._scope_rows(scope)
        dim = old.matrix.shape[1] if old is not None and old.matrix.size else 0
        if len(want) > self.max_scope_vectors or (dim and _estimate(len(want), dim) > self.max_bytes):
            self._mark_too_big(scope, token)
            return None
        if old is None:
            if len(want) > self.sync_load_limit:
                self._load_later(scope)
                return None
            return self._build(scope, token, want, provenance, {}, None, episodes)
        keep = {i: h for i, h in old.hashes.items() if want.get(i) == h}
        return self._build(scope, token, want, provenance, keep, old, episodes)

    def _scope_rows(self, scope: ScopeKey) -> tuple[dict[str, str], dict[str, Provenance], frozenset[str]]:
        """id -> content_hash of the scope's indexed memories (invalidated ones too: searches may ask),
        id -> (conversation, position, speaker) of those that carry provenance, and the ids of episodes."""
        with Session(self.engine) as s:
            rows = s.exec(select(MemoryRecord.id, MemoryRecord.content_hash, MemoryRecord.conversation,
                                 MemoryRecord.position, MemoryRecord.speaker, MemoryRecord.kind).where(
                MemoryRecord.user_id == scope[0], MemoryRecord.namespace == scope[1],
                col(MemoryRecord.indexed).is_(True))).all()
        return ({i: h for i, h, _c, _p, _s, _k in rows},
                {i: (c, p, s) for i, _h, c, p, s, _k in rows if c is not None or s is not None},
                frozenset(i for i, _h, _c, _p, _s, k in rows if k == EPISODE))

    def _build(self, scope: ScopeKey, token: str | None, want: dict[str, str], provenance: dict[str, Provenance],
               keep: dict[str, str], old: _Entry | None, episodes: frozenset[str] = frozenset()) -> _Entry | None:
        missing = [i for i in want if i not in keep]
        fetched = self._fetch({i: want[i] for i in missing}) if missing else {}
        if fetched is None:
            return None
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        if old is not None and keep:
            rows = [old.row[i] for i in keep]
            ids.extend(keep)
            vecs.append(old.matrix[rows])
        got = [i for i in missing if i in fetched]  # a vector gone meanwhile is picked up by the next diff
        if got:
            ids.extend(got)
            vecs.append(_normalise(np.stack([fetched[i] for i in got])))
        dim = vecs[0].shape[1] if vecs else 0
        if any(v.shape[1] != dim for v in vecs):  # the embedding model changed under us: start over
            return self._build(scope, token, want, provenance, {}, None, episodes) if old is not None else None
        matrix = np.concatenate(vecs) if vecs else np.zeros((0, dim), dtype=np.float32)
        prev, nxt, ctx_norm, speakers = _layout(ids, matrix, provenance, episodes)
        entry = _Entry(token=token, ids=ids, hashes={i: want[i] for i in ids}, matrix=matrix,
                       loaded_at=time.monotonic(), prev=prev, next=nxt, ctx_norm=ctx_norm, speakers=speakers,
                       row={mid: n for n, mid in enumerate(ids)}, near=_near(ids, prev, nxt),
                       episode=np.fromiter((i in episodes for i in ids), dtype=bool, count=len(ids)))
        if entry.nbytes > self.max_bytes:  # would evict everything else and still not fit
            self._mark_too_big(scope, token)
            return None
        self._put(scope, entry)
        return entry

    def _mark_too_big(self, scope: ScopeKey, token: str | None) -> None:
        with self._lock:
            self._too_big[scope] = token
            self._drop(scope)

    def _fetch(self, want: dict[str, str]) -> dict[str, np.ndarray] | None:
        """The vectors of ``want`` (id -> content hash): from SQL (``memory_vectors``), and those SQL lacks
        (memories indexed before it kept them) from the index, copied into SQL in the background so that
        the next process finds them there. None when some are in neither place and the index cannot say."""
        try:
            out = read_vectors(self.engine, want)
        except Exception as exc:  # e.g. a store opened by an older memstore without the table
            log.debug("vector cache read from SQL failed: %s", exc)
            out = {}
        rest = [i for i in want if i not in out]
        if not rest:
            return out
        getter = getattr(self.index, "vectors", None)
        if getter is None:
            return out if out else None
        found: dict[str, np.ndarray] = {}
        try:
            for i in range(0, len(rest), FETCH_PAGE):
                found.update(getter(rest[i:i + FETCH_PAGE]))
        except Exception as exc:  # the index is down: the caller's index query reports it
            log.debug("vector cache fetch failed: %s", exc)
            return None
        if found:
            _copy_later(self.engine, {i: (want[i], v) for i, v in found.items()})
        out.update(found)
        return out

    def _put(self, scope: ScopeKey, entry: _Entry) -> None:
        with self._lock:
            self._drop(scope)
            self._too_big.pop(scope, None)
            self._entries[scope] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _old_scope, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def _drop(self, scope: ScopeKey) -> None:
        entry = self._entries.pop(scope, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def _load_later(self, scope: ScopeKey) -> None:
        with self._lock:
            if scope in self._loading:
                return
            self._loading.add(scope)
        _loader().put((weakref.ref(self), scope))

    def _load_now(self, scope: ScopeKey) -> None:
        try:
            token = scope_version(self.engine, *scope)
            with self._lock:
                current = self._entries.get(scope)
            if current is None or current.token != token:
                want, provenance, episodes = self._scope_rows(scope)
                self._build(scope, token, want, provenance, {}, None, episodes)
        except Exception as exc:
            log.debug("vector cache load of a scope failed: %s", exc)
        finally:
            with self._lock:
                self._loading.discard(scope)


def _copy_later(engine: Engine, vectors: dict[str, tuple[str, np.ndarray]]) -> None:
    """Copies vectors read from the index into ``memory_vectors`` off the caller's thread (best effort: a
    failure only means the index is asked again next time). A memory whose text changed meanwhile is
    skipped, and the index's own write replaces the copy."""
    def run() -> None:
        ids = list(vectors)
        try:
            for i in range(0, len(ids), SQL_PAGE):
                page = ids[i:i + SQL_PAGE]
                with Session(engine) as s:
                    rows = s.exec(select(MemoryRecord).where(col(MemoryRecord.id).in_(page))).all()
                    recs = [r for r in rows if r.content_hash == vectors[r.id][0]]
                    have = set(s.exec(select(MemoryVector.memory_id).where(
                        col(MemoryVector.memory_id).in_([r.id for r in recs]))).all())
                    recs = [r for r in recs if r.id not in have]
                    if recs:
                        write_vectors(s, recs, np.stack([vectors[r.id][1] for r in recs]))
                        s.commit()
        except Exception as exc:
            log.debug("copying vectors into SQL failed: %s", exc)

    threading.Thread(target=run, name="memstore-vector-copy", daemon=True).start()


def _near(ids: list[str], prev: np.ndarray, nxt: np.ndarray) -> dict[str, tuple[str, ...]]:
    """id -> (the memory before it, the memory after it) in its conversation, for rows that have either."""
    out: dict[str, tuple[str, ...]] = {}
    for n in np.flatnonzero((prev >= 0) | (nxt >= 0)).tolist():
        out[ids[n]] = tuple(ids[j] for j in (int(prev[n]), int(nxt[n])) if j >= 0)
    return out


def _estimate(n: int, dim: int) -> int:
    return n * (dim * 4 + ROW_OVERHEAD_BYTES)


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms


def _similarities(entry: _Entry, vec: np.ndarray, context: float) -> np.ndarray | None:
    """Each row's similarity to the query (with its context view's share), None for an empty scope or a
    query of another dimension."""
    if not entry.ids:
        return None
    q = np.asarray(vec, dtype=np.float32).reshape(-1)
    if q.shape[0] != entry.matrix.shape[1]:
        return None
    n = float(np.linalg.norm(q))
    # einsum, not ``@``: a BLAS matrix-vector product wakes OpenBLAS's thread pool, whose spinning threads
    # then starve torch's (the next query embedding measured 10x slower on 2 cores); einsum's plain loop is
    # single-threaded and takes ~0.6 ms for 10,000 x 384
    sims = np.einsum("ij,j->i", entry.matrix, q / n if n else q)
    if context > 0:
        has = entry.prev >= 0
        ctx = sims.copy()
        ctx[has] = (sims[has] + sims[entry.prev[has]]) / entry.ctx_norm[has]
        sims = (1 - context) * sims + context * ctx
    return sims


def _best(entry: _Entry, sims: np.ndarray, limit: int, pool: str | None) -> list[tuple[str, float]]:
    if limit <= 0:
        return []
    if pool is not None:  # the other pool's rows can never be chosen
        keep = entry.episode if pool == "episodes" else ~entry.episode
        if not keep.any():
            return []
        sims = np.where(keep, sims, -np.inf)
        limit = min(limit, int(keep.sum()))
    k = min(limit, len(sims))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    return [(entry.ids[i], float(sims[i])) for i in top]


# ---- the background loader: one daemon thread per process, shared by every cache ---------------------

_queue: queue.Queue[tuple[weakref.ref[ScopeVectorCache], ScopeKey]] | None = None
_queue_lock = threading.Lock()


def _loader() -> queue.Queue[tuple[weakref.ref[ScopeVectorCache], ScopeKey]]:
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = queue.Queue()
            threading.Thread(target=_run, args=(_queue,), name="memstore-vector-cache", daemon=True).start()
        return _queue


def _run(q: queue.Queue[tuple[weakref.ref[ScopeVectorCache], ScopeKey]]) -> None:
    while True:
        ref, scope = q.get()
        cache = ref()
        if cache is not None:
            cache._load_now(scope)
        del cache
