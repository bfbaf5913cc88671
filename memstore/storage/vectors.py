"""VectorIndex protocol and its chroma implementation.

The index holds only (id, embedding, user_id, namespace); SQL is the source of truth and the index can
be rebuilt from it at any time. chromadb is imported on first use.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from memstore.errors import ConfigError, StorageError


@runtime_checkable
class VectorIndex(Protocol):
    """The persistent vector index. An implementation may also offer ``vectors(ids) -> {id: vector}``:
    then memstore keeps each searched scope's vectors in memory and searches them exactly (dense.py)."""

    def upsert(self, ids: list[str], embeddings: np.ndarray, user_ids: list[str], namespaces: list[str]) -> None:
        ...

    def delete(self, ids: list[str]) -> None: ...

    def query(self, embedding: np.ndarray, user_id: str, namespace: str, limit: int) -> list[tuple[str, float]]:
        """(id, cosine similarity) pairs of the scope, best first."""
        ...

    def ids(self, user_id: str | None = None, namespace: str | None = None) -> set[str]: ...

    def count(self) -> int: ...

    def reset(self) -> None: ...


_T = TypeVar("_T")
_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def _client(path: Path | None, url: str | None):  # type: ignore[no-untyped-def]
    key = url or str(path)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        try:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False, allow_reset=True)
            if url:
                u = urlparse(url)
                client = chromadb.HttpClient(
                    host=u.hostname or "127.0.0.1", port=u.port or (443 if u.scheme == "https" else 8000),
                    ssl=u.scheme == "https", settings=settings,
                )
            else:
                assert path is not None
                path.mkdir(parents=True, exist_ok=True)
                with _interprocess_lock(path):  # processes opening a fresh directory at once race in chroma
                    client = chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:
            raise ConfigError(f"cannot open the vector index at {key}: {exc}") from exc
        _clients[key] = client
        return client


class ChromaIndex:
    """A chroma collection, embedded (``path``) or on a chroma server (``url``)."""

    def __init__(self, path: Path | None = None, url: str | None = None,
                 collection: str = "memstore_memories") -> None:
        if (path is None) == (url is None):
            raise ConfigError("ChromaIndex needs exactly one of path or url")
        if len(collection) < 3:
            raise ConfigError("chroma collection names need at least 3 characters")
        self._path, self._url, self._name = path, url, collection
        self._col = None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return self._url or str(self._path)

    def _collection(self):  # type: ignore[no-untyped-def]
        if self._col is None:
            with self._lock:
                if self._col is None:
                    client = _client(self._path, self._url)
                    for attempt in range(3):  # another process may be creating the same collection
                        try:
                            with _interprocess_lock(self._path) if self._path else contextlib.nullcontext():
                                self._col = client.get_or_create_collection(
                                    self._name, embedding_function=None,
                                    configuration={"hnsw": {"space": "cosine", "ef_search": 100}},
                                )
                            break
                        except Exception as exc:
                            if attempt == 2:
                                raise StorageError(f"cannot open chroma collection {self._name!r}: {exc}") from exc
                            time.sleep(0.1 * (attempt + 1))
        return self._col

    def _run(self, op: Callable[[Any], _T]) -> _T:
        """Runs ``op(collection)``. When the collection was dropped under us (``reset`` by another process
        sharing the chroma server, e.g. ``memstore reindex``), reopens it by name and runs ``op`` once more."""
        col = self._collection()
        try:
            return op(col)
        except Exception as exc:
            if not _is_missing_collection(exc):
                raise
            with self._lock:
                if self._col is col:
                    self._col = None
            return op(self._collection())

    def upsert(self, ids: list[str], embeddings: np.ndarray, user_ids: list[str], namespaces: list[str]) -> None:
        if not ids:
            return
        metas = [{"user_id": u, "namespace": n} for u, n in zip(user_ids, namespaces, strict=True)]
        step = 2000

        def op(col: Any) -> None:
            for i in range(0, len(ids), step):
                col.upsert(ids=ids[i:i + step], embeddings=np.asarray(embeddings[i:i + step]),
                           metadatas=metas[i:i + step])

        try:
            self._run(op)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"vector index write failed: {exc}") from exc

    def delete(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            self._run(lambda col: col.delete(ids=ids))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"vector index delete failed: {exc}") from exc

    def query(self, embedding: np.ndarray, user_id: str, namespace: str, limit: int) -> list[tuple[str, float]]:
        try:
            res = self._run(lambda col: col.query(
                query_embeddings=[np.asarray(embedding, dtype=np.float32)], n_results=limit,
                where={"$and": [{"user_id": user_id}, {"namespace": namespace}]}, include=["distances"],
            ))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"vector search failed: {exc}") from exc
        ids = res["ids"][0] if res["ids"] else []
        dists = res["distances"][0] if res.get("distances") else []
        return [(i, 1.0 - float(d)) for i, d in zip(ids, dists, strict=False)]

    def vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``ids`` (those the index has)."""
        if not ids:
            return {}
        try:
            res = self._run(lambda col: col.get(ids=list(ids), include=["embeddings"]))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"vector index read failed: {exc}") from exc
        embs = res.get("embeddings")
        if embs is None:
            return {}
        return {i: np.asarray(e, dtype=np.float32) for i, e in zip(res["ids"], embs, strict=False)}

    def ids(self, user_id: str | None = None, namespace: str | None = None) -> set[str]:
        conds = [{"user_id": user_id}] if user_id is not None else []
        if namespace is not None:
            conds.append({"namespace": namespace})
        where = None if not conds else conds[0] if len(conds) == 1 else {"$and": conds}

        def op(col: Any) -> set[str]:
            out: set[str] = set()
            offset, page = 0, 5000
            while True:
                res = col.get(where=where, include=[], limit=page, offset=offset)
                out.update(res["ids"])
                if len(res["ids"]) < page:
                    return out
                offset += page

        return self._run(op)

    def count(self) -> int:
        return int(self._run(lambda col: col.count()))

    def reset(self) -> None:
        """Drops and recreates the collection (used by reindex)."""
        client = _client(self._path, self._url)
        with self._lock:
            with contextlib.suppress(Exception):
                client.delete_collection(self._name)
            self._col = None


def _is_missing_collection(exc: Exception) -> bool:
    """chromadb's error for a collection id that no longer exists (dropped by another client)."""
    return type(exc).__name__ in {"NotFoundError", "InvalidCollectionException"} or "does not exist" in str(exc)


@contextlib.contextmanager
def _interprocess_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on a file in ``directory`` (POSIX), held while chroma creates its files."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".memstore-open.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
