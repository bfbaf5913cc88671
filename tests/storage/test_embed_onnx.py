"""The default embedder on onnxruntime: the one-time export, its cache, and the torch fallback.

One export of the bundled model per session (``onnx_root``, a temporary cache folder); tests that need a
damaged or missing export work on copies or on their own folders. Vectors are compared with
sentence-transformers on torch (``backend="torch"``), which stays the reference.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from memstore.config import MemoryConfig
from memstore.errors import ConfigError
from memstore.memory import Memory
from memstore.recall.search import SearchSettings
from memstore.storage import onnx_embed
from memstore.storage.embed import (
    HashEmbedder,
    SentenceTransformerEmbedder,
    bundled_model_path,
    load_sentence_transformer,
)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["I moved to Lisbon in March and I am learning Portuguese.", "cello",
         "Keep replies short; never use emoji.", "My daughter is allergic to peanuts and tree nuts. " * 40,
         "What is the name of my dog?", "Ich wohne in Zürich und trinke gern Kaffee."]
CORPUS = ["I play the cello in a community orchestra", "My sister lives in Lisbon", "I am allergic to peanuts",
          "I prefer oat milk in my coffee", "My dog is called Biscuit", "I am training for a half marathon",
          "I work night shifts at the hospital", "I'm learning Portuguese for a trip", "My partner hates spicy food",
          "I bought a used Volvo last spring", "I read Norwegian crime novels", "I grow tomatoes on the balcony",
          "My manager is called Priya", "I go sea kayaking on weekends", "I am vegetarian since 2021",
          "My son plays chess", "I want to visit Kyoto in autumn", "I drink dark roast coffee every morning"]
QUERIES = ["what instrument do I play?", "where does my sister live", "food allergies", "what pet do I have",
           "running plans", "travel to Japan", "coffee preferences", "my job"]


def _model_dir() -> Path:
    found = onnx_embed.resolve_model_dir(bundled_model_path())
    assert found is not None
    return found


def _bundled_st() -> object:
    return load_sentence_transformer(bundled_model_path())


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _boom() -> object:
    raise AssertionError("sentence-transformers was loaded although the export exists")


STALE, RECENT, OTHER = "0123456789abcdef", "fedcba9876543210", "other_model-0123456789abcdef"


def _plant(root: Path, name: str, age_days: float) -> Path:
    """A folder that looks like an export last used ``age_days`` ago."""
    folder = root / name
    folder.mkdir()
    (folder / onnx_embed.MANIFEST_FILE).write_text("{}")
    (folder / onnx_embed.LAST_USED_FILE).touch()
    then = time.time() - age_days * 86400
    for p in (folder / onnx_embed.MANIFEST_FILE, folder / onnx_embed.LAST_USED_FILE, folder):
        os.utime(p, (then, then))
    return folder


@pytest.fixture(scope="session")
def onnx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx-cache")
    slug = onnx_embed.export_dir(_model_dir(), root).name.rsplit("-", 1)[0]
    # other exports of the same model (another virtualenv, older versions), and another model's
    _plant(root, f"{slug}-{STALE}", 40)
    _plant(root, f"{slug}-{RECENT}", 2)
    _plant(root, OTHER, 40)
    onnx_embed.ensure(_model_dir(), _bundled_st, root)
    return root


@pytest.fixture()
def use_root(onnx_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMSTORE_ONNX_CACHE", str(onnx_root))
    return onnx_root


def test_the_export_matches_sentence_transformers(onnx_root: Path) -> None:
    status = onnx_embed.status(_model_dir(), onnx_root)
    assert status["state"] == "ready" and status["min_cosine"] >= onnx_embed.MIN_COSINE
    manifest = json.loads((Path(status["path"]) / onnx_embed.MANIFEST_FILE).read_text())
    assert manifest["max_seq_length"] == 256 and manifest["pooling"] == "mean" and manifest["dim"] == 384
    model = onnx_embed.load(_model_dir(), _boom, onnx_root)
    torch_vecs = SentenceTransformerEmbedder(backend="torch", cache_size=1).embed(TEXTS)
    together = model.encode(TEXTS)  # one batch, padded to the longest (truncated at 256 tokens)
    alone = np.concatenate([model.encode([t]) for t in TEXTS])
    assert _cos(together, torch_vecs).min() >= 0.9999
    assert _cos(alone, torch_vecs).min() >= 0.9999
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5) and together.dtype == np.float32


def test_a_second_load_reuses_the_export(use_root: Path) -> None:
    folder = Path(onnx_embed.status(_model_dir(), use_root)["path"])
    before = (folder / onnx_embed.ONNX_FILE).stat().st_mtime_ns, onnx_embed.exports_done
    onnx_embed.load(_model_dir(), _boom, use_root)  # the exporter is never asked for
    emb = SentenceTransformerEmbedder(backend="onnx")
    assert emb.embed(["I play the cello"]).shape == (1, 384) and emb.runtime == "onnxruntime"
    assert ((folder / onnx_embed.ONNX_FILE).stat().st_mtime_ns, onnx_embed.exports_done) == before
    assert not [p.name for p in use_root.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_the_same_model_installed_elsewhere_reuses_the_export(onnx_root: Path, tmp_path: Path) -> None:
    src = _model_dir()
    # another virtualenv (or a rebuilt image): the same files at another path, written at another time
    other = tmp_path / "venv2" / "site-packages" / src.parent.name / src.name
    shutil.copytree(src, other, copy_function=shutil.copyfile)
    weights = next(f for f in other.rglob("*") if f.stat().st_size > 10_000_000)
    assert weights.stat().st_mtime_ns != (src / weights.relative_to(other)).stat().st_mtime_ns
    exports = onnx_embed.exports_done
    model = onnx_embed.load(other, _boom, onnx_root)  # the exporter is never asked for
    assert onnx_embed.exports_done == exports
    assert onnx_embed.status(other, onnx_root) == onnx_embed.status(src, onnx_root)
    assert model.encode(["I play the cello"]).shape == (1, 384)
    # a changed model is another export
    config = other / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "fine-tuned"}', 1))
    assert onnx_embed.status(other, onnx_root)["state"] == "missing"
    assert onnx_embed.cache_key(other, onnx_root) != onnx_embed.cache_key(src, onnx_root)


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_export_is_detected_and_redone(onnx_root: Path, tmp_path: Path, damage: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    src = Path(onnx_embed.status(_model_dir(), onnx_root)["path"])
    shutil.copytree(src, root / src.name)
    onnx = root / src.name / onnx_embed.ONNX_FILE
    if damage == "truncated":  # an interrupted copy
        with onnx.open("r+b") as f:
            f.truncate(onnx.stat().st_size // 2)
    else:  # same size, different weights: only the probe vectors can tell
        with onnx.open("r+b") as f:
            f.seek(onnx.stat().st_size // 2)
            f.write(np.full(4096, 0.5, dtype=np.float32).tobytes())
    exports = onnx_embed.exports_done
    with caplog.at_level(logging.WARNING, logger="memstore"):
        model = onnx_embed.load(_model_dir(), _bundled_st, root)
    assert onnx_embed.exports_done == exports + 1
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert onnx_embed.status(_model_dir(), root)["state"] == "ready"
    reference = onnx_embed.load(_model_dir(), _boom, onnx_root)
    assert _cos(model.encode(TEXTS[:3]), reference.encode(TEXTS[:3])).min() >= 0.9999


def test_a_partial_folder_is_not_taken_for_an_export(onnx_root: Path, tmp_path: Path) -> None:
    src = Path(onnx_embed.status(_model_dir(), onnx_root)["path"])
    (tmp_path / src.name).mkdir()
    shutil.copy(src / onnx_embed.ONNX_FILE, tmp_path / src.name / onnx_embed.ONNX_FILE)  # no manifest: unfinished
    assert onnx_embed.status(_model_dir(), tmp_path)["state"] == "damaged"
    with pytest.raises(onnx_embed.DamagedExport):
        onnx_embed.OnnxSentenceModel.open(tmp_path / src.name)


def _run(code: str, env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "MEMSTORE_HOME": str(tmp_path / "home"), **env}
    env.pop("MEMSTORE_EMBED_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def test_a_fresh_process_with_an_export_never_imports_torch(onnx_root: Path, tmp_path: Path) -> None:
    code = """if True:
        import json, sys
        from memstore.config import MemoryConfig
        from memstore.memory import Memory
        mem = Memory(config=MemoryConfig(extractor="rules"))
        mem.add([{"role": "user", "content": t} for t in ["I play the cello", "My dog is called Biscuit"]],
                user_id="u", infer=False)
        hits = mem.search("what instrument do I play?", "u")
        print(json.dumps({"top": hits[0].memory.text, "runtime": mem.store.embedder.runtime,
                          "loaded": sorted(m for m in ("torch", "sentence_transformers", "transformers")
                                           if m in sys.modules)}))
    """
    out = _run(code, {"MEMSTORE_ONNX_CACHE": str(onnx_root)}, tmp_path)
    assert out["top"] == "I play the cello" and out["runtime"] == "onnxruntime"
    assert out["loaded"] == []


def test_a_store_built_on_torch_is_searched_alike_on_onnx(use_root: Path, tmp_path: Path) -> None:
    cfg = MemoryConfig(home=tmp_path / "store", extractor="rules")
    dense = SearchSettings(lexical_weight=0.0, recency_weight=0.0)

    def results(mem: Memory) -> list[tuple[list[str], list[float], list[str]]]:
        out = []
        for q in QUERIES:
            d = mem.search(q, "u", limit=5, settings=dense)
            h = mem.search(q, "u", limit=5)
            out.append(([x.id for x in d], [x.score for x in d], [x.id for x in h]))
        return out

    on_torch = Memory(config=cfg, embedder=SentenceTransformerEmbedder(backend="torch"))
    on_torch.add([{"role": "user", "content": t} for t in CORPUS], user_id="u", infer=False)
    before = results(on_torch)
    on_onnx = Memory(config=cfg, embedder=SentenceTransformerEmbedder(backend="onnx"))  # same store, no reindex
    assert on_onnx.store.embedder.runtime == "onnxruntime"  # type: ignore[attr-defined]
    after = results(on_onnx)
    for (ids_b, scores_b, hybrid_b), (ids_a, scores_a, hybrid_a) in zip(before, after, strict=True):
        assert ids_a == ids_b and hybrid_a == hybrid_b
        assert np.allclose(scores_a, scores_b, atol=1e-4)


def _max_pooled_model(folder: Path) -> Path:
    """The bundled transformer with max pooling: a sentence-transformers model the exporter refuses."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    mods = [Transformer(bundled_model_path()), Pooling(384, pooling_mode="max"), Normalize()]
    SentenceTransformer(modules=mods, device="cpu").save(str(folder))
    return folder


