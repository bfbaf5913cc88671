"""Process-wide counters (requests, injected tokens, fail-open events, compliance ...).

Plain integers behind a lock; the proxy server renders them in Prometheus text format. A labelled counter
is kept under its Prometheus series name, ``name{label="value"}`` (``inc(name, reason="timeout")``).
"""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counters: Counter[str] = Counter()

HELP = {
    "memstore_requests_total": "Chat requests handled through memstore.",
    "memstore_injected_tokens_total": "Tokens of memory blocks injected into requests.",
    "memstore_injected_memories_total": "Memories injected into requests.",
    "memstore_fail_open_total": "Requests sent on without memory because the memory layer failed.",
    "memstore_turns_recorded_total": "Exchanges written to the extraction outbox.",
    "memstore_rule_checks_total": "Checkable style rules verified against replies.",
    "memstore_rule_violations_total": "Replies that broke a checkable style rule.",
    "memstore_rule_retries_total": "Corrective retries made by enforce_rules.",
    "memstore_dense_fallback_total": "Searches answered lexically only because the vector index failed.",
    "memstore_vector_cache_hits_total": "Dense queries answered from the in-process scope vector cache.",
    "memstore_vector_cache_misses_total": "Dense queries sent to the vector index (scope loading or too big).",
    "memstore_extraction_failures_total": "Turns whose extraction failed, by reason (unreachable, auth, "
                                          "model_not_found, rate_limited, timeout, invalid_output, error).",
}


def series(name: str, **labels: str) -> str:
    """The Prometheus series name: ``name`` or ``name{a="x",b="y"}`` (labels sorted, values escaped)."""
    if not labels:
        return name

    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return name + "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items())) + "}"


def base_name(series_name: str) -> str:
    """``name`` of ``name{...}``."""
    return series_name.split("{", 1)[0]


def inc(name: str, value: float = 1, **labels: str) -> None:
    key = series(name, **labels)
    with _lock:
        _counters[key] += value  # type: ignore[assignment]


def snapshot() -> dict[str, float]:
    with _lock:
        return dict(_counters)


def reset() -> None:
    with _lock:
        _counters.clear()
