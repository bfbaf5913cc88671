"""``memstore eval`` and ``memstore bench``: typer apps, mounted by memstore/cli.py.

Importing this module is cheap (typer only); each command imports what it needs when it runs.
``python -m memstore.cli.eval eval ...`` / ``... bench ...`` run them without the main CLI.
"""

from __future__ import annotations

from pathlib import Path

import typer

eval_app = typer.Typer(help="Benchmarks of retrieval quality: LoCoMo evidence recall, PrefEval preference recall, "
                            "and the no-LLM extraction path.",
                       no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Latency and throughput benchmarks: search, ingest, client overhead, CLI start-up, "
                             "the proxy server, server backends, the embedding runtimes, prompt-cache prefix "
                             "reuse.",
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
        help="library (what Memory.search, MemoryClient and serve use: the default) or a search preset, for "
             "ablations: rrf, score, context, neighbours, names, no_recency, dense, lexical, hybrid. Repeat to "
             "compare several on one ingested store."),
    text: str = typer.Option("keyed", "--text", help="raw mode: keyed ('Speaker (date): text') or plain."),
    conversations: str = typer.Option(None, "--conversations", help="Subset, e.g. '0-2' or '0,3'."),
    held_out_from: int = typer.Option(3, "--held-out-from",
                                      help="Report conversations before this index as 'tune', the rest as "
                                           "'held_out' (settings were chosen on 0-2)."),
    extractor: str = typer.Option(
        None, "--extractor",
        help="extract mode: heuristic, llm (default: config) or observations (the dataset's LLM-written "
             "observations replayed as the extractor's output: extract mode with model-quality facts, offline)."),
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
    from memstore.eval.locomo import EXTRACTORS, check_retrievers, print_report, run_locomo

    if mode not in ("raw", "extract"):
        raise typer.BadParameter("raw or extract", param_hint="--mode")
    if text not in ("keyed", "plain"):
        raise typer.BadParameter("keyed or plain", param_hint="--text")
    try:
        retriever = check_retrievers(retriever or ["library"])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retriever") from exc
    extractor = "heuristic" if extractor == "rules" else extractor  # its old name
    if extractor is not None and extractor not in EXTRACTORS:
        raise typer.BadParameter(f"one of {', '.join(EXTRACTORS)}", param_hint="--extractor")
    result = run_locomo(data, mode=mode, ks=_ks(k, more_k), retrievers=retriever, text=text,
                        conversations=_indices(conversations), held_out_from=held_out_from, store=store,
                        config=MemoryConfig(), show_progress=progress, extractor=extractor)
    for res in result["retrievers"].values():
        rows = res.pop("questions")
        if per_question:
            res["questions"] = [{key: r[key] for key in ("conversation", "category", "recall", "tokens",
                                                         "latency_s")} for r in rows]
    write_json(out, result)
    print_report(result)
    typer.echo(f"wrote {out}")


