"""A sentence-transformers model exported once to ONNX and run by onnxruntime, with no torch at query time.

The export (``torch.onnx.export``, the TorchScript exporter) happens on first use, or ahead of time through
``memstore doctor --export-embedder``, into a cache folder: ``$MEMSTORE_ONNX_CACHE``, else
``$XDG_CACHE_HOME/memstore/onnx``, else ``~/.cache/memstore/onnx``. Each export is a folder named by a key
over the model folder's content (file names, sizes and SHA-256s, remembered per file so that a load only
stats them) and the torch / transformers / sentence-transformers / onnxruntime / onnx versions, so a changed
model or an upgrade exports again, and the same model in another virtualenv uses the same export. A folder
is written under a temporary name and renamed into place when it is complete, and only after its vectors
matched sentence-transformers' on a fixed probe set (cosine >= ``MIN_COSINE``). Loading checks the folder again (the
manifest; the file size, and its mtime or else its SHA-256; the probe vectors recomputed): a damaged export
is thrown away and redone. Every load touches the folder's ``.last_used``; a new export deletes the same
model's other exports (older versions, older key formats) that no process loaded for 30 days (:func:`prune`).

At query time: ``tokenizers`` (the model's own fast tokenizer, saved as tokenizer.json), padding to the
longest text of the batch, truncation at the model's ``max_seq_length``, the ONNX graph for the transformer,
then mean (or CLS) pooling over the attention mask and L2 normalisation in numpy.

A model whose modules are not [Transformer, Pooling (mean or CLS), Normalize?] cannot be exported
(:class:`NotExportable`); :class:`memstore.storage.embed.SentenceTransformerEmbedder` then runs it on torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("memstore")

FORMAT = 1
MIN_COSINE = 0.9999
ONNX_FILE, TOKENIZER_FILE, MANIFEST_FILE = "model.onnx", "tokenizer.json", "manifest.json"
LAST_USED_FILE = ".last_used"  # touched by every load: what pruning goes by
DIGESTS_FILE = "digests.json"  # in the cache root: model file -> [size, mtime_ns, sha256] (cache_key)
PRUNE_AFTER_DAYS = 30  # an export of the same model unused this long is deleted when a new one is made
VERSIONED = ("torch", "transformers", "sentence-transformers", "onnxruntime", "onnx")
PROBES: tuple[str, ...] = (
    "I play the cello in a community orchestra.",
    "hello",
    "",
    "  What did my sister say about moving to Lisbon?  ",
    "Allergic to peanuts; prefers oat milk. Café, naïve, Zürich, 東京, emoji 🎻!",
    "My manager switched to a standing desk last week and wants tips. " * 30,  # longer than 256 tokens
    "Reply in British English, no bullet points, and keep answers under 120 words.",
    "q",
)
exports_done = 0  # exports this process has written (the tests read it: a reused cache does not export)


class NotExportable(Exception):
    """The model cannot run on onnxruntime here (its shape, a failed export, or a vector mismatch)."""


class DamagedExport(Exception):
    """A cache folder that is incomplete, corrupt, or from another model or version: it is exported again."""


def cache_root() -> Path:
    """Where exports live: ``$MEMSTORE_ONNX_CACHE``, else ``$XDG_CACHE_HOME/memstore/onnx``, else
    ``~/.cache/memstore/onnx`` (read at call time)."""
    env = os.environ.get("MEMSTORE_ONNX_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "memstore" / "onnx"


def resolve_model_dir(ref: str) -> Path | None:
    """The local folder of a model path or a hub name already in the HF cache (nothing is downloaded), or None."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p.resolve()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of sentence-transformers
        return None
    for repo in ([ref] if "/" in ref else [ref, f"sentence-transformers/{ref}"]):
        try:
            return Path(snapshot_download(repo, local_files_only=True)).resolve()
        except Exception:
            continue
    return None


