"""``memstore bench embed``: the bundled embedding model on torch (sentence-transformers) against its ONNX
export on onnxruntime, in one run: query latency, batch throughput, cold start, and agreement of the vectors."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memstore.eval.bench.runs import _median, _tables, questions, sentences
from memstore.eval.common import environment, progress, summary_ms

_EMBED_RUN = """if True:
    import json, sys, time
    t0 = time.perf_counter()
    from memstore.storage.embed import SentenceTransformerEmbedder
    emb = SentenceTransformerEmbedder(backend=sys.argv[1], cache_size=1)
    emb.embed(["what did I say about the weekend?"])
    cold = time.perf_counter() - t0
    spec = json.loads(sys.stdin.read())
    queries, batches = [], []
    for q in spec["queries"]:
        t1 = time.perf_counter()
        emb.embed([q])
        queries.append(time.perf_counter() - t1)
    for texts in spec["batches"]:
        t1 = time.perf_counter()
        emb.embed(texts)
        batches.append(time.perf_counter() - t1)
    print(json.dumps({"cold": cold, "torch": "torch" in sys.modules, "runtime": emb.runtime, "queries": queries,
                      "batches": batches, "vectors": emb.embed(spec["probe"]).tolist()}))
"""


def bench_embed(queries: int = 200, batches: int = 20, batch: int = 32, repeats: int = 5, timeout: float = 600.0,
                show_progress: bool = True) -> dict[str, Any]:
    """The bundled model on torch (sentence-transformers) against its ONNX export on onnxruntime, in one run.
    Each of ``repeats`` fresh processes per runtime (alternating, so load on the machine hits both) measures
    its cold start (import to first vector), then one short query ``queries`` times (distinct queries, never
    from the query cache) and ``batches`` calls of ``batch`` texts. Medians over the processes are reported.
    The ONNX export is made first if it does not exist (its time is reported, not counted in the cold start)."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.storage import onnx_embed
    from memstore.storage.embed import SentenceTransformerEmbedder, bundled_model_path

    backends = ("torch", "onnx")
    t0 = time.perf_counter()
    SentenceTransformerEmbedder(backend="onnx").embed(["warm up"])  # exports once if needed
    setup_s = time.perf_counter() - t0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEMSTORE_ONNX_CACHE": str(onnx_embed.cache_root())}
    env.pop("MEMSTORE_EMBED_BACKEND", None)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    with progress(show_progress) as bar:
        task = bar.add_task("fresh processes: cold start, queries, batches", total=repeats * len(backends))
        for r in range(repeats):
            spec = {"queries": questions(queries, seed=40_000 + r), "probe": sentences(16, seed=3),
                    "batches": [sentences(batch, seed=50_000 + 1000 * r + i) for i in range(batches)]}
            for b in backends:
                proc = subprocess.run([sys.executable, "-c", _EMBED_RUN, b], input=json.dumps(spec), env=env,
                                      capture_output=True, text=True, timeout=timeout, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"the {b} run failed: {proc.stderr[-2000:]}")
                runs[b].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                bar.advance(task)
    out: dict[str, Any] = {}
    for b in backends:
        qs = [summary_ms(x["queries"]) for x in runs[b]]
        per_batch = statistics.median(t for x in runs[b] for t in x["batches"]) if batches else 0.0
        out[b] = {"runtime": runs[b][0]["runtime"], "query_p50_ms": _median([x["p50_ms"] for x in qs]),
                  "query_p95_ms": _median([x["p95_ms"] for x in qs]), "query_runs": qs,
                  "batch_texts_per_s": round(batch / per_batch, 1) if per_batch else None,
                  "batch_p50_ms": round(per_batch * 1000, 2),
                  "cold_start_s": round(statistics.median(x["cold"] for x in runs[b]), 2),
                  "cold_runs_s": [round(x["cold"], 2) for x in runs[b]],
                  "cold_imports_torch": any(x["torch"] for x in runs[b])}
    import numpy as np

    agree = float(np.min(np.sum(np.asarray(runs["torch"][0]["vectors"]) * np.asarray(runs["onnx"][0]["vectors"]),
                                axis=1)))
    ratio = out["onnx"]["query_p50_ms"] / out["torch"]["query_p50_ms"] if out["torch"]["query_p50_ms"] else None
    state = onnx_embed.status(onnx_embed.resolve_model_dir(bundled_model_path()) or Path(bundled_model_path()))
    keep = ("state", "path", "exported_at", "min_cosine", "onnx_mb")
    return {"benchmark": "embed", "model": "all-MiniLM-L6-v2 (bundled)", "queries": queries, "batches": batches,
            "batch": batch, "repeats": repeats, **out,
            "query_p50_ratio_onnx_to_torch": round(ratio, 3) if ratio else None, "target_ratio": 0.4,
            "target_met": bool(ratio is not None and ratio <= 0.4), "min_cosine_onnx_vs_torch": round(agree, 6),
            "setup_seconds": round(setup_s, 1), "export": {k: state.get(k) for k in keep},
            "onnxruntime": onnx_embed.versions().get("onnxruntime"), "environment": environment()}



def print_embed(result: Mapping[str, Any]) -> None:
    from memstore.eval.common import print_env

    Table, out = _tables()
    t = Table(title=f"{result['model']}: torch vs onnxruntime, median of {result['repeats']} fresh processes each "
                    f"({result['queries']} queries, {result['batches']} batches of {result['batch']})")
    for col in ("runtime", "query p50 ms", "query p95 ms", "batch texts/s", "cold start s", "cold imports torch"):
        t.add_column(col, justify="right")
    for b, r in (("sentence-transformers (torch)", result["torch"]), ("onnxruntime", result["onnx"])):
        t.add_row(b, f"{r['query_p50_ms']:.2f}", f"{r['query_p95_ms']:.2f}", f"{r['batch_texts_per_s']:.1f}",
                  f"{r['cold_start_s']:.2f}", "yes" if r["cold_imports_torch"] else "no")
    out.print(t)
    out.print(f"query p50 onnx / torch = {result['query_p50_ratio_onnx_to_torch']} (target <= "
              f"{result['target_ratio']}: {'met' if result['target_met'] else 'missed'}); vectors agree to cosine >= "
              f"{result['min_cosine_onnx_vs_torch']}")
    print_env(result["environment"], out)


