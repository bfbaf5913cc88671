"""The end of a client's life: ``close()`` and interpreter exit wait, within ``MemoryConfig.close_timeout``, for
the turns the client recorded to be extracted, so a script that exits right after its request still learns
from it. Turns not done by then stay in the durable outbox for the next process with a worker."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections import deque

from memstore.worker import Worker

log = logging.getLogger("memstore")


class ExitDrain:
    """The turns one client recorded, and the wait for them. Registered for interpreter exit (``at_exit``); it
    holds the worker, not the client, so a client dropped without close() is still waited for."""

    def __init__(self, worker: Worker, timeout: float) -> None:
        self.worker = worker
        self.timeout = timeout
        self.turns: deque[str] = deque(maxlen=10_000)  # far more than are ever in flight

    def __call__(self, timeout: float | None = None) -> bool:
        """Waits up to ``timeout`` (default: the client's close_timeout). True when none of the turns is left."""
        timeout = self.timeout if timeout is None else min(timeout, self.timeout)
        if not self.turns or timeout <= 0 or not self.worker.running:
            return True  # nothing recorded, no wait wanted, or extraction runs elsewhere (start_worker=False)
        try:
            done = self.worker.flush(timeout, turn_ids=set(self.turns))
        except Exception as exc:  # the database went away: the turns stay where they are
            log.warning("memstore: could not wait for extraction at close: %s", exc)
            return False
        if done:
            self.turns.clear()
        else:
            log.warning("memstore: turns were still being extracted after close_timeout=%ss; they stay in the "
                        "outbox and the next memstore process with a worker finishes them", self.timeout)
        return done

    def close(self) -> bool:
        """close(): the wait, now, and none at exit."""
        _open.discard(self)
        return self()


_open: set[ExitDrain] = set()  # of the clients not closed yet (their workers stay alive until exit)
_hooked: list[bool] = []


def at_exit(drain: ExitDrain) -> None:
    """Registers a client's wait with the interpreter's exit. It runs among threading's own exit hooks, before
    the one of concurrent.futures (litellm hands work to thread pools, which refuse new work once theirs ran)."""
    import concurrent.futures.thread  # noqa: F401  # its exit hook registered first, so ours runs before it

    _open.add(drain)
    if not _hooked:
        _hooked.append(True)
        register = getattr(threading, "_register_atexit", None)  # CPython 3.9+; else plain atexit
        with contextlib.suppress(RuntimeError):  # already shutting down
            (register or atexit.register)(_drain_all)


def _drain_all() -> None:
    """Every open client's wait, all within the longest close_timeout (not one after the other)."""
    drains = list(_open)
    if not drains:
        return
    deadline = time.monotonic() + max(d.timeout for d in drains)
    for drain in drains:
        drain(max(0.0, deadline - time.monotonic()))
