"""Throughput and latency of ``memstore serve`` against a scripted upstream that answers instantly.

Three processes: this load generator (threads, each with its own ``openai.OpenAI`` client), the scripted
upstream (``memstore.testing.ScriptedLLM``) and the proxy. Scenarios:

- ``direct``: the SDK calls the scripted upstream itself (the baseline);
- ``proxy_passthrough``: through the proxy with no user, so no memory work (HTTP hop + auth + litellm);
- ``proxy_memory``: through the proxy for users with stored memories and a rule (retrieval, injection,
  turn recording, rule check: the full request path);
- ``proxy_memory_stream``: the same, streamed; latency is to the last chunk, ``ttft`` to the first.

Each runs with ``concurrency`` clients (default 16) and once sequentially (one client), which gives the
proxy's overhead per request without queueing. ``python -m memstore.eval.bench.server --write`` also writes
docs/benchmarks-server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from memstore.eval.common import percentile
from memstore.testing.server_process import ServerProcess

_UPSTREAM = ("import sys; from memstore.testing import ScriptedLLM; "
             "s = ScriptedLLM(default_reply='Sure, here is a short answer.').start(); "
             "print(s.port, flush=True); sys.stdin.read(); s.stop()")


def _load(call: Callable[[Any, int], float | None], make_client: Callable[[], Any], requests: int,
          concurrency: int) -> dict[str, Any]:
    """Runs ``requests`` calls spread over ``concurrency`` threads; each call returns its TTFT or None."""
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        c = make_client()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ttft = call(c, i)
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if ttft is not None:
                    ttfts.append(ttft)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    out: dict[str, Any] = {
        "requests": requests, "concurrency": concurrency, "errors": len(errors), "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
    }
    if ttfts:
        out["ttft_p50_ms"] = round(percentile([x * 1000 for x in ttfts], 50), 2)
        out["ttft_p95_ms"] = round(percentile([x * 1000 for x in ttfts], 95), 2)
    if errors:
        out["first_error"] = errors[0]
    return out


def run_server_bench(requests: int = 800, concurrency: int = 16, sequential_requests: int = 100,
                     memories_per_user: int = 20, users: int = 16,
                     worker: bool = True, home: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Starts a scripted upstream and a proxy, seeds memories, runs the scenarios; returns the figures."""
    import httpx
    import openai

    from memstore.adapters.server.keys import open_keys

    say = progress or (lambda _msg: None)
    load_before = _loadavg()
    tmp = tempfile.TemporaryDirectory(prefix="memstore-bench-") if home is None else None
    home = Path(home or tmp.name)  # type: ignore[union-attr]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH")) if p)}  # the repo root
    upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env, text=True)
    server: ServerProcess | None = None
    try:
        assert upstream.stdout is not None
        upstream_url = f"http://127.0.0.1:{int(upstream.stdout.readline())}/v1"
        _row, key = open_keys(home=str(home)).create("bench")
        say("starting the proxy")
        t0 = time.perf_counter()
        server = ServerProcess(home, ["--upstream-base-url", upstream_url, "--upstream-api-key", "bench",
                                      "--upstream-max-retries", "0", "--rate-limit", "0", "--extractor", "heuristic",
                                      "--log-level", "warning",
                                      "--worker" if worker else "--no-worker"]).start()
        startup_s = time.perf_counter() - t0
        say(f"seeding {users} users x {memories_per_user} memories")
        names = [f"bench-user-{i}" for i in range(users)]
        topics = ["cooking", "running", "jazz", "python", "gardening", "chess", "cycling", "photography",
                  "hiking", "baking", "astronomy", "knitting", "surfing", "poetry", "climbing", "sailing"]
        with httpx.Client(base_url=f"{server.url}/v1/memory", headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as http:
            for u in names:
                for j in range(memories_per_user):
                    http.post(f"/users/{u}/memories", json={
                        "text": f"I enjoy {topics[j % len(topics)]} and did it {j} times last month"}
                    ).raise_for_status()
                http.post(f"/users/{u}/rules", json={"text": "never use emoji"}).raise_for_status()

        def messages(i: int) -> list[dict[str, str]]:
            return [{"role": "user", "content": f"Question {i}: any tips for {topics[i % len(topics)]} this week?"}]

        def direct_client() -> Any:
            return openai.OpenAI(base_url=upstream_url, api_key="bench", max_retries=0)

        def proxy_client() -> Any:
            return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)  # type: ignore[union-attr]

        def plain(c: Any, i: int) -> None:
            c.chat.completions.create(model="scripted-model", messages=messages(i))

        retrieval_ms: list[float] = []

        def with_memory(c: Any, i: int) -> None:
            raw = c.chat.completions.with_raw_response.create(model="scripted-model", messages=messages(i),
                                                              user=names[i % users])
            raw.parse()
            retrieval_ms.append(float(raw.headers.get("x-memstore-retrieval-ms", "nan")))

        def streamed(c: Any, i: int) -> float | None:
            t0 = time.perf_counter()
            first = None
            for chunk in c.chat.completions.create(model="scripted-model", messages=messages(i), user=names[i % users],
                                                   stream=True):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
            return first

        scenarios = {"direct": (plain, direct_client), "proxy_passthrough": (plain, proxy_client),
                     "proxy_memory": (with_memory, proxy_client), "proxy_memory_stream": (streamed, proxy_client)}
        say("warming up")
        for call, make in scenarios.values():
            _load(call, make, 2 * concurrency, concurrency)
        retrieval_ms.clear()
        results: dict[str, Any] = {}
        for name, (call, make) in scenarios.items():
            say(f"{name}: {requests} requests, {concurrency} clients")
            results[name] = _load(call, make, requests, concurrency)
            say(f"{name}: sequential, {sequential_requests} requests")
            if name == "proxy_memory":
                results[name]["retrieval_p50_ms"] = round(percentile(retrieval_ms, 50), 2)
                retrieval_ms.clear()
            results[name + "_sequential"] = _load(call, make, sequential_requests, 1)
            if name == "proxy_memory":
                results[name + "_sequential"]["retrieval_p50_ms"] = round(percentile(retrieval_ms, 50), 2)
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        if server is not None:
            server.stop()
        if upstream.stdin:
            upstream.stdin.close()
        upstream.wait(10)
        if tmp is not None:
            tmp.cleanup()

    base = results["direct_sequential"]
    overhead = {name: {"p50_ms": round(results[f"{name}_sequential"]["p50_ms"] - base["p50_ms"], 2),
                       "mean_ms": round(results[f"{name}_sequential"]["mean_ms"] - base["mean_ms"], 2)}
                for name in ("proxy_passthrough", "proxy_memory", "proxy_memory_stream")}
    injected = next((line.split()[-1] for line in metrics.splitlines()
                     if line.startswith("memstore_injected_tokens_total ")), "0")
    return {
        "date": date.today().isoformat(), "machine": _machine(), "worker": worker,
        "startup_s": round(startup_s, 1), "users": users, "memories_per_user": memories_per_user,
        "injected_tokens_total": float(injected), "load_average_before": load_before,
        "load_average_after": _loadavg(), "results": results, "overhead_vs_direct": overhead,
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {platform.system()}"


def to_markdown(report: dict[str, Any], command: str, run_date: str | None = None) -> str:
    r = report["results"]
    rows = ["| scenario | clients | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | TTFT p95 ms "
            "| retrieval p50 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in r.items():
        rows.append(f"| {name} | {res['concurrency']} | {res['requests']} | {res['errors']} | "
                    f"{res['throughput_rps']} | {res['p50_ms']} | {res['p95_ms']} | {res['p99_ms']} | "
                    f"{res.get('ttft_p95_ms', '')} | {res.get('retrieval_p50_ms', '')} |")
    over = report["overhead_vs_direct"]
    over_rows = ["| path | added p50 ms | added mean ms |", "|---|---|---|"]
    over_rows += [f"| {name} | {v['p50_ms']} | {v['mean_ms']} |" for name, v in over.items()]
    return "\n".join([
        "# memstore serve: throughput and latency",
        "",
        f"Date: {run_date or report['date']}. Machine: {report['machine']}; the load generator, the upstream and",
        "the proxy were the only work on it"
        f" (1/5/15-minute load average {report['load_average_before']} before, {report['load_average_after']} after).",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "The scripted upstream (`memstore.testing.ScriptedLLM`, in its own process) answers every request at",
        "once, so these figures are the proxy's own cost. The load generator, the upstream and the proxy share",
        "the same cores: on a 2-core machine they compete, which lowers every number including the baseline.",
        f"Proxy startup (to a healthy /healthz, the bundled embedder): {report['startup_s']} s.",
        f"Memory scenarios: {report['users']} users with {report['memories_per_user']} memories and one",
        "checkable rule each; every request retrieves (dense + lexical), injects, records the turn in the",
        "outbox, checks the rule, and the background worker runs the heuristic extractor on the turns.",
        "",
        "## Results",
        "",
        *rows,
        "",
        "## Overhead per request (sequential, one client) over calling the upstream directly",
        "",
        *over_rows,
        "",
        "## Reading the numbers",
        "",
        "- `retrieval p50` is the server's own measure of building the memory block (the",
        "  `x-memstore-retrieval-ms` header): profile and rules from SQL, then the hybrid search, whose cost is",
        "  mostly the embedding of the latest user message by the bundled MiniLM on CPU. One client at a time",
        "  it is a minor part of the added latency; with 16 concurrent clients it is the largest part and what",
        "  limits throughput. Query embeddings that arrive while a forward pass runs are batched into the next",
        "  one (memstore.storage.embed.ForwardPasses), so 16 clients cost less than 16 passes, but MiniLM on 2 shared",
        "  cores (with the load generator and the upstream on the same cores) still bounds the memory path.",
        "- The passthrough overhead is the second HTTP hop, the key check (one indexed SQL read) and litellm,",
        "  which on its own costs several milliseconds more per call than the raw openai SDK.",
        "- The rest of the memory path is writing the turn to the outbox and the rule check's compliance row",
        "  (two small SQL transactions per request, each run in a worker thread), and the background rules",
        "  extractor working through those turns. The server keeps one idle SQLite connection open so that",
        "  closing a session does not checkpoint and delete the WAL every time (without it the sequential",
        "  memory path measured about 100 ms more per request).",
        "- With the machine this loaded (see the load averages above), the sequential rows are the better",
        "  measure of the proxy's own cost; the concurrent rows mostly measure CPU contention.",
        "- Streaming adds litellm's stream wrapper and per-chunk re-validation on both sides; TTFT is the time",
        "  to the first content chunk, which includes retrieval.",
        "",
        "Raw figures:",
        "",
        "```json",
        json.dumps(report, indent=2),
        "```",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential-requests", type=int, default=100)
    parser.add_argument("--memories", type=int, default=20, help="memories per user")
    parser.add_argument("--no-worker", action="store_true", help="run the proxy without background extraction")
    parser.add_argument("--write", nargs="?", const="docs/benchmarks-server.md", default=None,
                        help="write the markdown report (default path docs/benchmarks-server.md)")
    parser.add_argument("--date", default=None, help="date printed in the report (default today)")
    args = parser.parse_args(argv)
    report = run_server_bench(args.requests, args.concurrency, args.sequential_requests, args.memories,
                              worker=not args.no_worker,
                              progress=lambda m: print(f"[bench] {m}", file=sys.stderr))
    print(json.dumps(report, indent=2))
    if args.write:
        command = "python -m memstore.eval.bench.server " + " ".join(a for a in (argv or sys.argv[1:]))
        Path(args.write).write_text(to_markdown(report, command.strip(), args.date))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