def versions() -> dict[str, str | None]:
    """The versions an export depends on, from package metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cache_key(model_dir: Path, root: Path | None = None) -> str:
    """A hash over the model folder's content (each file's name, size and SHA-256) and :func:`versions`.

    Not over where the folder is or when its files were written: the same model installed in another
    virtualenv (or a Docker image rebuilt) finds the export the first one made. The SHA-256s are worked out
    once per file (path, size, mtime) and remembered in the cache (:data:`DIGESTS_FILE`), so a load only
    stats the files."""
    known = _read_digests(root)
    files, hashed = [], False
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and ".git" not in f.parts:
            st = f.stat()
            where = str(f.resolve())
            seen = known.get(where)
            if isinstance(seen, list) and seen[:2] == [st.st_size, st.st_mtime_ns] and len(seen) == 3:
                digest = str(seen[2])
            else:
                digest, hashed = _sha256(f), True
                known[where] = [st.st_size, st.st_mtime_ns, digest]
            files.append([str(f.relative_to(model_dir)), st.st_size, digest])
    if hashed:
        _write_digests(root, known)
    blob = json.dumps({"format": FORMAT, "key": "content", "files": files, "versions": versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_digests(root: Path | None) -> dict[str, Any]:
    try:
        data = json.loads(((root or cache_root()) / DIGESTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_digests(root: Path | None, known: dict[str, Any]) -> None:
    """Saves the remembered SHA-256s, without the files that no longer exist (an uninstalled virtualenv),
    in a cache folder that exists (looking, as ``memstore doctor`` does, creates nothing). Best effort: a
    read-only cache or a lost race with another process only means hashing again."""
    folder = root or cache_root()
    keep = {where: v for where, v in known.items() if os.path.exists(where)}
    with contextlib.suppress(OSError):
        tmp = folder / f".{DIGESTS_FILE}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(keep), encoding="utf-8")
        os.replace(tmp, folder / DIGESTS_FILE)


def export_dir(model_dir: Path, root: Path | None = None, key: str | None = None) -> Path:
    """The cache folder an export of ``model_dir`` lives in (whether or not it exists yet)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_dir.name if model_dir.name != "model" else model_dir.parent.name)
    return (root or cache_root()) / f"{slug.strip('-') or 'model'}-{(key or cache_key(model_dir, root))[:16]}"


def _failed_marker(folder: Path) -> Path:
    return folder.with_name(folder.name + ".failed.json")


# ---- the runtime --------------------------------------------------------------------------------------

MIN_LANE_TEXTS = 8  # a batch is split across lanes only when each would get at least this many texts


