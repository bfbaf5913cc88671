"""Search latency and ingest rate: PostgreSQL + a chroma server vs the embedded defaults (SQLite + chroma).

Both stores get the same synthetic memories (``memstore.eval.bench.runs.sentences``), the same users and the
same queries; search and ingest runs alternate between the backends so that a busy machine slows both
alike. Each search is timed whole and in parts (query embedding, dense query, lexical query), so the
backend's own cost (everything but the embedding, which is identical on both) is visible.

    python -m memstore.eval.bench.backends --database-url postgresql+psycopg://u:p@127.0.0.1/db \\
        [--vector-url http://127.0.0.1:8000] --write docs/benchmarks-backends.md

Without ``--vector-url`` a chroma server is started from this environment (``chroma run``) on a free port.
The PostgreSQL role needs CREATE on the database: the benchmark works in a schema of its own, dropped at
the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memstore.eval.bench.runs import _layout, _median, questions, sentences
from memstore.eval.common import environment, offline_env, percentile, progress, summary_ms, write_json

BACKENDS = ("embedded", "servers")


# ---- the servers --------------------------------------------------------------------------------------

@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    """``chroma run`` from this environment on 127.0.0.1 (telemetry off) for the duration."""
    from memstore.testing.chroma_server import start_chroma_server, stop

    proc, url = start_chroma_server(path)
    try:
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh schema in the database; yields the URL that uses it (search_path), drops it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from memstore.storage.db import dispose_engine

    name = "bench_" + uuid.uuid4().hex[:12]
    admin = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={name}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        yield rendered
    finally:
        dispose_engine(rendered)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def _redact(url: str | None) -> str | None:
    if not url or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# ---- the benchmark ------------------------------------------------------------------------------------

def _fill(mem: Any, want: dict[str, int], seed: int) -> float:
    """Stores the synthetic memories of every user (add_many, batches of 1,000); returns seconds."""
    t0 = time.perf_counter()
    for u, n in want.items():
        done = 0
        while done < n:
            chunk = min(1000, n - done)
            seed += 1
            mem.store.add_many(u, "default", [{"text": t, "kind": "fact"} for t in sentences(chunk, seed)],
                               actor="import")
            done += chunk
    return time.perf_counter() - t0


def _search_run(mem: Any, user: str, qs: list[str], limit: int) -> dict[str, Any]:
    from memstore.recall.search import hybrid_search

    total: list[float] = []
    parts: dict[str, list[float]] = {"embed": [], "dense": [], "lexical": [], "backend": []}
    for q in qs:
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        hybrid_search(mem.store, q, user, "default", limit, settings=mem.search_settings, timings=tm)
        dt = time.perf_counter() - t0
        total.append(dt)
        for key in ("embed", "dense", "lexical"):
            parts[key].append(tm.get(key, 0.0))
        parts["backend"].append(dt - tm.get("embed", 0.0))  # everything the store does for one search
    out: dict[str, Any] = summary_ms(total)
    out["parts"] = {k: {"p50_ms": round(percentile([v * 1000 for v in vals], 50), 3),
                        "p95_ms": round(percentile([v * 1000 for v in vals], 95), 3)} for k, vals in parts.items()}
    return out


def _ingest_run(mem: Any, user: str, texts: list[str], batch: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        mem.add([{"role": "user", "content": t} for t in texts[i:i + batch]], user_id=user, namespace="ingest",
                infer=False)
    dt = time.perf_counter() - t0
    return {"messages": len(texts), "seconds": round(dt, 3), "messages_per_s": round(len(texts) / dt, 1)}


def run_backend_bench(
    database_url: str | None = None,
    vector_url: str | None = None,
    memories: int = 10_000,
    users: int = 100,
    heavy_share: float = 0.1,
    queries: int = 200,
    repeats: int = 3,
    limit: int = 10,
    ingest_messages: int = 1000,
    batch: int = 50,
    embedder_factory: Any = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Search p50/p95 (heavy and typical user) and ``Memory.add(infer=False)`` ingest rate on the embedded
    defaults and, when ``database_url`` is given, on PostgreSQL + a chroma server (``vector_url``, or one
    started for the run). ``embedder_factory()`` builds each store's embedder (default: the bundled
    MiniLM, a fresh query cache per store). Returns a JSON-serialisable dict."""
    offline_env()
    from memstore.config import MemoryConfig
    from memstore.memory import Memory
    from memstore.storage.embed import SentenceTransformerEmbedder

    make_embedder = embedder_factory or SentenceTransformerEmbedder
    want = _layout(memories, users, heavy_share)
    typical = "u001" if users > 1 else "u000"
    with contextlib.ExitStack() as stack, progress(show_progress) as bar:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memstore-bench-backends-")))
        stores: dict[str, Any] = {"embedded": Memory(config=MemoryConfig(home=work / "embedded"),
                                                     embedder=make_embedder())}
        if database_url:
            url = stack.enter_context(postgres_schema(database_url))
            vurl = vector_url or stack.enter_context(chroma_server(work / "chroma-server" / "data"))
            collection = "bench_" + uuid.uuid4().hex[:12]
            stores["servers"] = Memory(config=MemoryConfig(home=work / "servers", database_url=url, vector_url=vurl,
                                                           collection=collection), embedder=make_embedder())
            stack.callback(lambda: stores["servers"].store.index.reset())
        rows: dict[str, dict[str, Any]] = {name: {} for name in stores}
        embedder_name = stores["embedded"].store.embedder.name
        for name, mem in stores.items():
            task = bar.add_task(f"{name}: storing {memories:,} memories", total=None)
            mem.add("warm up the model and the index", user_id="warmup", infer=False)
            seconds = _fill(mem, want, seed=10)
            bar.update(task, total=1, completed=1)
            rows[name]["build"] = {"memories": memories, "seconds": round(seconds, 2),
                                   "memories_per_s": round(memories / seconds, 1)}
            for user in {"u000", typical}:
                mem.search("warm up", user_id=user)
        search_runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"heavy": [], "typical": []} for n in stores}
        task = bar.add_task("searching", total=repeats * len(stores) * queries * 2)
        for r in range(repeats):
            for kind, user in (("heavy", "u000"), ("typical", typical)):
                qs = questions(queries, seed=100 * r + (kind == "heavy"))
                for name, mem in stores.items():  # alternate: the same queries on each backend in turn
                    search_runs[name][kind].append(_search_run(mem, user, qs, limit))
                    bar.advance(task, queries)
        ingest_runs: dict[str, list[dict[str, Any]]] = {n: [] for n in stores}
        task = bar.add_task("ingesting", total=repeats * len(stores) * ingest_messages)
        for r in range(repeats):
            texts = sentences(ingest_messages, seed=500 + r)
            for name, mem in stores.items():
                ingest_runs[name].append(_ingest_run(mem, f"ingest-{r}", texts, batch))
                bar.advance(task, ingest_messages)
        for name in stores:
            for kind in ("heavy", "typical"):
                runs = search_runs[name][kind]
                rows[name][f"search_{kind}"] = {
                    "user_memories": want["u000" if kind == "heavy" else typical],
                    "p50_ms": _median([x["p50_ms"] for x in runs]), "p95_ms": _median([x["p95_ms"] for x in runs]),
                    "parts_p50_ms": {p: _median([x["parts"][p]["p50_ms"] for x in runs]) for p in runs[0]["parts"]},
                    "parts_p95_ms": {p: _median([x["parts"][p]["p95_ms"] for x in runs]) for p in runs[0]["parts"]},
                    "runs": runs,
                }
            rows[name]["ingest"] = {"batch": batch, "runs": ingest_runs[name],
                                    "messages_per_s": _median([x["messages_per_s"] for x in ingest_runs[name]])}
        described = {"embedded": "SQLite (WAL) + embedded chroma (PersistentClient)"}
        if "servers" in stores:
            described["servers"] = (f"PostgreSQL ({_server_version(stores['servers'])}) + chroma server "
                                    f"({'given' if vector_url else 'started for the run'})")
    return {
        "benchmark": "backends", "memories": memories, "users": users, "heavy_share": heavy_share,
        "queries": queries, "repeats": repeats, "limit": limit, "ingest_messages": ingest_messages, "batch": batch,
        "database_url": _redact(database_url), "vector_url": vector_url, "backends": described, "rows": rows,
        "embedder": embedder_name,
        "environment": {**environment(), "load_average": _loadavg()},
    }


