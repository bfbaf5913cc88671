"""The durable Turn outbox: every finished exchange is written here before its response returns, and the
extraction worker drains it. Record, claim, mark, retry, count and list; nothing else touches ``turns``.

Claims are atomic, so several workers (threads or processes) never extract one turn twice. A claim whose
worker crashed expires after its lease and is claimed again; failed turns are retried with backoff up to
``max_attempts`` and then stay visible as failed, retryable by hand.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, or_, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from memstore.errors import InvalidInputError, NotFoundError
from memstore.messages import content_text
from memstore.records import Turn, utcnow
from memstore.storage.db import row_values, session_scope, short_waits

log = logging.getLogger("memstore")
STATUSES = ("pending", "processing", "done", "failed", "skipped")
OPEN = ("pending", "processing")


@functools.cache
def _insert_turn() -> Any:
    return insert(Turn.__table__)  # type: ignore[arg-type]


class Outbox:
    """The ``turns`` table as a queue. ``redact_secrets``: keys, passwords and card numbers never reach it."""

    def __init__(self, engine: Engine, *, redact_secrets: bool = True, max_attempts: int = 3,
                 retry_after_seconds: float = 5.0, spool_dir: Path | None = None) -> None:
        self.engine = engine
        self.redact_secrets = redact_secrets
        self.max_attempts = max_attempts
        self.retry_after_seconds = retry_after_seconds
        self.spool_dir = spool_dir  # turns the database could not take in time wait here (``record(spool=True)``)

    # ---- write ----------------------------------------------------------------------------------------
    def record(self, user_id: str, namespace: str, messages: list[dict[str, Any]], response: str = "", *,
               response_id: str | None = None, model: str | None = None, extract: bool = True, mode: str = "chat",
               status: str = "pending", meta: dict[str, Any] | None = None, spool: bool = False) -> Turn:
        """Writes one finished exchange (durably, before the caller gets its response). ``status="processing"``
        is for a turn extracted inline: a crash leaves a claim that expires like a worker's. ``spool``: when
        the database is locked, the turn goes to a file in ``spool_dir`` instead, and
        ``replay_spool`` (every ``claim``) moves it into the outbox later."""
        if status not in STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}")
        if self.redact_secrets:
            from memstore.redact import redact_messages, redact_text

            messages, response = redact_messages(messages), redact_text(response)
        meta = {"mode": mode, **(meta or {})}
        if mode == "chat" and "conversation" not in meta:
            meta.update(thread_of(messages))
        turn = Turn(user_id=user_id, namespace=namespace, messages=messages, response=response,
                    response_id=response_id, model=model, extract=extract, status=status if extract else "skipped",
                    meta=meta)
        if turn.status == "processing":
            turn.claimed_by, turn.claimed_at = f"inline-{os.getpid()}", utcnow()
        try:
            with self.engine.begin() as conn:  # one plain insert: a session's unit of work cost as much again
                turn.pk = conn.execute(_insert_turn(), row_values(turn)).inserted_primary_key[0]
        except OperationalError as exc:
            if not (spool and self.spool_dir is not None and _busy(exc)):
                raise
            self._spool(turn)
            log.warning("memstore: the database did not take a turn in time (%s); kept in %s until it does",
                        str(exc).splitlines()[0][:200], self.spool_dir)
        return turn

    # ---- the spool: turns waiting for the database ----------------------------------------------------
    def _spool(self, turn: Turn) -> None:
        """One file per turn, written whole (temporary file, fsync, rename) so a reader never sees half."""
        assert self.spool_dir is not None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        data = turn.model_dump(mode="json", exclude={"pk"})
        final = self.spool_dir / f"turn-{turn.id}.json"
        tmp = self.spool_dir / f".turn-{turn.id}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def forget_spooled(self, user_id: str, namespace: str | None = None) -> int:
        """Deletes the spooled turns of a forgotten user (all namespaces when ``namespace`` is None), so a turn
        written during a lock is not replayed after ``forget``. Returns how many."""
        gone = 0
        for path in self.spooled():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being replayed, or not whole: its replay checks again
            if data.get("user_id") == user_id and (namespace is None or data.get("namespace") == namespace):
                path.unlink(missing_ok=True)
                gone += 1
        return gone

    def spooled(self) -> list[Path]:
        """The turns waiting in the spool (including ones a replay claimed and has not finished)."""
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return []
        return sorted(p for p in self.spool_dir.iterdir() if p.name.startswith("turn-") and ".json" in p.name)

    def spooled_turns(self, user_id: str | None = None) -> list[Turn]:
        """The turns waiting in the spool for the database (optionally of one user), oldest first; a file that
        cannot be read (being written, or set aside as ``.bad``) is left out."""
        out: list[Turn] = []
        for path in self.spooled():
            try:
                turn = Turn.model_validate(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            if user_id is None or turn.user_id == user_id:
                out.append(turn)
        return sorted(out, key=lambda t: t.created_at)

    def replay_spool(self) -> int:
        """Moves spooled turns into the outbox (each claimed by renaming its file, so concurrent replays never
        insert one twice; a turn already there is skipped). Returns how many were inserted; stops at the first
        database error (the rest wait for the next replay)."""
        done = 0
        for path in self.spooled():
            claimed = path
            if ".replaying-" in path.name:
                pid = path.name.rsplit("-", 1)[-1]
                if pid.isdigit() and _alive(int(pid)):
                    continue  # another live process is replaying it
            else:
                claimed = path.with_name(f"{path.name}.replaying-{os.getpid()}")
                try:
                    os.replace(path, claimed)
                except FileNotFoundError:  # another process took it first
                    continue
            try:
                data = json.loads(claimed.read_text(encoding="utf-8"))
                turn = Turn.model_validate(data)
                with short_waits(2.0), session_scope(self.engine) as s:  # a locked database: try again later
                    new = s.exec(select(Turn.id).where(Turn.id == turn.id)).first() is None
                    if new:
                        s.add(turn)
                done += int(new)
            except OperationalError:
                os.replace(claimed, path)  # still locked: back for the next replay
                break
            except (ValueError, OSError) as exc:  # unreadable: keep it aside, visibly, never drop it
                log.error("memstore: cannot replay spooled turn %s: %s", claimed, exc)
                os.replace(claimed, claimed.with_name(claimed.name.split(".json")[0] + ".bad"))  # not replayed
                continue
            claimed.unlink(missing_ok=True)
        return done

    def claim(self, worker_id: str, limit: int = 32, lease_seconds: float = 300.0,
              retry_failed: bool = True) -> list[Turn]:
        """Atomically claims up to ``limit`` turns: pending ones, ones whose claim lease expired (a crashed
        worker), and failed ones due for an automatic retry (backoff, up to the attempt limit). PostgreSQL uses
        SELECT ... FOR UPDATE SKIP LOCKED; SQLite serialises writers."""
        if self.spool_dir is not None and self.spool_dir.is_dir():
            try:
                self.replay_spool()
            except Exception as exc:  # the spool must never stop the queue
                log.warning("memstore: spool replay failed: %s", exc)
        now = utcnow()
        stale = now - timedelta(seconds=lease_seconds)
        conds = [col(Turn.status) == "pending", (col(Turn.status) == "processing") & (col(Turn.claimed_at) < stale)]
        if retry_failed:
            conds.append((col(Turn.status) == "failed") & (col(Turn.attempts) < self.max_attempts)
                         & (col(Turn.processed_at) < now - timedelta(seconds=self.retry_after_seconds)))
        with session_scope(self.engine) as s:
            q = select(Turn.id).where(or_(*conds)).order_by(col(Turn.created_at), col(Turn.pk)).limit(limit)
            if self.engine.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            elif self.engine.dialect.name == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            ids = list(s.exec(q).all())
            if not ids:
                return []
            s.execute(update(Turn).where(col(Turn.id).in_(ids))
                      .values(status="processing", claimed_by=worker_id, claimed_at=now))
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(select(Turn).where(col(Turn.id).in_(ids), Turn.claimed_by == worker_id)
                               .order_by(col(Turn.created_at), col(Turn.pk))).all())

    def mark(self, turns: Iterable[Turn], status: str, error: str | None = None, *, attempted: bool = False) -> None:
        """Sets the outcome of claimed turns (``attempted``: one more extraction attempt was made) and
        releases their claim. The given Turn objects are updated too."""
        if status not in STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}")
        with session_scope(self.engine) as s:
            for t in turns:
                row = s.exec(select(Turn).where(Turn.id == t.id)).one()
                row.status, row.error = status, error
                row.processed_at = utcnow()
                row.claimed_by = None
                if attempted:
                    row.attempts += 1
                s.add(row)
                t.status, t.error, t.attempts = row.status, row.error, row.attempts

    def retry(self, user_id: str | None = None, turn_ids: list[str] | None = None) -> int:
        """Puts failed turns back to pending (attempt counter reset). Returns how many."""
        with session_scope(self.engine) as s:
            q = update(Turn).where(col(Turn.status) == "failed")
            if user_id is not None:
                q = q.where(col(Turn.user_id) == user_id)
            if turn_ids is not None:
                q = q.where(col(Turn.id).in_(turn_ids))
            return int(s.execute(q.values(status="pending", attempts=0, error=None)).rowcount)  # type: ignore[attr-defined]

    # ---- read -----------------------------------------------------------------------------------------
    def pending(self, turn_ids: set[str] | None = None) -> int:
        """Turns still waiting or being extracted (optionally among ``turn_ids``)."""
        if turn_ids is not None and not turn_ids:
            return 0
        spooled = [p.name.split(".json")[0].removeprefix("turn-") for p in self.spooled()]
        waiting = len(spooled) if turn_ids is None else len(set(spooled) & set(turn_ids))
        with Session(self.engine) as s:
            q = select(func.count()).select_from(Turn).where(col(Turn.status).in_(OPEN))
            if turn_ids is not None:
                q = q.where(col(Turn.id).in_(list(turn_ids)))
            return int(s.exec(q).one()) + waiting

    def counts(self) -> dict[str, int]:
        """How many turns are in each status."""
        with Session(self.engine) as s:
            return {st: int(n) for st, n in s.exec(select(Turn.status, func.count()).group_by(Turn.status)).all()}

    def list(self, user_id: str | None = None, status: str | None = None, *, turn_ids: list[str] | None = None,
             limit: int | None = 50, newest_first: bool = True) -> list[Turn]:
        """Recorded turns, newest first, optionally of one user, one status or the given ids."""
        if status is not None and status not in STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}")
        q = select(Turn)
        if user_id is not None:
            q = q.where(Turn.user_id == user_id)
        if status is not None:
            q = q.where(Turn.status == status)
        if turn_ids is not None:
            q = q.where(col(Turn.id).in_(turn_ids))
        order = (col(Turn.created_at).desc(), col(Turn.pk).desc()) if newest_first else \
            (col(Turn.created_at), col(Turn.pk))
        q = q.order_by(*order)
        if limit is not None:
            q = q.limit(limit)
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(q).all())

    def get(self, turn_id: str) -> Turn:
        """One turn by its full id. Raises NotFoundError."""
        with Session(self.engine, expire_on_commit=False) as s:
            turn = s.exec(select(Turn).where(Turn.id == turn_id)).first()
        if turn is None:
            raise NotFoundError(f"no turn with id {turn_id!r}")
        return turn


def _busy(exc: OperationalError) -> bool:
    """The database is there but another connection holds the lock (SQLite: locked / busy)."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in text or "busy" in text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def thread_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Which chat a request belongs to, and where in it: the chat completions API has no conversation id, but
    every request of one chat repeats its opening messages. ``conversation`` is a hash of the first user
    message (with the system prompt before it); ``position`` counts the user messages so far. Memories
    extracted from the turn carry both, so retrieval knows which memories came from adjacent turns."""
    first = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    if first is None:
        return {}
    try:
        opening = [(m.get("role"), content_text(m.get("content"))) for m in messages[:first + 1]
                   if m.get("role") in ("system", "developer", "user")]
    except Exception:  # content the request path let through but that has no text: no thread, still recorded
        return {}
    digest = hashlib.sha256(json.dumps(opening, ensure_ascii=False).encode("utf-8")).hexdigest()[:20]
    return {"conversation": f"chat-{digest}",
            "position": sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user") - 1}