def run_threads(cores: int | None = None) -> tuple[int, int]:
    """(intra-op threads per run, 0 for onnxruntime's default of one per physical core; runs side by side
    for a batch). ``MEMSTORE_ONNX_THREADS`` sets the threads per run, for a process that wants its query
    embedding to leave cores to its other work (a busy server); a batch then runs chunks side by side on
    the cores a run leaves. Measured on 2 cores: one query 3.4-4.0 ms on two threads, 4.7-5.3 ms on one;
    a batch 421-436 texts/s as one two-thread run, 393-403 as two one-thread runs side by side, 238-242 as
    one one-thread run; the MemoryClient request, whose query embedding overlaps its lexical query and
    profile read, 10.8-12.4 ms added with two threads and 10.4-12.1 ms with one (within the noise)."""
    cores = cores or os.cpu_count() or 2
    env = os.environ.get("MEMSTORE_ONNX_THREADS", "")
    if not (env.isdigit() and int(env) > 0):
        return 0, 1
    return int(env), max(1, cores // int(env))


class OnnxSentenceModel:
    """An exported model: a tokenizer, an onnxruntime session, pooling and normalisation in numpy."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder, self.manifest = folder, manifest
        self.dim: int = int(manifest["dim"])
        self.pooling: str = manifest["pooling"]
        self.normalize: bool = bool(manifest["normalize"])
        self.input_names: list[str] = list(manifest["input_names"])
        tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        tok.no_padding()
        tok.no_truncation()
        tok.enable_truncation(max_length=int(manifest["max_seq_length"]))
        tok.enable_padding(pad_id=int(manifest["pad_id"]), pad_token=manifest["pad_token"])
        self.tokenizer = tok
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.inter_op_num_threads = 1
        # no busy-waiting between runs: spinning pool threads would take the CPU from whatever the process
        # does between queries (2 shared cores measured no loss)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads, self.lanes = run_threads()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self._lanes: Any = None  # a thread pool for batches, made on the first one that needs it

    @classmethod
    def open(cls, folder: Path, key: str | None = None) -> OnnxSentenceModel:
        """Loads a cache folder and checks it: the manifest, the file size and the probe vectors.

        Raises :class:`DamagedExport` when any of them is off."""
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DamagedExport(f"no readable {MANIFEST_FILE}: {exc}") from exc
        if manifest.get("format") != FORMAT or (key is not None and manifest.get("key") != key):
            raise DamagedExport("made for another model, version or format")
        _check_file(folder, manifest)
        try:
            model = cls(folder, manifest)
            probes = manifest["probe_vectors"]
            got = model.encode(list(PROBES[:len(probes)]))
        except Exception as exc:
            raise DamagedExport(f"onnxruntime cannot run it: {exc}") from exc
        worst = float(np.min(np.sum(got * np.asarray(probes, dtype=np.float32), axis=1)))
        if not worst >= MIN_COSINE:
            raise DamagedExport(f"its vectors no longer match the export's (cosine {worst:.6f})")
        return model

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored: Any) -> np.ndarray:
        """float32 vectors in the order of ``texts``, L2-normalised if the model ends in Normalize or
        ``normalize_embeddings``. Texts are sorted by length and run in batches, each padded to its longest
        text. Other keyword arguments of ``SentenceTransformer.encode`` are accepted and ignored."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        if self.lanes > 1 and len(texts) >= 2 * MIN_LANE_TEXTS:  # every lane gets a share of a small batch
            batch_size = min(batch_size, -(-len(texts) // self.lanes))
        chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

        def run(idx: list[int]) -> None:
            out[idx] = self._forward([texts[i] for i in idx], normalize_embeddings)

        if len(chunks) > 1 and self.lanes > 1:  # onnxruntime's run is thread-safe and releases the GIL
            if self._lanes is None:
                from concurrent.futures import ThreadPoolExecutor

                self._lanes = ThreadPoolExecutor(self.lanes, thread_name_prefix="memstore-onnx")
            for done in [self._lanes.submit(run, idx) for idx in chunks]:
                done.result()
        else:
            for idx in chunks:
                run(idx)
        return out

    def _forward(self, texts: list[str], normalize: bool) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        columns = {"input_ids": lambda: np.array([e.ids for e in encs], dtype=np.int64),
                   "attention_mask": lambda: mask,
                   "token_type_ids": lambda: np.array([e.type_ids for e in encs], dtype=np.int64)}
        hidden = self.session.run(None, {name: columns[name]() for name in self.input_names})[0]
        if self.pooling == "cls":
            vecs = hidden[:, 0, :]
        else:
            m = mask[:, :, None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        vecs = vecs.astype(np.float32)
        if self.normalize or normalize:
            vecs /= np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
        return vecs


def _check_file(folder: Path, manifest: dict[str, Any]) -> None:
    """The ONNX file is the one the export wrote: same size, and same mtime or else same SHA-256 (a copy that
    changed the mtime is hashed once, then the manifest records the new mtime)."""
    path = folder / ONNX_FILE
    try:
        st = path.stat()
    except OSError as exc:
        raise DamagedExport(f"{ONNX_FILE} is missing") from exc
    if st.st_size != manifest.get("onnx_bytes"):
        raise DamagedExport(f"{ONNX_FILE} has {st.st_size} bytes, the export wrote {manifest.get('onnx_bytes')}")
    if st.st_mtime_ns == manifest.get("onnx_mtime_ns"):
        return
    if _sha256(path) != manifest.get("onnx_sha256"):
        raise DamagedExport(f"{ONNX_FILE} was modified after the export (its SHA-256 differs)")
    with contextlib.suppress(OSError):
        _write_manifest(folder, {**manifest, "onnx_mtime_ns": st.st_mtime_ns})


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / f".{MANIFEST_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_FILE)


# ---- loading, exporting --------------------------------------------------------------------------------

def load(model_dir: Path, load_st: Callable[[], Any], root: Path | None = None,
         name: str | None = None) -> OnnxSentenceModel:
    """The ONNX model for ``model_dir``: the cached export if it is sound, else a new export made from the
    sentence-transformers model ``load_st()`` returns (called only then, so a cached export never imports
    torch). Raises :class:`NotExportable` when the model cannot run on onnxruntime; a failed export is
    remembered beside the cache folder and not retried until the key changes or :func:`ensure` forces it."""
    import onnxruntime  # noqa: F401 - a broken install raises here, before any cache folder is judged damaged

    key = cache_key(model_dir, root)
    folder = export_dir(model_dir, root, key)
    if folder.exists():
        try:
            model = OnnxSentenceModel.open(folder, key)
        except DamagedExport as exc:
            log.warning("memstore: the ONNX export of the embedding model at %s is damaged (%s); exporting again",
                        folder, exc)
            _discard(folder)
        else:
            _touch(folder)
            return model
    reason = _failure(folder)
    if reason is not None:
        raise NotExportable(reason)
    model = _export_and_open(model_dir, folder, key, load_st, name)
    _touch(folder)
    prune(folder)
    return model


def _touch(folder: Path) -> None:
    """Records that the export was used now (a read-only cache is simply not pruned by use)."""
    with contextlib.suppress(OSError):
        (folder / LAST_USED_FILE).touch()


def prune(keep: Path, older_than_days: float = PRUNE_AFTER_DAYS) -> list[Path]:
    """Deletes the other exports of the same model (older versions of torch or onnxruntime, another
    virtualenv with other versions, older key formats: each has its own key and 90 MB for the bundled
    model) that no process has loaded for ``older_than_days``, and their failure markers. Called after a new
    export. Returns what it deleted."""
    slug = keep.name.rsplit("-", 1)[0]
    pattern = re.compile(re.escape(slug) + r"-[0-9a-f]{16}")
    cutoff = time.time() - older_than_days * 86400
    gone: list[Path] = []
    for other in keep.parent.iterdir():
        if other == keep or not pattern.fullmatch(other.name) or not other.is_dir():
            continue
        marks = [other / LAST_USED_FILE, other / MANIFEST_FILE, other]
        used = max((m.stat().st_mtime for m in marks if m.exists()), default=0.0)
        if used < cutoff:
            _discard(other)
            _failed_marker(other).unlink(missing_ok=True)
            gone.append(other)
    if gone:
        log.info("memstore: deleted %d ONNX export(s) of %s unused for %d days: %s", len(gone), slug,
                 older_than_days, ", ".join(p.name for p in gone))
    return gone


def ensure(model_dir: Path, load_st: Callable[[], Any], root: Path | None = None, force: bool = False,
           name: str | None = None) -> dict[str, Any]:
    """Exports now unless a sound export exists (``force``: export again regardless, and retry a failed one).
    Returns :func:`status` afterwards; raises :class:`NotExportable` when the export fails."""
    folder = export_dir(model_dir, root)
    if force:
        _discard(folder)
        _failed_marker(folder).unlink(missing_ok=True)
    load(model_dir, load_st, root, name)
    return status(model_dir, root)


def status(model_dir: Path, root: Path | None = None) -> dict[str, Any]:
    """What the cache holds for ``model_dir``, cheaply (no onnxruntime session, no torch): ``state`` is
    ready, missing (exported on first use), failed (runs on torch) or damaged (exported again on use)."""
    key = cache_key(model_dir, root)
    folder = export_dir(model_dir, root, key)
    out: dict[str, Any] = {"path": str(folder), "versions": versions()}
    if folder.exists():
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
            ok = manifest.get("key") == key
            _check_file(folder, manifest)
        except (OSError, ValueError, DamagedExport):
            manifest, ok = {}, False
        out.update(state="ready" if ok else "damaged", exported_at=manifest.get("exported_at"),
                   min_cosine=manifest.get("min_cosine"), onnx_mb=round(manifest.get("onnx_bytes", 0) / 1e6, 1))
        return out
    reason = _failure(folder)
    out.update(state="missing" if reason is None else "failed", reason=reason)
    return out


def _export_and_open(model_dir: Path, folder: Path, key: str, load_st: Callable[[], Any],
                     name: str | None) -> OnnxSentenceModel:
    global exports_done
    folder.parent.mkdir(parents=True, exist_ok=True)
    _sweep(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        t0 = time.perf_counter()
        st = load_st()
        spec = exportable(st)
        _export(st, spec, tmp)
        model = OnnxSentenceModel(tmp, {**spec, "onnx_bytes": (tmp / ONNX_FILE).stat().st_size})
        want = np.asarray(st.encode(list(PROBES), normalize_embeddings=spec["normalize"], convert_to_numpy=True,
                                    show_progress_bar=False), dtype=np.float32)
        got = model.encode(list(PROBES))
        single = np.concatenate([model.encode([t]) for t in PROBES[:3]])  # unpadded, one by one
        cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        cos1 = np.sum(single * want[:3], axis=1) / (np.linalg.norm(single, axis=1) * np.linalg.norm(want[:3], axis=1))
        worst = float(min(cos.min(), cos1.min()))
        if not worst >= MIN_COSINE:
            raise NotExportable(f"the ONNX vectors differ from sentence-transformers' (cosine {worst:.6f})")
        manifest = {**spec, "format": FORMAT, "key": key, "model": name or str(model_dir),
                    "model_dir": str(model_dir), "versions": versions(),
                    "onnx_bytes": (tmp / ONNX_FILE).stat().st_size, "onnx_sha256": _sha256(tmp / ONNX_FILE),
                    "onnx_mtime_ns": (tmp / ONNX_FILE).stat().st_mtime_ns, "min_cosine": round(worst, 7),
                    "probe_vectors": got[:3].tolist(), "export_seconds": round(time.perf_counter() - t0, 1),
                    "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        _write_manifest(tmp, manifest)
        del model
        for p in (tmp, *tmp.iterdir()):  # mkdtemp made it private: readable like any cache (e.g. built as root)
            p.chmod(0o755 if p.is_dir() else 0o644)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same export first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        exports_done += 1
        log.info("memstore: exported the embedding model to ONNX at %s (cosine >= %.6f)", folder, worst)
    except NotExportable as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remember_failure(folder, str(exc))
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remember_failure(folder, f"export failed: {type(exc).__name__}: {exc}")
        raise NotExportable(f"export failed: {exc}") from exc
    return OnnxSentenceModel.open(folder, key)


def exportable(st: Any) -> dict[str, Any]:
    """What the export needs to know of a loaded SentenceTransformer, or :class:`NotExportable` with why not."""
    mods = list(st)
    kinds = [type(m).__name__ for m in mods]
    if len(mods) not in (2, 3) or kinds[0] != "Transformer" or kinds[1] != "Pooling" or \
            (len(mods) == 3 and kinds[2] != "Normalize"):
        raise NotExportable(f"modules {kinds} are not [Transformer, Pooling, Normalize?]")
    if getattr(st, "default_prompt_name", None):
        raise NotExportable("the model adds a default prompt")
    mode = getattr(mods[1], "pooling_mode", None)
    if mode is None and hasattr(mods[1], "get_pooling_mode_str"):
        mode = mods[1].get_pooling_mode_str()
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else None
    mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(mode, mode)
    if mode not in ("mean", "cls") or getattr(mods[1], "include_prompt", True) is False:
        raise NotExportable(f"pooling {mode!r} is not mean or cls")
    hf_tok = mods[0].tokenizer
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if backend is None or getattr(hf_tok, "padding_side", "right") != "right" or \
            getattr(hf_tok, "truncation_side", "right") != "right":
        raise NotExportable("the tokenizer is not a right-padding fast tokenizer")
    auto = mods[0].auto_model
    params = inspect.signature(auto.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise NotExportable("the transformer does not take input_ids and attention_mask")
    max_len = st.max_seq_length or min(hf_tok.model_max_length, getattr(auto.config, "max_position_embeddings", 512))
    dim = (getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)()
    return {"dim": int(dim), "pooling": mode, "normalize": len(mods) == 3, "input_names": names,
            "max_seq_length": int(max_len), "pad_id": int(hf_tok.pad_token_id or 0),
            "pad_token": str(hf_tok.pad_token or "[PAD]")}


def _export(st: Any, spec: dict[str, Any], folder: Path) -> None:
    import torch

    mods = list(st)
    mods[0].tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    names = spec["input_names"]

    class Hidden(torch.nn.Module):
        def __init__(self, auto: Any) -> None:
            super().__init__()
            self.auto = auto

        def forward(self, *inputs: Any) -> Any:
            return self.auto(**dict(zip(names, inputs, strict=True))).last_hidden_state

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))  # a padded sample batch: the mask must stay an input
    tok.no_truncation()
    tok.enable_padding(pad_id=spec["pad_id"], pad_token=spec["pad_token"])
    encs = tok.encode_batch(["a short one", "a somewhat longer sample sentence, so that the batch has padding"])
    cols = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs],
            "token_type_ids": [e.type_ids for e in encs]}
    sample = tuple(torch.tensor(cols[n], dtype=torch.long) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    module = Hidden(mods[0].auto_model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, sample, str(folder / ONNX_FILE), dynamo=False, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                          do_constant_folding=True)


def _failure(folder: Path) -> str | None:
    """Why the export for ``folder`` failed before (None: it has not)."""
    marker = _failed_marker(folder)
    if not marker.exists():
        return None
    try:
        return str(json.loads(marker.read_text(encoding="utf-8")).get("reason") or "export failed")
    except (OSError, ValueError):
        return "export failed"


def _remember_failure(folder: Path, reason: str) -> None:
    with contextlib.suppress(OSError):
        _failed_marker(folder).write_text(json.dumps({"reason": reason, "versions": versions(),
                                                      "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}),
                                          encoding="utf-8")


def _discard(folder: Path) -> None:
    """Moves a cache folder out of the way (a rename, so readers never see half of it), then deletes it."""
    if not folder.exists():
        return
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _sweep(root: Path, older_than_s: float = 3600.0) -> None:
    """Deletes what crashed exports left behind (temporary and trash folders over an hour old)."""
    now = time.time()
    for p in root.glob(".*-*"):
        if p.name.startswith((".tmp-", ".trash-")):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