def _server_version(mem: Any) -> str:
    from sqlalchemy import text

    with mem.engine.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---- report -------------------------------------------------------------------------------------------

TITLE = "# Backends: PostgreSQL + chroma server vs the embedded defaults\n\n"


def to_markdown(result: dict[str, Any], command: str, date: str, load_before: list[float] | None = None) -> str:
    """One run's section of docs/benchmarks-backends.md."""
    env = result["environment"]
    m, v = env["machine"], env["versions"]
    rows = result["rows"]
    names = [n for n in BACKENDS if n in rows]
    embedder = result.get("embedder", "")
    lines = [
        f"## {result['memories']:,} memories, embedder: {embedder}",
        "",
        f"Date: {date}. Machine: {m['cpu_count']} CPU, {m['platform']}, Python {m['python']}; "
        f"chromadb {v.get('chromadb')}, torch {v.get('torch')}, "
        f"sentence-transformers {v.get('sentence-transformers')}.",
        f"Load average (1/5/15 min) before: {load_before}, after: {env.get('load_average')} "
        "(nothing but this benchmark and its servers ran; a higher load means other work shared the cores).",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"Store: {result['memories']:,} synthetic memories over {result['users']} users (one heavy user holds "
        f"{result['heavy_share']:.0%}), embedder {embedder}. Search: hybrid "
        f"(dense + lexical, limit {result['limit']}), {result['queries']} distinct queries per run, "
        f"{result['repeats']} runs, the medians of the runs' p50/p95; the backends take turns with the same "
        f"queries. Ingest: `Memory.add(infer=False)` with {result['batch']} messages per call, "
        f"{result['ingest_messages']} messages per run.",
        "",
        *[f"- **{n}**: {result['backends'][n]}" for n in names],
        "",
        "### Search latency",
        "",
        "| backend | user (memories) | p50 ms | p95 ms | embed p50 | dense p50 | lexical p50 | store p50 | store p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        for kind in ("heavy", "typical"):
            s = rows[n][f"search_{kind}"]
            p, q = s["parts_p50_ms"], s["parts_p95_ms"]
            lines.append(f"| {n} | {kind} ({s['user_memories']:,}) | {s['p50_ms']} | {s['p95_ms']} | {p['embed']} | "
                         f"{p['dense']} | {p['lexical']} | {p['backend']} | {q['backend']} |")
    lines += [
        "",
        "`store` is the search minus the query embedding: the dense query, the lexical query, fetching the",
        "rows and fusing them, i.e. what the backend itself costs (the embedding is the same on both).",
        "",
        "### Ingest rate",
        "",
        "| backend | messages/s (median) | runs | initial bulk load (add_many, 1,000 per call) |",
        "|---|---|---|---|",
    ]
    for n in names:
        ing, b = rows[n]["ingest"], rows[n]["build"]
        runs = ", ".join(str(r["messages_per_s"]) for r in ing["runs"])
        lines.append(f"| {n} | {ing['messages_per_s']} | {runs} | {b['memories_per_s']}/s "
                     f"({b['memories']:,} in {b['seconds']} s) |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memstore.eval.bench.backends", description=__doc__.split("\n")[0])
    p.add_argument("--database-url", default=os.environ.get("MEMSTORE_BENCH_DATABASE_URL"),
                   help="PostgreSQL SQLAlchemy URL (default $MEMSTORE_BENCH_DATABASE_URL); omit: embedded only")
    p.add_argument("--vector-url", default=os.environ.get("MEMSTORE_BENCH_VECTOR_URL"),
                   help="chroma server URL (default: start one for the run)")
    p.add_argument("--memories", type=int, default=10_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ingest-messages", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--embedder", choices=("minilm", "hash"), default="minilm",
                   help="minilm: the bundled model (end to end); hash: memstore.storage.embed.HashEmbedder, no model, "
                        "so that the figures are the backends' own cost")
    p.add_argument("--append", action="store_true", help="append this run's section to the --write file")
    p.add_argument("--json", dest="json_path", help="write the full result here")
    p.add_argument("--write", help="write the markdown report here (e.g. docs/benchmarks-backends.md)")
    p.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    load_before = _loadavg()
    factory = None
    if args.embedder == "hash":
        from memstore.storage.embed import HashEmbedder

        factory = HashEmbedder
    result = run_backend_bench(args.database_url, args.vector_url, memories=args.memories, users=args.users,
                               queries=args.queries, repeats=args.repeats, ingest_messages=args.ingest_messages,
                               batch=args.batch, embedder_factory=factory, show_progress=not args.no_progress)
    result["environment"]["load_average_before"] = load_before
    shown = ["memstore bench backends"]
    for flag, value in (("--database-url", _redact(args.database_url)), ("--vector-url", args.vector_url),
                        ("--memories", args.memories), ("--users", args.users), ("--queries", args.queries),
                        ("--repeats", args.repeats), ("--ingest-messages", args.ingest_messages),
                        ("--batch", args.batch), ("--embedder", args.embedder), ("--write", args.write),
                        ("--json", args.json_path), ("--date", args.date)):
        if value is not None:
            shown.append(f"{flag} {value}")
    if args.append:
        shown.append("--append")
    if args.json_path:
        write_json(args.json_path, result)
    if args.write:
        section = to_markdown(result, " ".join(shown), args.date, load_before)
        out = Path(args.write)
        if args.append and out.exists():
            out.write_text(out.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + section, encoding="utf-8")
        else:
            out.write_text(TITLE + section, encoding="utf-8")
    print(json.dumps({n: {"search_heavy_p50_ms": r["search_heavy"]["p50_ms"],
                          "search_heavy_p95_ms": r["search_heavy"]["p95_ms"],
                          "search_typical_p50_ms": r["search_typical"]["p50_ms"],
                          "search_typical_p95_ms": r["search_typical"]["p95_ms"],
                          "ingest_messages_per_s": r["ingest"]["messages_per_s"]}
                      for n, r in result["rows"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
