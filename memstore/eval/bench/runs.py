"""Latency and throughput benchmarks: ``memstore bench search | ingest | overhead | cli | embed``.

Every benchmark returns a JSON-serialisable dict with the machine, the versions and the medians over
repeated runs. Synthetic memories come from :func:`sentences`, a template generator with a varied
vocabulary, embedded in batches like any bulk import.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memstore.eval.common import environment, percentile, progress, summary_ms

# ---- synthetic text ---------------------------------------------------------------------------------

_SUBJECTS = ["I", "My sister", "My partner", "My manager", "My son", "My daughter", "My neighbour", "My friend Sam",
             "Our team", "My dad", "My mum", "My roommate", "My colleague Priya", "My cousin", "My coach"]
_VERBS = ["started learning", "stopped eating", "really enjoys", "cannot stand", "booked a trip to", "is allergic to",
          "bought", "is training for", "prefers", "switched to", "is reading about", "volunteers at",
          "moved closer to", "is saving up for", "gave up", "signed up for", "keeps forgetting", "recommended"]
_OBJECTS = ["Portuguese", "sourdough baking", "the piano", "a half marathon", "spicy food", "oat milk", "Lisbon",
            "a used Volvo", "vinyl records", "rock climbing", "the local food bank", "Kyoto", "dark roast coffee",
            "a standing desk", "watercolour painting", "peanuts", "chess openings", "a vegetarian diet",
            "the night shift", "salsa dancing", "electric bikes", "Norwegian crime novels", "a golden retriever",
            "cold showers", "the Berlin office", "gluten-free pasta", "board games", "a mechanical keyboard",
            "sea kayaking", "jazz guitar", "the Alps", "meal prepping", "birdwatching", "a smaller apartment"]
_WHEN = ["last week", "this spring", "two years ago", "every Sunday", "since March", "before the wedding",
         "after work", "on weekends", "in 2021", "recently", "during the holidays", "every morning", ""]
_TAILS = ["and loves it", "because of the doctor's advice", "to save money", "with a few friends",
          "despite the cost", "for the first time", "and wants tips", "but finds it hard", "", "", ""]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct, plausible memory-like sentences (deterministic for a seed)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_WHEN),
                 rng.choice(_TAILS)]
        text = " ".join(p for p in parts if p) + "."
        if text in seen:
            if tries > n * 20:  # the template space is exhausted: number the repeats
                text = f"{text[:-1]} (note {len(out)})."
            else:
                continue
        seen.add(text)
        out.append(text)
    return out


def questions(n: int, seed: int = 1) -> list[str]:
    """Distinct search queries in the same vocabulary (so every query is embedded, not cached)."""
    rng = random.Random(seed)
    forms = ["What does {s} think about {o}?", "Has {s} ever tried {o}?", "Tell me about {o}",
             "Any news on {o} for {s}?", "Should I suggest {o}?", "What did {s} say about {o} {w}?"]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        q = rng.choice(forms).format(s=rng.choice(_SUBJECTS[1:]).lower(), o=rng.choice(_OBJECTS),
                                     w=rng.choice(_WHEN)).replace(" ?", "?").replace("  ", " ")
        q = q if q not in seen else f"{q} ({len(out)})"
        seen.add(q)
        out.append(q)
    return out


@contextmanager
def _workdir(path: str | Path | None) -> Iterator[Path]:
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="memstore-bench-") as d:
        yield Path(d)


def _memory(home: Path, embedder: Any = None, **config: Any) -> Any:
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    return Memory(config=MemoryConfig(home=home, **config), embedder=embedder)


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


# ---- bench search -----------------------------------------------------------------------------------

def _layout(size: int, users: int, heavy_share: float) -> dict[str, int]:
    """Memories per user at a store size: user u000 owns ``heavy_share`` of the store, the rest is even."""
    heavy = round(size * heavy_share) if users > 1 else size
    rest = size - heavy
    out = {"u000": heavy}
    for i in range(1, users):
        out[f"u{i:03d}"] = rest // (users - 1) + (1 if i <= rest % (users - 1) else 0)
    return out


def bench_search(
    sizes: Sequence[int] = (1000, 10000, 100000),
    users: int = 100,
    heavy_share: float = 0.1,
    queries: int = 200,
    repeats: int = 3,
    limit: int = 10,
    workdir: str | Path | None = None,
    plot: str | Path | None = None,
    show_progress: bool = True,
    embedder: Any = None,
) -> dict[str, Any]:
    """Search latency (p50/p95, medians over ``repeats``) as the store grows, for the heavy user and for a
    typical user, plus the time to embed one query (the floor every search pays)."""
    from memstore.recall.search import hybrid_search

    sizes = sorted(set(int(s) for s in sizes))
    rows: list[dict[str, Any]] = []
    with _workdir(workdir) as home, progress(show_progress) as bar:
        mem = _memory(home, embedder)
        have: dict[str, int] = {}
        seed = 10
        embed_one: list[dict[str, float]] = []
        for size in sizes:
            want = _layout(size, users, heavy_share)
            todo = sum(max(0, want[u] - have.get(u, 0)) for u in want)
            task = bar.add_task(f"store {size:,}: embedding + indexing", total=todo)
            t0 = time.perf_counter()
            for u, n in want.items():
                missing = n - have.get(u, 0)
                while missing > 0:
                    chunk = min(missing, 1000)
                    seed += 1
                    texts = sentences(chunk, seed)
                    mem.store.add_many(u, "default", [{"text": t, "kind": "fact"} for t in texts], actor="import")
                    have[u] = have.get(u, 0) + chunk
                    missing -= chunk
                    bar.advance(task, chunk)
            build_s = time.perf_counter() - t0
            light = "u001" if users > 1 else "u000"
            per_kind: dict[str, Any] = {}
            qtask = bar.add_task(f"store {size:,}: searching", total=repeats * queries * (2 if users > 1 else 1))
            for kind, user in (("heavy", "u000"), ("typical", light)):
                if kind == "typical" and users == 1:
                    continue
                mem.search("warm up", user)  # repair check, model load, first chroma query
                cold = _cold_start(mem, user, limit)  # a process's first search of this scope, and the load
                runs = []
                parts: dict[str, list[float]] = {"embed": [], "dense": [], "lexical": []}
                for r in range(repeats):
                    times: list[float] = []
                    for q in questions(queries, seed=1000 * size + 100 * r + (kind == "heavy")):
                        tm: dict[str, float] = {}
                        t1 = time.perf_counter()
                        hybrid_search(mem.store, q, user, "default", limit, settings=mem.search_settings, timings=tm)
                        times.append(time.perf_counter() - t1)
                        for key in parts:
                            parts[key].append(tm.get(key, 0.0))
                        bar.advance(qtask)
                    runs.append(summary_ms(times))
                per_kind[kind] = {
                    "user_memories": want[user],
                    "p50_ms": _median([x["p50_ms"] for x in runs]), "p95_ms": _median([x["p95_ms"] for x in runs]),
                    "runs": runs,
                    "parts_p50_ms": {k: round(percentile([v * 1000 for v in vals], 50), 3)
                                     for k, vals in parts.items()},
                    "chroma_query_ms": _chroma_only(mem, user, limit, queries, seed=5_000_000 + size),
                    "cold": cold,
                }
            # one query embedding, uncached, as its own number
            emb_runs = []
            for r in range(repeats):
                ts = []
                for q in questions(queries, seed=7_000_000 + 1000 * size + r):
                    t1 = time.perf_counter()
                    mem.store.embedder.embed([q + " ?"])
                    ts.append(time.perf_counter() - t1)
                emb_runs.append(summary_ms(ts))
            emb = {"p50_ms": _median([x["p50_ms"] for x in emb_runs]),
                   "p95_ms": _median([x["p95_ms"] for x in emb_runs])}
            embed_one.append(emb)
            rows.append({"size": size, "users": users, "build_seconds": round(build_s, 1),
                         "build_rate_per_s": round(todo / build_s, 1) if build_s > 0 else None,
                         "embed_one_query": emb, **per_kind})
    result: dict[str, Any] = {"benchmark": "search", "sizes": sizes, "users": users, "heavy_share": heavy_share,
                              "queries": queries, "repeats": repeats, "limit": limit, "rows": rows,
                              "targets": _search_targets(rows), "environment": environment()}
    if plot:
        result["plot"] = _plot_search(rows, plot)
    return result


def _cold_start(mem: Any, user: str, limit: int, timeout: float = 300.0) -> dict[str, Any]:
    """A scope not in the vector cache yet: the first search (answered by chroma while a big scope loads in
    the background, or after an inline load of a small one) and the time until the cache holds the scope.
    Leaves the scope cached, so the timed searches that follow measure the steady state."""
    from memstore.recall.search import hybrid_search

    cache = mem.store.vector_cache
    if cache is None:
        return {}
    cache.clear()
    t0 = time.perf_counter()
    hybrid_search(mem.store, "what did I say about the weekend?", user, "default", limit, settings=mem.search_settings)
    first = time.perf_counter() - t0
    while not cache.holds(user, "default"):
        if time.perf_counter() - t0 > timeout:
            break
        time.sleep(0.01)
        hybrid_search(mem.store, "is it loaded yet?", user, "default", limit, settings=mem.search_settings)
    return {"first_search_ms": round(first * 1000, 2), "cached_after_s": round(time.perf_counter() - t0, 3)}


def _chroma_only(mem: Any, user: str, limit: int, queries: int, seed: int) -> dict[str, float]:
    """What the same dense query costs in chroma (scope filter in the collection), for comparison."""
    n = max(mem.search_settings.dense_candidates, limit * 4)  # the dense candidates hybrid_search asks for
    vecs = mem.store.embedder.embed(questions(min(queries, 100), seed=seed))
    times = []
    for v in vecs:
        t0 = time.perf_counter()
        mem.store.index.query(v, user, "default", n)
        times.append(time.perf_counter() - t0)
    s = summary_ms(times)
    return {"p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"]}


def _search_targets(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """p50 within 2x of one query embedding and p95 < 30 ms, where the searched user holds ~10k memories."""
    out: dict[str, Any] = {}
    for row in rows:
        for kind in ("heavy", "typical"):
            r = row.get(kind)
            if r and 5000 <= r["user_memories"] <= 20000:
                emb = row["embed_one_query"]["p50_ms"]
                out[f"{r['user_memories']} memories ({kind} user, store {row['size']})"] = {
                    "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "embed_p50_ms": emb,
                    "p50_within_2x_embed": r["p50_ms"] <= 2 * emb, "p95_under_30ms": r["p95_ms"] < 30,
                }
    return out


def _plot_search(rows: Sequence[Mapping[str, Any]], path: str | Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the optional "bench" extra
        return None
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for kind, style in (("heavy", "-"), ("typical", "--")):
        if all(kind in r for r in rows):
            lab = "heavy user" if kind == "heavy" else "typical user"
            ax.plot(sizes, [r[kind]["p50_ms"] for r in rows], "o" + style, label=f"search p50, {lab}")
            ax.plot(sizes, [r[kind]["p95_ms"] for r in rows], "s" + style, label=f"search p95, {lab}")
    ax.plot(sizes, [r["embed_one_query"]["p50_ms"] for r in rows], "^:", label="embed one query p50")
    ax.axhline(30, color="grey", linewidth=0.8, linestyle=":")
    ax.text(sizes[0], 31, "30 ms", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("memories in the store (100 users)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("memstore search latency vs store size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)


# ---- bench ingest -----------------------------------------------------------------------------------

def bench_ingest(messages: int = 2000, batch: int = 50, repeats: int = 3, show_progress: bool = True,
                 embedder: Any = None) -> dict[str, Any]:
    """``Memory.add(infer=False)`` throughput: ``batch`` user messages per call, one embedding call each; and,
    in the same run on the same texts in the same batches, the embedder's own throughput (``embedder.embed``
    alone: no SQL, no index), so the ratio says what the rest of the write path costs."""
    runs: list[dict[str, Any]] = []
    with _workdir(None) as home, progress(show_progress) as bar:
        mem = _memory(home, embedder)
        mem.add("warm up the model and the index", user_id="warmup", infer=False)
        task = bar.add_task("ingest", total=messages * repeats * 2)
        for r in range(repeats):
            texts = sentences(messages, seed=500 + r)
            t0 = time.perf_counter()
            for i in range(0, messages, batch):  # batch embeddings are not cached: the ingest pays them again
                mem.store.embedder.embed(texts[i:i + batch])
                bar.advance(task, min(batch, messages - i))
            embed_dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(0, messages, batch):
                mem.add([{"role": "user", "content": t} for t in texts[i:i + batch]], user_id=f"ingest-{r}",
                        infer=False)
                bar.advance(task, min(batch, messages - i))
            dt = time.perf_counter() - t0
            runs.append({"messages": messages, "seconds": round(dt, 3), "messages_per_s": round(messages / dt, 1),
                         "embed_seconds": round(embed_dt, 3), "embed_per_s": round(messages / embed_dt, 1),
                         "ratio": round(embed_dt / dt, 3)})
    return {"benchmark": "ingest", "messages": messages, "batch": batch, "repeats": repeats, "runs": runs,
            "messages_per_s": _median([r["messages_per_s"] for r in runs]), "target_per_s": 300,
            "embed_per_s": _median([r["embed_per_s"] for r in runs]),
            "ratio_to_embedder": _median([r["ratio"] for r in runs]), "target_ratio": 0.7,
            "environment": environment()}


# ---- bench overhead ---------------------------------------------------------------------------------

def bench_overhead(memories: int = 10000, requests: int = 200, repeats: int = 3, show_progress: bool = True,
                   embedder: Any = None) -> dict[str, Any]:
    """Per-request latency of MemoryClient vs the same request through plain litellm, both against the
    scripted local server, with ``memories`` stored for the user. Requests alternate between the two
    clients; every request has a new message (no embedding cache hits). The background worker is off:
    extraction is not on the request path, recording the turn is."""
    from memstore.eval.common import offline_env

    offline_env()
    from memstore import MemoryClient
    from memstore.llm import litellm
    from memstore.testing import ScriptedLLM

    plain_runs, client_runs, diff_runs = [], [], []
    with _workdir(None) as home, ScriptedLLM() as llm, progress(show_progress) as bar:
        mem = _memory(home, embedder, extractor="heuristic")
        task = bar.add_task(f"storing {memories:,} memories", total=memories)
        texts = sentences(memories, seed=77)
        for i in range(0, memories, 1000):
            mem.store.add_many("bench", "default", [{"text": t, "kind": "fact"} for t in texts[i:i + 1000]],
                               actor="import")
            bar.advance(task, min(1000, memories - i))
        client = MemoryClient(memory=mem, base_url=llm.base_url, api_key="x", user_id="bench", start_worker=False)
        model = "scripted-model"

        def plain(msg: str) -> None:
            litellm().completion(model=model, messages=[{"role": "user", "content": msg}], api_base=llm.base_url,
                               api_key="x", custom_llm_provider="openai", max_retries=2)

        def memclient(msg: str) -> None:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": msg}])

        for w in range(5):  # warm both paths (model load, connection pools, first queries)
            plain(f"warm up {w}")
            memclient(f"warm up client {w}")
        qtask = bar.add_task("requests", total=requests * repeats)
        for r in range(repeats):
            msgs = questions(2 * requests, seed=900 + r)
            tp, tc = [], []
            for i in range(requests):
                t0 = time.perf_counter()
                plain(msgs[2 * i])
                t1 = time.perf_counter()
                memclient(msgs[2 * i + 1])
                t2 = time.perf_counter()
                tp.append(t1 - t0)
                tc.append(t2 - t1)
                bar.advance(qtask)
            plain_runs.append(summary_ms(tp))
            client_runs.append(summary_ms(tc))
            diff_runs.append(summary_ms([c - p for c, p in zip(tc, tp, strict=True)]))
        client.close()
    return {
        "benchmark": "overhead", "memories": memories, "requests": requests, "repeats": repeats,
        "plain_litellm": {"p50_ms": _median([x["p50_ms"] for x in plain_runs]),
                          "p95_ms": _median([x["p95_ms"] for x in plain_runs]), "runs": plain_runs},
        "memory_client": {"p50_ms": _median([x["p50_ms"] for x in client_runs]),
                          "p95_ms": _median([x["p95_ms"] for x in client_runs]), "runs": client_runs},
        "added": {"p50_ms": _median([x["p50_ms"] for x in diff_runs]),
                  "p95_ms": _median([x["p95_ms"] for x in diff_runs]), "runs": diff_runs},
        "target_added_p50_ms": 15, "environment": environment(),
    }


# ---- bench cli --------------------------------------------------------------------------------------

DEFAULT_CLI_COMMANDS = ("--help", "users list", "memories list --user bench")


def bench_cli(commands: Sequence[str] | None = None, repeats: int = 7, timeout: float = 120.0) -> dict[str, Any]:
    """Wall time of ``memstore <command>`` in a fresh interpreter (``python -m memstore.cli``), median of
    ``repeats`` runs, against a small store (5 memories of user "bench") in a temporary home."""
    import shlex

    rows = []
    with tempfile.TemporaryDirectory(prefix="memstore-bench-cli-") as home:
        _seed_store(Path(home))
        env = {**os.environ, "MEMSTORE_HOME": home, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        root = str(Path(__file__).resolve().parents[3])  # the repo root (memstore/eval/bench/runs.py)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        baseline = _time_cmd([sys.executable, "-c", "pass"], env, repeats, timeout)
        for cmd in commands or DEFAULT_CLI_COMMANDS:
            argv = [sys.executable, "-m", "memstore.cli", *shlex.split(cmd)]
            res = _time_cmd(argv, env, repeats, timeout)
            rows.append({"command": f"memstore {cmd}", **res})
    return {"benchmark": "cli", "repeats": repeats, "python_startup": baseline, "commands": rows,
            "environment": environment()}


def _seed_store(home: Path) -> None:
    """A store with a few memories of user "bench", so list commands have something to show."""
    from memstore.storage.embed import HashEmbedder

    mem = _memory(home, HashEmbedder())
    mem.add([{"role": "user", "content": t} for t in sentences(5, seed=2)], user_id="bench", infer=False)


def _time_cmd(argv: list[str], env: Mapping[str, str], repeats: int, timeout: float) -> dict[str, Any]:
    times, codes = [], []
    err = ""
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)
        times.append(time.perf_counter() - t0)
        codes.append(proc.returncode)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout)[-400:]
    out: dict[str, Any] = {"median_ms": round(statistics.median(times) * 1000, 1),
                           "min_ms": round(min(times) * 1000, 1), "runs_ms": [round(t * 1000, 1) for t in times],
                           "exit_codes": sorted(set(codes))}
    if err:
        out["error"] = err
    return out


# ---- presentation -----------------------------------------------------------------------------------

def _tables() -> tuple[Any, Any]:
    from rich.table import Table

    from memstore.eval.common import console

    return Table, console()


def print_search(result: Mapping[str, Any]) -> None:
    from memstore.eval.common import print_env

    Table, out = _tables()
    t = Table(title=f"search latency (median of {result['repeats']} runs x {result['queries']} queries, limit "
                    f"{result['limit']})")
    for col in ("store", "user", "user memories", "p50 ms", "p95 ms", "embed 1 query p50 ms", "dense p50 ms",
                "chroma query p50 ms", "first search ms", "build /s"):
        t.add_column(col, justify="right")
    for row in result["rows"]:
        for kind in ("heavy", "typical"):
            if kind in row:
                r = row[kind]
                t.add_row(f"{row['size']:,}", kind, f"{r['user_memories']:,}", f"{r['p50_ms']:.1f}",
                          f"{r['p95_ms']:.1f}", f"{row['embed_one_query']['p50_ms']:.1f}",
                          f"{r['parts_p50_ms'].get('dense', 0):.1f}",
                          f"{r.get('chroma_query_ms', {}).get('p50_ms', 0):.1f}",
                          f"{r.get('cold', {}).get('first_search_ms', 0):.1f}", str(row.get("build_rate_per_s")))
    out.print(t)
    for name, tg in result.get("targets", {}).items():
        out.print(f"{name}: p50 {tg['p50_ms']} ms (2x embed = {2 * tg['embed_p50_ms']:.1f} ms: "
                  f"{'ok' if tg['p50_within_2x_embed'] else 'missed'}), p95 {tg['p95_ms']} ms "
                  f"(< 30 ms: {'ok' if tg['p95_under_30ms'] else 'missed'})")
    print_env(result["environment"], out)


def print_ingest(result: Mapping[str, Any]) -> None:
    from memstore.eval.common import print_env

    Table, out = _tables()
    t = Table(title=f"Memory.add(infer=False) vs the embedder alone: {result['batch']} messages per call")
    for col in ("run", "messages", "seconds", "messages/s", "embedder/s", "ingest / embedder"):
        t.add_column(col, justify="right")
    for i, r in enumerate(result["runs"]):
        t.add_row(str(i + 1), str(r["messages"]), str(r["seconds"]), str(r["messages_per_s"]),
                  str(r.get("embed_per_s", "")), str(r.get("ratio", "")))
    t.add_row("median", "", "", f"[bold]{result['messages_per_s']}[/]", str(result.get("embed_per_s", "")),
              f"[bold]{result.get('ratio_to_embedder', '')}[/]")
    out.print(t)
    print_env(result["environment"], out)


def print_overhead(result: Mapping[str, Any]) -> None:
    from memstore.eval.common import print_env

    Table, out = _tables()
    t = Table(title=f"per-request latency, {result['memories']:,} memories for the user "
                    f"(median of {result['repeats']} runs x {result['requests']} requests)")
    for col in ("client", "p50 ms", "p95 ms"):
        t.add_column(col, justify="right")
    t.add_row("plain litellm", f"{result['plain_litellm']['p50_ms']:.1f}", f"{result['plain_litellm']['p95_ms']:.1f}")
    t.add_row("MemoryClient", f"{result['memory_client']['p50_ms']:.1f}", f"{result['memory_client']['p95_ms']:.1f}")
    t.add_row("[bold]added by memstore[/]", f"{result['added']['p50_ms']:.1f}", f"{result['added']['p95_ms']:.1f}")
    out.print(t)
    print_env(result["environment"], out)


def print_cli(result: Mapping[str, Any]) -> None:
    from memstore.eval.common import print_env

    Table, out = _tables()
    t = Table(title=f"CLI start-up (median of {result['repeats']} fresh processes)")
    for col in ("command", "median ms", "min ms", "exit"):
        t.add_column(col, justify="right")
    b = result["python_startup"]
    t.add_row("[dim]python -c pass[/]", f"{b['median_ms']:.0f}", f"{b['min_ms']:.0f}", "0")
    for r in result["commands"]:
        t.add_row(r["command"], f"{r['median_ms']:.0f}", f"{r['min_ms']:.0f}", ",".join(map(str, r["exit_codes"])))
    out.print(t)
    print_env(result["environment"], out)