def test_a_model_that_cannot_be_exported_runs_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _max_pooled_model(tmp_path / "max-pooled")
    monkeypatch.setenv("MEMSTORE_ONNX_CACHE", str(tmp_path / "cache"))
    emb = SentenceTransformerEmbedder(model=str(model))
    vecs = emb.embed(TEXTS[:3])
    assert emb.runtime == "torch" and emb.dim == 384
    reference = load_sentence_transformer(str(model)).encode(TEXTS[:3], normalize_embeddings=True)
    assert _cos(vecs, reference).min() >= 0.99999
    state = onnx_embed.status(model, tmp_path / "cache")
    assert state["state"] == "failed" and "pooling" in state["reason"]
    with pytest.raises(onnx_embed.NotExportable):  # remembered: not retried on the next load
        onnx_embed.load(model, _boom, tmp_path / "cache")
    with pytest.raises(ConfigError, match="onnxruntime"):  # backend="onnx" refuses to fall back
        SentenceTransformerEmbedder(model=str(model), backend="onnx").embed(["x"])


def test_a_broken_onnxruntime_falls_back_to_torch_with_one_warning(onnx_root: Path, tmp_path: Path) -> None:
    code = """if True:
        import json, logging, sys
        sys.modules["onnxruntime"] = None  # an install whose onnxruntime cannot be imported
        logging.basicConfig(level=logging.WARNING)
        from memstore.storage.embed import SentenceTransformerEmbedder
        emb = SentenceTransformerEmbedder()
        a, b = emb.embed(["I play the cello"]), emb.embed(["I grow tomatoes", "hello"])
        print(json.dumps({"runtime": emb.runtime, "shape": [a.shape[1], b.shape[0]]}))
    """
    out = _run(code, {"MEMSTORE_ONNX_CACHE": str(onnx_root)}, tmp_path)
    assert out["runtime"] == "torch" and out["shape"] == [384, 2]
    assert str(out["stderr"]).count("runs on torch") == 1
    assert onnx_embed.status(_model_dir(), onnx_root)["state"] == "ready"  # the export is left alone


