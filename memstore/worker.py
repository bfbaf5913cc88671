"""The background extraction worker: drains the durable Turn outbox off the request path.

Turns are claimed atomically (so several workers, threads or processes, never extract one turn twice),
unfinished claims of a crashed worker are replayed after their lease, and failures are retried with
backoff up to ``MemoryConfig.extraction_max_attempts`` and then stay visible as failed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from memstore.extract.pipeline import Extraction

log = logging.getLogger("memstore")


def drain(extraction: Extraction, worker_id: str | None = None, batch: int = 32,
          max_rounds: int | None = None) -> int:
    """Processes pending turns in the calling thread until none are left. Returns turns handled."""
    worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    extractor = extraction.make_extractor()
    handled, rounds = 0, 0
    while max_rounds is None or rounds < max_rounds:
        turns = extraction.outbox.claim(worker_id, batch, retry_failed=False)
        if not turns:
            break
        extraction.process(turns, extractor)
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
            drain(self.extraction, self.id)
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
