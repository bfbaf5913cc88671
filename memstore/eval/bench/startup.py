"""``memstore bench startup``: how long a fresh process waits before memstore is useful, on an existing store.

* **first reply**: process start to the first MemoryClient reply from the scripted local server (imports,
  the store, the embedder, retrieval, the model call through the openai SDK);
* **serve healthy**: ``memstore serve`` started to ``/healthz`` answering 200;
* **memories list**: ``memstore memories list`` start to exit.

Medians over fresh processes, alternating, with the load average recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memstore.eval.bench.runs import _median, _memory, sentences
from memstore.eval.common import environment, progress

_FIRST_REPLY = """if True:
    import sys, time
    from memstore import MemoryClient
    client = MemoryClient(memory=sys.argv[1], base_url=sys.argv[2], api_key="x", start_worker=False)
    client.chat.completions.create(model="scripted-model", user="bench",
                                   messages=[{"role": "user", "content": "what did I say about the weekend?"}])
"""


def _timed(argv: list[str], env: dict[str, str], timeout: float) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[2:4]} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t0


def bench_startup(memories: int = 1000, repeats: int = 5, timeout: float = 300.0,
                  show_progress: bool = True) -> dict[str, Any]:
    """Seeds a store with ``memories`` memories of one user (and makes the embedder's ONNX export, as any
    earlier run would have), then times ``repeats`` fresh processes of each kind."""
    from memstore.testing import ScriptedLLM
    from memstore.testing.server_process import ServerProcess

    runs: dict[str, list[float]] = {"first_reply_s": [], "serve_healthy_s": [], "memories_list_s": []}
    with tempfile.TemporaryDirectory(prefix="memstore-bench-startup-") as tmp, ScriptedLLM() as llm, \
            progress(show_progress) as bar:
        home = Path(tmp) / "store"
        mem = _memory(home)
        mem.store.add_many("bench", "default", [{"text": t, "kind": "fact"} for t in sentences(memories, seed=21)],
                           actor="import")
        # as users run it: bytecode cached (a first, untimed round writes it), nothing downloaded
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false",
                   MEMSTORE_HOME=str(home))
        task = bar.add_task("fresh processes", total=3 * (repeats + 1))
        for r in range(repeats + 1):
            if r == 1:
                runs = {k: [] for k in runs}
            runs["first_reply_s"].append(_timed([sys.executable, "-c", _FIRST_REPLY, str(home), llm.base_url],
                                                env, timeout))
            bar.advance(task)
            t0 = time.perf_counter()
            server = ServerProcess(home, ["--upstream-base-url", llm.base_url, "--upstream-api-key", "x",
                                          "--no-auth", "--no-worker"], env=env).start(timeout)
            runs["serve_healthy_s"].append(time.perf_counter() - t0)
            server.stop()
            bar.advance(task)
            runs["memories_list_s"].append(_timed([sys.executable, "-m", "memstore.cli", "--home", str(home),
                                                   "memories", "list", "--user", "bench"], env, timeout))
            bar.advance(task)
    medians = {k: round(_median(v), 3) for k, v in runs.items()}
    targets = {"first_reply_s": 2.0, "serve_healthy_s": 2.0, "memories_list_s": 1.0}
    return {"benchmark": "startup", "memories": memories, "repeats": repeats, "runs": runs, **medians,
            "targets_s": targets, "met": {k: medians[k] <= v for k, v in targets.items()},
            "environment": environment()}


def print_startup(result: dict[str, Any]) -> None:
    from rich.table import Table

    from memstore.eval.common import console, print_env

    out = console()
    t = Table(title=f"start-up on an existing store ({result['memories']} memories), median of "
                    f"{result['repeats']} fresh processes")
    for col in ("what", "median s", "target s", "met"):
        t.add_column(col, justify="left" if col == "what" else "right")
    for key, label in (("first_reply_s", "process start to the first MemoryClient reply"),
                       ("serve_healthy_s", "memstore serve to a healthy /healthz"),
                       ("memories_list_s", "memstore memories list")):
        t.add_row(label, f"{result[key]:.2f}", f"{result['targets_s'][key]:.1f}", "yes" if result["met"][key] else "no")
    out.print(t)
    print_env(result["environment"], out)