def test_preload_returns_at_once_and_embed_waits_for_the_rest(use_root: Path, tmp_path: Path) -> None:
    emb = SentenceTransformerEmbedder(backend="onnx")
    started = emb.preload()
    started.result(timeout=300)
    assert emb.embed(["I play the cello"]).shape == (1, 384)
    broken = SentenceTransformerEmbedder(model=str(tmp_path / "no-such-model"), backend="torch")
    failed = broken.preload()  # does not raise here ...
    assert isinstance(failed.exception(timeout=300), ConfigError)
    with pytest.raises(ConfigError):  # ... but the next embed does
        broken.embed(["x"])
    assert HashEmbedder().preload().done()


def test_doctor_reports_the_export(onnx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from memstore.cli.app import app

    monkeypatch.setenv("MEMSTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEMSTORE_EMBED_BACKEND", raising=False)
    states = {}
    for name, root in (("exported", onnx_root), ("fresh", tmp_path / "empty")):
        monkeypatch.setenv("MEMSTORE_ONNX_CACHE", str(root))
        res = CliRunner().invoke(app, ["doctor", "--json"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        check = next(c for c in report["checks"] if c["check"] == "embedder")
        states[name] = (report["embedder"]["state"], check["status"])
    assert states == {"exported": ("ready", "ok"), "fresh": ("missing", "warn")}
    assert not (tmp_path / "empty").exists()  # doctor only looks; --export-embedder exports


def test_a_batch_split_across_runs_gives_the_vectors_of_one_run(onnx_root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With fewer threads per run than cores (MEMSTORE_ONNX_THREADS), a batch runs in chunks side by side.
    Either way each text gets the vector it gets alone."""
    monkeypatch.delenv("MEMSTORE_ONNX_THREADS", raising=False)
    assert onnx_embed.run_threads(2) == (0, 1) and onnx_embed.run_threads(8) == (0, 1)  # onnxruntime's own
    monkeypatch.setenv("MEMSTORE_ONNX_THREADS", "1")
    assert onnx_embed.run_threads(2) == (1, 2) and onnx_embed.run_threads(8) == (1, 8)
    monkeypatch.setenv("MEMSTORE_ONNX_THREADS", "2")
    assert onnx_embed.run_threads(2) == (2, 1) and onnx_embed.run_threads(8) == (2, 4)
    monkeypatch.setenv("MEMSTORE_ONNX_THREADS", "many")  # not a count: the default
    assert onnx_embed.run_threads(2) == (0, 1)
    monkeypatch.delenv("MEMSTORE_ONNX_THREADS")
    model = onnx_embed.load(_model_dir(), _boom, onnx_root)
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 8)]
    model.lanes = 2
    split = model.encode(texts, batch_size=8)
    model.lanes = 1
    one_lane = model.encode(texts, batch_size=8)
    alone = np.concatenate([model.encode([t]) for t in texts[:6]])
    assert np.allclose(split, one_lane, atol=1e-6)
    assert _cos(split[:6], alone).min() >= 0.9999


def test_a_new_export_deletes_exports_of_the_same_model_unused_for_a_month(onnx_root: Path) -> None:
    """Each virtualenv and each torch / onnxruntime version has its own export (90 MB for the bundled
    model): making one deletes the same model's exports nobody loaded for 30 days, and nothing else."""
    names = {p.name for p in onnx_root.iterdir()}
    slug = onnx_embed.export_dir(_model_dir(), onnx_root).name.rsplit("-", 1)[0]
    assert f"{slug}-{STALE}" not in names
    assert {f"{slug}-{RECENT}", OTHER, onnx_embed.export_dir(_model_dir(), onnx_root).name} <= names


def test_every_load_marks_the_export_as_used(use_root: Path) -> None:
    folder = onnx_embed.export_dir(_model_dir(), use_root)
    mark = folder / onnx_embed.LAST_USED_FILE
    os.utime(mark, (1_000_000, 1_000_000))
    onnx_embed.load(_model_dir(), _boom, use_root)
    assert time.time() - mark.stat().st_mtime < 3600
