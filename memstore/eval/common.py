"""Shared pieces of the eval and bench harnesses: environment report, percentiles, result files, progress."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def offline_env() -> None:
    """What every harness sets before torch / litellm load: no hub downloads, litellm's bundled cost map."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine(),
            "python": sys.version.split()[0]}


def versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "sentence-transformers", "chromadb", "litellm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from memstore import __version__

    out["memstore"] = __version__
    return out


def environment() -> dict[str, Any]:
    """Machine, versions, date, and the load average (other processes sharing the CPUs skew timings)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"machine": machine(), "versions": versions(), "load_average_1_5_15m": load,
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence; 0.0 when empty."""
    if not values:
        return 0.0
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds of timings given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 3), "p95_ms": round(percentile(ms, 95), 3),
            "mean_ms": round(statistics.fmean(ms), 3) if ms else 0.0, "n": len(ms)}


def write_json(path: str | Path, data: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return p


def console() -> Any:
    from rich.console import Console

    return Console()


@contextmanager
def progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar (a silent stand-in when ``enabled`` is false, e.g. in tests)."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as p:
        yield p


class _NoProgress:
    def add_task(self, *_a: Any, **_k: Any) -> int:
        return 0

    def advance(self, *_a: Any, **_k: Any) -> None:
        return None

    def update(self, *_a: Any, **_k: Any) -> None:
        return None


def print_env(env: dict[str, Any], out: Any = None) -> None:
    out = out or console()
    m, v = env["machine"], env["versions"]
    out.print(f"[bold]machine[/]: {m['cpu_count']} CPUs, {m['platform']}")
    out.print("[bold]versions[/]: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    if env.get("load_average_1_5_15m"):
        out.print(f"[bold]load average[/] (1/5/15 min, at the end): {env['load_average_1_5_15m']}")