@eval_app.command("followups")
def followups_cmd(
    distractors: int = typer.Option(500, "--distractors", min=0, help="Synthetic memories besides the facts."),
    out: Path = typer.Option(Path("followups.json"), "--out", help="JSON result file."),
) -> None:
    """Follow-up messages ("what about her?"): is the memory they need in the injected block, with the query
    built from the conversation (the default) vs from the latest message only? A small built-in set."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.common import write_json
    from memstore.eval.followups import run_followups

    result = run_followups(distractors=distractors)
    write_json(out, result)
    ib = result["in_block"]
    typer.echo(f"{result['cases']} follow-ups among {result['memories']} memories: the needed memory is in the "
               f"block for {ib['conversation_query']:.1f}% with the conversation as the query, "
               f"{ib['latest_message_only']:.1f}% with the latest message only "
               f"({result['tokens_mean']:.0f} tokens on average)")
    typer.echo(f"wrote {out}")


@eval_app.command("prefeval")
def prefeval_cmd(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False,
                              help="PrefEval directory (explicit_preference/, filtered_inter_turns.json)."),
    distractors: list[int] = typer.Option([300], "--distractors", help="Distractor turns: 10, 70 or 300 (repeat)."),
    limit: int = typer.Option(None, "--limit", help="At most this many items, spread evenly over the topics."),
    extractor: str = typer.Option("heuristic", "--extractor", help="heuristic or llm."),
    token_budget: int = typer.Option(None, "--token-budget", help="Context budget (default: config, 800)."),
    sets: list[str] = typer.Option(None, "--set", help="explicit (stated preferences: the default), choice-based "
                                   "or persona-driven (implicit: a conversation reveals it). Repeat for several."),
    out: Path = typer.Option(Path("prefeval-results.json"), "--out", help="JSON result file."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """PrefEval: is the user's preference (stated, or revealed by a conversation) in the injected block after N
    distractors?"""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.config import MemoryConfig
    from memstore.eval.common import write_json
    from memstore.eval.prefeval import SETS, print_report, run_prefeval

    bad = [s for s in sets or [] if s not in SETS]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)}: use {', '.join(SETS)}", param_hint="--set")
    cfg = MemoryConfig(extractor=extractor, **({"token_budget": token_budget} if token_budget else {}))
    result = run_prefeval(data, distractors=distractors, limit=limit, config=cfg, show_progress=progress,
                          sets=sets or ["explicit"])
    write_json(out, result)
    print_report(result)
    typer.echo(f"wrote {out}")


@eval_app.command("extraction")
def extraction_cmd(
    locomo: Path = typer.Option(None, "--locomo", exists=True, dir_okay=False,
                                help="LoCoMo JSON file: the gate's and the heuristic extractor's turn-level precision/"
                                     "recall against the dataset's observation annotations."),
    prefeval: Path = typer.Option(None, "--prefeval", exists=True, file_okay=False,
                                  help="PrefEval directory: the share of distractor turns the gate skips (LLM "
                                       "calls saved) and of preference statements it lets through."),
    out: Path = typer.Option(Path("extraction-results.json"), "--out", help="JSON result file."),
    full: bool = typer.Option(False, "--full", help="Keep per-conversation / per-topic rows in the JSON."),
) -> None:
    """The no-LLM path: the extraction gate and the heuristic extractor, measured on LoCoMo and PrefEval."""
    from rich.table import Table

    from memstore.eval.common import console, environment, write_json
    from memstore.eval.extraction import locomo_observation_prf, prefeval_gate_savings

    if locomo is None and prefeval is None:
        raise typer.BadParameter("give --locomo FILE, --prefeval DIR or both", param_hint="--locomo / --prefeval")
    result: dict[str, object] = {"benchmark": "extraction", "environment": environment()}
    out_console = console()
    if locomo is not None:
        res = locomo_observation_prf(locomo)
        if not full:
            res.pop("per_conversation", None)
        result["locomo"] = res
        table = Table(title=f"LoCoMo: which of {res['turns']:,} turns carry a fact "
                            f"({res['fact_bearing_turns']:,} per the observations)")
        for col_name in ("predictor", "precision", "recall", "F1", "turns predicted"):
            table.add_column(col_name, justify="left" if col_name == "predictor" else "right")
        for name, label in (("gate", "gate (opens for the extractor)"), ("extractor", "gate + heuristic extractor"),
                            ("baseline_every_turn", "every turn (baseline)")):
            r = res[name]
            table.add_row(label, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                          f"{r['tp'] + r['fp']:,}")
        out_console.print(table)
    if prefeval is not None:
        res = prefeval_gate_savings(prefeval)
        if not full:
            res.pop("per_topic", None)
        result["prefeval"] = res
        table = Table(title="PrefEval: the gate before the extraction model")
        table.add_column("turns")
        table.add_column("count", justify="right")
        table.add_column("through the gate", justify="right")
        table.add_row("distractor chat turns", f"{res['distractor_turns']:,}",
                      f"{res['distractor_turns'] - res['gate_skipped']:,} ({1 - res['skip_rate']:.1%}; "
                      f"{res['skip_rate']:.1%} of LLM calls saved)")
        table.add_row("explicit preference statements", f"{res['preference_statements']:,}",
                      f"{res['gate_passed']:,} ({res['pass_rate']:.1%})")
        out_console.print(table)
    write_json(out, result)
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
    from memstore.eval.bench.runs import bench_search, print_search
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
    from memstore.eval.bench.runs import bench_ingest, print_ingest
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
    from memstore.eval.bench.runs import bench_overhead, print_overhead
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
    from memstore.eval.bench.runs import bench_cli, print_cli
    from memstore.eval.common import write_json

    result = bench_cli(commands=command or None, repeats=repeats)
    write_json(out, result)
    print_cli(result)
    typer.echo(f"wrote {out}")


@bench_app.command("embed")
def bench_embed_cmd(
    queries: int = typer.Option(200, "--queries", help="Timed single-query embeddings per run and runtime."),
    batches: int = typer.Option(20, "--batches", help="Timed batches per run and runtime."),
    batch: int = typer.Option(32, "--batch", help="Texts per batch."),
    repeats: int = typer.Option(5, "--repeats", help="Fresh processes per runtime (each: cold start, queries, "
                                                     "batches); medians are reported."),
    out: Path = typer.Option(Path("bench-embed.json"), "--out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The bundled embedding model on torch (sentence-transformers) against onnxruntime: one query p50, batch
    texts/s, and cold start (import to first vector in a fresh process)."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench.embed import bench_embed, print_embed
    from memstore.eval.common import write_json

    result = bench_embed(queries=queries, batches=batches, batch=batch, repeats=repeats, show_progress=progress)
    write_json(out, result)
    print_embed(result)
    typer.echo(f"wrote {out}")


@bench_app.command("startup")
def bench_startup_cmd(
    memories: int = typer.Option(1000, "--memories", min=1, help="Memories in the existing store."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Fresh processes of each kind; medians reported."),
    out: Path = typer.Option(Path("bench-startup.json"), "--out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fresh-process start-up on an existing store: to the first MemoryClient reply, to a healthy memstore
    serve, and memstore memories list."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench.startup import bench_startup, print_startup
    from memstore.eval.common import write_json

    result = bench_startup(memories=memories, repeats=repeats, show_progress=progress)
    write_json(out, result)
    print_startup(result)
    typer.echo(f"wrote {out}")


@bench_app.command("prefix")
def bench_prefix_cmd(
    embedder: str = typer.Option("minilm", "--embedder",
                                 help="minilm (the bundled model: realistic recall) or hash (no model, faster)."),
    out: Path = typer.Option(Path("bench-prefix.json"), "--out", help="JSON result file "
                                                                      "(docs/results/bench_prefix.json)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Prompt-cache friendliness of each injection placement (MemoryConfig.injection): a MemoryClient replays a
    20-turn conversation against the scripted upstream, and each request's token-level common prefix with the
    previous one is reported, with what OpenAI's rule (1,024 tokens, 128-token steps) would bill as cached."""
    if embedder not in ("minilm", "hash"):
        raise typer.BadParameter("must be minilm or hash", param_hint="--embedder")
    from memstore.eval.common import offline_env

    offline_env()
    from memstore.eval.bench.prefix import bench_prefix, print_prefix
    from memstore.eval.common import write_json

    result = bench_prefix(embedder=embedder, show_progress=progress)
    write_json(out, result)
    print_prefix(result)
    typer.echo(f"wrote {out}")


