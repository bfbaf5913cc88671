"""``memstore eval`` and ``memstore bench``: typer apps, mounted by memstore/cli.py.

Importing this module is cheap (typer only); each command imports what it needs when it runs.
``python -m memstore.eval.cli eval ...`` / ``... bench ...`` run them without the main CLI.
"""

from __future__ import annotations

from pathlib import Path

import typer

eval_app = typer.Typer(help="Benchmarks of retrieval quality: LoCoMo evidence recall, PrefEval preference recall.",
                       no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Latency and throughput benchmarks: search, ingest, client overhead, CLI start-up.",
                        no_args_is_help=True, add_completion=False)


def _ks(first: list[int] | None, more: list[int] | None) -> list[int]:
    out: list[int] = []
    for v in [*(first or []), *(more or [])]:
        if v <= 0:
            raise typer.BadParameter("k must be positive", param_hint="--k")
        out.append(v)
    return sorted(set(out)) or [5, 10, 25]


def _indices(spec: str | None) -> list[int] | None:
    """"0-2,4" -> [0, 1, 2, 4]."""
    if not spec:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


@eval_app.command("locomo")
def locomo_cmd(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="locomo JSON file."),
    mode: str = typer.Option("raw", "--mode", help="raw: one memory per turn; extract: the configured extractor."),
    k: list[int] = typer.Option(None, "--k", help="Cut-offs, e.g. --k 5 10 25 (default 5 10 25)."),
    more_k: list[int] = typer.Argument(None, hidden=True),
    retriever: list[str] = typer.Option(
        None, "--retriever", "-r",
        help="library (Memory.search, no_recency) or a PLUS_PRESETS step: rrf, score, context, neighbours, "
             "speakers, plus (raw mode only). Repeat to compare several on one ingested store. "
             "Default: plus in raw mode, library in extract mode."),
    text: str = typer.Option("keyed", "--text", help="raw mode: keyed ('Speaker (date): text') or plain."),
    conversations: str = typer.Option(None, "--conversations", help="Subset, e.g. '0-2' or '0,3'."),
    held_out_from: int = typer.Option(3, "--held-out-from",
                                      help="Report conversations before this index as 'tune', the rest as "
                                           "'held_out' (settings were chosen on 0-2)."),
    extractor: str = typer.Option(None, "--extractor", help="extract mode: rules or llm (default: config)."),
    store: Path = typer.Option(None, "--store", help="Keep the ingested store here (default: a temp dir)."),
    out: Path = typer.Option(Path("locomo-results.json"), "--out", help="JSON result file."),
    per_question: bool = typer.Option(False, "--per-question",
                                      help="Keep per-question scores (ids and numbers, no dataset text)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """LoCoMo turn-level evidence recall@k, overall and per category, with tokens and search latency."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.config import MemoryConfig
    from memstore.eval.common import write_json
    from memstore.eval.locomo import print_report, run_locomo

    if mode not in ("raw", "extract"):
        raise typer.BadParameter("raw or extract", param_hint="--mode")
    if text not in ("keyed", "plain"):
        raise typer.BadParameter("keyed or plain", param_hint="--text")
    retriever = retriever or (["plus"] if mode == "raw" else ["library"])
    if mode == "extract" and any(r != "library" for r in retriever):
        raise typer.BadParameter("extract mode uses the library retriever", param_hint="--retriever")
    cfg = MemoryConfig(extractor=extractor) if extractor else MemoryConfig()
    result = run_locomo(data, mode=mode, ks=_ks(k, more_k), retrievers=retriever, text=text,
                        conversations=_indices(conversations), held_out_from=held_out_from, store=store,
                        config=cfg, show_progress=progress)
    for res in result["retrievers"].values():
        rows = res.pop("questions")
        if per_question:
            res["questions"] = [{key: r[key] for key in ("conversation", "category", "recall", "tokens",
                                                         "latency_s")} for r in rows]
    write_json(out, result)
    print_report(result)
    typer.echo(f"wrote {out}")


@eval_app.command("prefeval")
def prefeval_cmd(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False,
                              help="PrefEval directory (explicit_preference/, filtered_inter_turns.json)."),
    distractors: list[int] = typer.Option([300], "--distractors", help="Distractor turns: 10, 70 or 300 (repeat)."),
    limit: int = typer.Option(None, "--limit", help="At most this many items, spread evenly over the topics."),
    extractor: str = typer.Option("rules", "--extractor", help="rules or llm."),
    token_budget: int = typer.Option(None, "--token-budget", help="Context budget (default: config, 800)."),
    out: Path = typer.Option(Path("prefeval-results.json"), "--out", help="JSON result file."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """PrefEval explicit preferences: is the stated preference in the injected block after N distractors?"""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.config import MemoryConfig
    from memstore.eval.common import write_json
    from memstore.eval.prefeval import print_report, run_prefeval

    cfg = MemoryConfig(extractor=extractor, **({"token_budget": token_budget} if token_budget else {}))
    result = run_prefeval(data, distractors=distractors, limit=limit, config=cfg, show_progress=progress)
    write_json(out, result)
    print_report(result)
    typer.echo(f"wrote {out}")


@bench_app.command("search")
def bench_search_cmd(
    sizes: list[int] = typer.Option([1000, 10000, 100000], "--sizes", help="Store sizes (repeat the option)."),
    users: int = typer.Option(100, "--users", help="Users the memories are spread over."),
    heavy_share: float = typer.Option(0.1, "--heavy-share",
                                      help="Share of the store owned by one heavy user (measured separately)."),
    queries: int = typer.Option(200, "--queries", help="Timed searches per size and user kind."),
    repeats: int = typer.Option(3, "--repeats", help="Repeated runs; medians are reported."),
    store: Path = typer.Option(None, "--store", help="Work directory (default: a temp dir)."),
    plot: Path = typer.Option(Path("bench-search.png"), "--plot", help="Log-scale PNG plot."),
    out: Path = typer.Option(Path("bench-search.json"), "--out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Search p50/p95 against store size, and the cost of embedding one query."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench import bench_search, print_search
    from memstore.eval.common import write_json

    result = bench_search(sizes, users=users, heavy_share=heavy_share, queries=queries, repeats=repeats,
                          workdir=store, plot=plot, show_progress=progress)
    write_json(out, result)
    print_search(result)
    typer.echo(f"wrote {out}" + (f" and {plot}" if result.get("plot") else ""))


@bench_app.command("ingest")
def bench_ingest_cmd(
    messages: int = typer.Option(2000, "--messages", help="Messages per run."),
    batch: int = typer.Option(50, "--batch", help="Messages per Memory.add call (1 = one call each)."),
    repeats: int = typer.Option(3, "--repeats"),
    out: Path = typer.Option(Path("bench-ingest.json"), "--out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Memory.add(infer=False) throughput in messages/s (batch embedding)."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench import bench_ingest, print_ingest
    from memstore.eval.common import write_json

    result = bench_ingest(messages=messages, batch=batch, repeats=repeats, show_progress=progress)
    write_json(out, result)
    print_ingest(result)
    typer.echo(f"wrote {out}")


@bench_app.command("overhead")
def bench_overhead_cmd(
    memories: int = typer.Option(10000, "--memories", help="Memories of the requesting user."),
    requests: int = typer.Option(200, "--requests", help="Timed requests per client per run."),
    repeats: int = typer.Option(3, "--repeats"),
    out: Path = typer.Option(Path("bench-overhead.json"), "--out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """MemoryClient's added latency per request against plain litellm, both to the scripted local server."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench import bench_overhead, print_overhead
    from memstore.eval.common import write_json

    result = bench_overhead(memories=memories, requests=requests, repeats=repeats, show_progress=progress)
    write_json(out, result)
    print_overhead(result)
    typer.echo(f"wrote {out}")


@bench_app.command("cli")
def bench_cli_cmd(
    command: list[str] = typer.Option(None, "--command", "-c",
                                      help="A memstore command line to time (repeat); default: --help, "
                                           "users list, memories list --user bench."),
    repeats: int = typer.Option(7, "--repeats"),
    out: Path = typer.Option(Path("bench-cli.json"), "--out"),
) -> None:
    """Start-up time of memstore commands (a fresh subprocess each run; median)."""
    from memstore.eval.bench import bench_cli, print_cli
    from memstore.eval.common import write_json

    result = bench_cli(commands=command or None, repeats=repeats)
    write_json(out, result)
    print_cli(result)
    typer.echo(f"wrote {out}")


def _root() -> typer.Typer:
    root = typer.Typer(no_args_is_help=True)
    root.add_typer(eval_app, name="eval")
    root.add_typer(bench_app, name="bench")
    return root


if __name__ == "__main__":
    _root()()
