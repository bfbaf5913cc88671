"""``memstore bench prefix``: the prefix figures' arithmetic, and the benchmark end to end."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from memstore.cli.eval import bench_app
from memstore.eval.bench.prefix import common_prefix, openai_cached, prefix_figures, prompt_text, tokenize
from memstore.eval.bench.prefix_data import CONVERSATION


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([9], [1]) == 0


def test_openai_rule() -> None:
    assert [openai_cached(n) for n in (0, 1023, 1024, 1151, 1152, 1279, 5000)] == [
        0, 0, 1024, 1024, 1152, 1152, 4992]


def body(*contents: str) -> dict:
    return {"messages": [{"role": "system", "content": contents[0]},
                         *({"role": "user", "content": c} for c in contents[1:])]}


def test_prefix_figures() -> None:
    long = " ".join(f"word{i}" for i in range(700))  # well over 1,024 tokens
    same = body(long, "q1")
    grown = body(long, "q1", "q2")
    moved = body("changed " + long, "q1", "q2")
    figures = prefix_figures([same, same, grown, moved])
    first, again, longer, changed = figures["requests"]
    n = len(tokenize(prompt_text(same)))
    assert first["prompt_tokens"] == n and first["prefix_tokens"] == 0  # nothing before the first request
    assert again["prefix_tokens"] == n and again["prefix_share"] == 1.0
    assert again["openai_cached_tokens"] == n // 128 * 128 and n >= 1024
    assert n - 3 <= longer["prefix_tokens"] <= n < longer["prompt_tokens"]  # up to the token boundary
    assert changed["prefix_tokens"] < 10 and changed["openai_cached_tokens"] == 0
    later = figures["requests"][1:]
    assert figures["prompt_tokens"] == sum(r["prompt_tokens"] for r in later)
    assert figures["prefix_share"] == round(sum(r["prefix_tokens"] for r in later) / figures["prompt_tokens"], 4)
    # a Responses request reads the same as the chat request it stands for
    assert prompt_text({"instructions": "S", "input": "q"}) == prompt_text(body("S", "q"))


def test_bench_prefix_command(tmp_path: Path) -> None:
    out = tmp_path / "prefix.json"
    res = CliRunner().invoke(bench_app, ["prefix", "--embedder", "hash", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    split, system = result["placements"]["split"], result["placements"]["system"]
    assert len(split["requests"]) == len(system["requests"]) == len(CONVERSATION) == 20
    # the stable part never moves with "split"; the whole block changes the first message every time
    assert split["leading_system_variants"] == 1 and system["leading_system_variants"] == len(CONVERSATION)
    assert split["injected_messages"] == len(CONVERSATION) and system["injected_messages"] == 0
    assert split["prefix_share"] > 2 * system["prefix_share"]
    assert split["openai_cached_tokens"] > system["openai_cached_tokens"]
    assert "split" in res.output and "system" in res.output


def test_bench_prefix_refuses_an_unknown_embedder(tmp_path: Path) -> None:
    res = CliRunner().invoke(bench_app, ["prefix", "--embedder", "bert", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "minilm or hash" in res.output
    assert not (tmp_path / "x.json").exists()
