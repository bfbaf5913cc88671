"""Process-wide counters (requests, injected tokens, fail-open events, compliance ...).

Plain integers behind a lock; the proxy server renders them in Prometheus text format.
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
}


def inc(name: str, value: float = 1) -> None:
    with _lock:
        _counters[name] += value  # type: ignore[assignment]


def snapshot() -> dict[str, float]:
    with _lock:
        return dict(_counters)


def reset() -> None:
    with _lock:
        _counters.clear()
