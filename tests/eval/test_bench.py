"""Smoke tests of the benchmarks at tiny sizes: shape of the results, never timings."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from memstore.cli.eval import bench_app
from memstore.eval.bench import runs as bench
from memstore.storage.embed import HashEmbedder


def _has_env(result: dict) -> None:
    env = result["environment"]
    assert env["machine"]["cpu_count"] and env["machine"]["platform"]
    assert {"python", "torch", "chromadb", "litellm", "memstore"} <= set(env["versions"])


def test_synthetic_text_is_distinct_and_deterministic() -> None:
    a = bench.sentences(500, seed=3)
    assert len(set(a)) == 500 and a == bench.sentences(500, seed=3) and a != bench.sentences(500, seed=4)
    q = bench.questions(50, seed=1)
    assert len(set(q)) == 50 and all(x.strip() for x in q)


def test_layout_spreads_memories() -> None:
    lay = bench._layout(1000, users=5, heavy_share=0.1)
    assert lay["u000"] == 100 and sum(lay.values()) == 1000 and len(lay) == 5
    assert bench._layout(7, users=1, heavy_share=0.1) == {"u000": 7}


def test_bench_search_smoke(tmp_path: Path) -> None:
    png = tmp_path / "img" / "search.png"
    res = bench.bench_search(sizes=[30, 60], users=3, heavy_share=0.5, queries=3, repeats=2,
                             workdir=tmp_path / "w", plot=png, show_progress=False, embedder=HashEmbedder())
    assert [r["size"] for r in res["rows"]] == [30, 60]
    row = res["rows"][1]
    assert row["heavy"]["user_memories"] == 30 and row["typical"]["user_memories"] == 15
    assert len(row["heavy"]["runs"]) == 2 and row["heavy"]["p95_ms"] >= 0 and row["embed_one_query"]["p50_ms"] >= 0
    assert res["plot"] == str(png) and png.stat().st_size > 0
    _has_env(res)
    json.dumps(res)


def test_bench_ingest_smoke() -> None:
    res = bench.bench_ingest(messages=12, batch=5, repeats=2, show_progress=False, embedder=HashEmbedder())
    assert [r["messages"] for r in res["runs"]] == [12, 12] and res["messages_per_s"] > 0
    assert res["embed_per_s"] > 0 and res["ratio_to_embedder"] > 0 and all("ratio" in r for r in res["runs"])
    _has_env(res)


def test_bench_overhead_smoke() -> None:
    res = bench.bench_overhead(memories=20, requests=3, repeats=1, show_progress=False, embedder=HashEmbedder())
    for key in ("plain_litellm", "memory_client", "added"):
        assert set(res[key]) >= {"p50_ms", "p95_ms", "runs"} and res[key]["runs"][0]["n"] == 3
    _has_env(res)


def test_bench_cli_smoke(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    res = CliRunner().invoke(bench_app, ["cli", "--command", "--help", "--repeats", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["commands"][0]["command"] == "memstore --help"
    assert data["commands"][0]["exit_codes"] == [0] and data["python_startup"]["median_ms"] > 0
    assert "CLI start-up" in res.output