@bench_app.command("server")
def bench_server_cmd(
    requests: int = typer.Option(800, "--requests", help="Requests per concurrent scenario."),
    concurrency: int = typer.Option(16, "--concurrency", help="Concurrent clients."),
    sequential_requests: int = typer.Option(100, "--sequential-requests",
                                            help="Requests of the one-client runs (the proxy's own overhead)."),
    memories: int = typer.Option(20, "--memories", help="Memories per user (16 users)."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run background extraction in the proxy."),
    out: Path = typer.Option(Path("bench-server.json"), "--out", help="JSON result file."),
    write: Path = typer.Option(None, "--write", help="Also write the Markdown report here "
                                                      "(docs/benchmarks-server.md)."),
) -> None:
    """memstore serve under load: throughput and p50/p95 with N concurrent openai SDK clients against the scripted
    upstream, and the proxy's overhead per request over calling that upstream directly."""
    from memstore.eval.common import offline_env

    offline_env()
    from rich.table import Table

    from memstore.eval.bench.server import run_server_bench, to_markdown
    from memstore.eval.common import console, write_json

    report = run_server_bench(requests, concurrency, sequential_requests, memories, worker=worker,
                              progress=lambda m: typer.echo(f"[bench] {m}", err=True))
    write_json(out, report)
    table = Table(title=f"memstore serve, {concurrency} concurrent clients / 1 client")
    for name in ("scenario", "clients", "req/s", "p50 ms", "p95 ms", "errors"):
        table.add_column(name, justify="left" if name == "scenario" else "right")
    for name, res in report["results"].items():
        table.add_row(name, str(res["concurrency"]), str(res["throughput_rps"]), str(res["p50_ms"]),
                      str(res["p95_ms"]), str(res["errors"]))
    console().print(table)
    for name, over in report["overhead_vs_direct"].items():
        typer.echo(f"{name}: +{over['p50_ms']} ms p50 over the upstream directly (one client)")
    if write is not None:
        command = (f"memstore bench server --requests {requests} --concurrency {concurrency} --sequential-requests "
                   f"{sequential_requests} --memories {memories} "
                   f"{'--worker' if worker else '--no-worker'} --out {out} --write {write}")
        write.write_text(to_markdown(report, command), encoding="utf-8")
    typer.echo(f"wrote {out}" + (f" and {write}" if write is not None else ""))


@bench_app.command("backends")
def bench_backends_cmd(
    database_url: str = typer.Option(None, "--database-url", envvar="MEMSTORE_BENCH_DATABASE_URL",
                                     help="PostgreSQL SQLAlchemy URL of a database the role may create schemas in; "
                                          "without it only the embedded defaults are measured."),
    vector_url: str = typer.Option(None, "--vector-url", envvar="MEMSTORE_BENCH_VECTOR_URL",
                                   help="chroma server URL (default: one is started for the run)."),
    memories: int = typer.Option(10_000, "--memories", help="Memories in each store."),
    users: int = typer.Option(100, "--users"),
    queries: int = typer.Option(200, "--queries", help="Timed searches per run and user kind."),
    repeats: int = typer.Option(3, "--repeats"),
    ingest_messages: int = typer.Option(1000, "--ingest-messages", help="Messages per ingest run."),
    batch: int = typer.Option(50, "--batch", help="Messages per Memory.add call in the ingest runs."),
    embedder: str = typer.Option("minilm", "--embedder",
                                 help="minilm (the bundled model, end to end) or hash (no model: the backends' "
                                      "own cost)."),
    out: Path = typer.Option(Path("bench-backends.json"), "--out", help="JSON result file."),
    write: Path = typer.Option(None, "--write", help="Also write (or with --append, add to) this Markdown file."),
    append: bool = typer.Option(False, "--append", help="Append the section to --write instead of replacing it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Search p50/p95 and ingest rate on PostgreSQL + a chroma server against the embedded defaults."""
    from memstore.eval.bench.backends import main as backends_main

    if embedder not in ("minilm", "hash"):
        raise typer.BadParameter("minilm or hash", param_hint="--embedder")
    argv = ["--memories", str(memories), "--users", str(users), "--queries", str(queries), "--repeats", str(repeats),
            "--ingest-messages", str(ingest_messages), "--batch", str(batch), "--embedder", embedder,
            "--json", str(out)]
    for flag, value in (("--database-url", database_url), ("--vector-url", vector_url), ("--write", write)):
        if value:
            argv += [flag, str(value)]
    if append:
        argv.append("--append")
    if not progress:
        argv.append("--no-progress")
    code = backends_main(argv)
    if code:
        raise typer.Exit(code)


def _root() -> typer.Typer:
    root = typer.Typer(no_args_is_help=True)
    root.add_typer(eval_app, name="eval")
    root.add_typer(bench_app, name="bench")
    return root


if __name__ == "__main__":
    _root()()
