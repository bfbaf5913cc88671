"""The background extraction worker: drains the durable Turn outbox off the request path.

Turns are claimed atomically (so several workers, threads or processes, never extract one turn twice),
unfinished claims of a crashed worker are replayed after their lease, and failures are retried with
backoff up to ``MemoryConfig.extraction_max_attempts`` and then stay visible as failed.

Failed extractions are never silent: ``ExtractionHealth`` counts them by reason
(``memstore_extraction_failures_total{reason=...}``), logs each distinct cause once with what to change, and
keeps the last one for ``/healthz`` and ``memstore chat``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from typing import Any

from memstore import metrics
from memstore.extract.extractors import Extractor
from memstore.extract.pipeline import Extraction
from memstore.records import Turn

log = logging.getLogger("memstore")

_STATUS = re.compile(r"(?:status[_ ]code|Error code|HTTP)[=: ]+(\d{3})", re.IGNORECASE)


def failure_reason(error: str) -> tuple[str, str]:
    """A failed turn's error text as (reason, cause key): the reason is a short metric label, the cause key
    (reason, exception class, HTTP status) decides what is logged once."""
    text = error or ""
    head = text.split(":", 1)[0].strip()
    status_m = _STATUS.search(text)
    status = status_m.group(1) if status_m else ""
    low = text.lower()
    if "timeout" in low or "timed out" in low:
        reason = "timeout"
    elif ("connection" in low and ("error" in low or "refused" in low)) or "unreachable" in low \
            or "name or service not known" in low:
        reason = "unreachable"
    elif "authentication" in low or status in ("401", "403") or "api key" in low or "api_key" in low:
        reason = "auth"
    elif "notfound" in low.replace(" ", "") or status == "404" or "does not exist" in low:
        reason = "model_not_found"
    elif "ratelimit" in low.replace(" ", "") or status == "429":
        reason = "rate_limited"
    elif any(w in low for w in ("validation", "json", "parse", "schema")) or head in ("ExtractionError",):
        reason = "invalid_output"
    else:
        reason = "error"
    return reason, f"{reason}:{head}:{status}"


def failure_hint(reason: str, api_base: str | None = None, model: str | None = None) -> str:
    """What to change for a failure reason (one sentence, names the settings)."""
    where = f" at {api_base}" if api_base else ""
    what = f" {model!r}" if model else ""
    return {
        "unreachable": f"extraction model unreachable{where}: set MEMSTORE_LLM_API_BASE (memstore serve: "
                       "--upstream-base-url) to a reachable OpenAI-compatible server",
        "auth": f"extraction model{where} refused the API key: set MEMSTORE_LLM_API_KEY (memstore serve: "
                "--upstream-api-key)",
        "model_not_found": f"extraction model{what} not found{where}: set MEMSTORE_LLM_MODEL (memstore serve: "
                           "--extract-model)",
        "rate_limited": f"extraction model{where} is rate limiting; failed turns are retried (memstore turns retry)",
        "timeout": f"extraction model{where} timed out: raise MEMSTORE_LLM_TIMEOUT or use a faster model",
        "invalid_output": f"extraction model{what} returned output memstore could not use: try a stronger model "
                          "(MEMSTORE_LLM_MODEL) or MEMSTORE_EXTRACTOR=heuristic",
    }.get(reason, "extraction failed; see `memstore turns list --status failed`")


class ExtractionHealth:
    """Extraction failures this process saw: counted by reason, each distinct cause logged once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed_turns = 0
        self.by_reason: Counter[str] = Counter()
        self.last_error: str | None = None
        self._logged: set[str] = set()

    def note(self, turns: list[Turn], extraction: Extraction) -> None:
        """Looks at turns ``Extraction.process`` just handled (``mark`` updates them in place)."""
        failed = [t for t in turns if t.status == "failed"]
        if not failed:
            return
        api_base, model = _llm_target(extraction)
        for t in failed:
            reason, cause = failure_reason(t.error or "")
            message = f"{failure_hint(reason, api_base, model)} ({_clip(t.error or 'unknown error')})"
            metrics.inc("memstore_extraction_failures_total", reason=reason)
            with self._lock:
                self.failed_turns += 1
                self.by_reason[reason] += 1
                self.last_error = message
                first = cause not in self._logged
                self._logged.add(cause)
            if first:
                log.warning("memstore extraction failing: %s", message)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"failed_turns": self.failed_turns, "by_reason": dict(self.by_reason),
                    "last_error": self.last_error}


def _llm_target(extraction: Extraction) -> tuple[str | None, str | None]:
    try:
        llm = extraction.llm() if extraction.extractor == "llm" else None
    except Exception:  # a misconfigured model must not break the bookkeeping
        return None, None
    return getattr(llm, "api_base", None), getattr(llm, "model", None)


def _clip(text: str, limit: int = 300) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def drain(extraction: Extraction, worker_id: str | None = None, batch: int = 32,
          max_rounds: int | None = None, health: ExtractionHealth | None = None,
          extractor: Extractor | None = None) -> int:
    """Processes pending turns in the calling thread until none are left (with ``extractor``, else the
    configured one). Returns turns handled."""
    worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    extractor = extractor or extraction.make_extractor()
    handled, rounds = 0, 0
    while max_rounds is None or rounds < max_rounds:
        turns = extraction.outbox.claim(worker_id, batch, retry_failed=False)
        if not turns:
            break
        extraction.process(turns, extractor)
        if health is not None:
            health.note(turns, extraction)
        handled += len(turns)
        rounds += 1
    return handled


class Worker:
    """A daemon thread that extracts pending turns. ``flush()`` waits for them; ``stop()`` ends it."""

    def __init__(self, extraction: Extraction, poll_interval: float = 0.5, batch: int = 32) -> None:
        self.extraction = extraction
        self.poll_interval = poll_interval
        self.batch = batch
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.processed = 0
        self.errors = 0
        self.health = ExtractionHealth()

    def start(self) -> Worker:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="memstore-worker", daemon=True)
                self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """A new turn was recorded: wake up now instead of at the next poll."""
        self._idle.clear()
        self._wake.set()

    def _run(self) -> None:
        extractor = None
        while not self._stop.is_set():
            try:
                extractor = extractor or self.extraction.make_extractor()
                turns = self.extraction.outbox.claim(self.id, self.batch)
                if turns:
                    self.extraction.process(turns, extractor)
                    self.health.note(turns, self.extraction)
                    self.processed += len(turns)
                    continue
            except Exception as exc:  # never let the thread die: log, back off, go on
                self.errors += 1
                log.warning("memstore worker error: %s", exc)
            self._idle.set()
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def flush(self, timeout: float | None = 30.0, turn_ids: set[str] | None = None) -> bool:
        """Waits until the outbox (or the given turns) has nothing pending. True if it emptied in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.running:
            drain(self.extraction, self.id, health=self.health)
        while True:
            if self.extraction.outbox.pending(turn_ids) == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.notify()
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
