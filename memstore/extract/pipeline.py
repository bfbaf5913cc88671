"""From outbox turns to stored memories: gate, gather similar memories, extract, reconcile, mark done.

Used by ``Memory.add(infer=True)`` (synchronously) and by the background worker (worker.py).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from memstore.db import session_scope
from memstore.errors import ExtractionError, LLMError, StorageError
from memstore.extract.extractor import Batch, Extractor, LLMExtractor, RulesExtractor
from memstore.extract.prompts import ExistingItem, TurnView
from memstore.messages import content_text
from memstore.records import MemoryOp, Turn, utcnow

if TYPE_CHECKING:
    from memstore.memory import Memory

log = logging.getLogger("memstore")
MAX_SHOWN_MEMORIES = 40
MAX_SHOWN_RULES = 60
MAX_VIEW_CHARS = 16_000  # of a turn's user text: gate, redaction and prompt work stay bounded


def make_extractor(mem: Memory) -> Extractor:
    return RulesExtractor() if mem.config.extractor == "rules" else LLMExtractor(mem.llm)


def record_turn(mem: Memory, user_id: str, namespace: str, messages: list[dict[str, Any]], response: str = "",
                *, response_id: str | None = None, model: str | None = None, extract: bool = True,
                mode: str = "chat", status: str = "pending", meta: dict[str, Any] | None = None) -> Turn:
    """Writes one finished exchange to the outbox (durably, before the caller gets its response).
    With ``redact_secrets`` (the default) keys, passwords and card/account numbers never reach it."""
    if mem.config.redact_secrets:
        from memstore.redact import redact_messages, redact_text

        messages, response = redact_messages(messages), redact_text(response)
    turn = Turn(user_id=user_id, namespace=namespace, messages=messages, response=response, response_id=response_id,
                model=model, extract=extract, status=status if extract else "skipped",
                meta={"mode": mode, **(meta or {})})
    if turn.status == "processing":  # extracted inline: a crash leaves a claim that expires like a worker's
        turn.claimed_by, turn.claimed_at = f"inline-{os.getpid()}", utcnow()
    with session_scope(mem.engine) as s:
        s.add(turn)
    return turn


def turn_view(turn: Turn, redact_secrets: bool = True) -> TurnView:
    """The new user text of a turn: for chat turns the user messages after the last assistant message
    (the earlier ones were recorded with earlier turns); for ``add`` calls every user message.
    ``redact_secrets``: secrets are replaced by placeholders before any prompt sees them."""
    msgs = turn.messages
    if turn.meta.get("mode", "chat") == "chat":
        last_assistant = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=-1)
        msgs = msgs[last_assistant + 1:]
    user = "\n".join(content_text(m.get("content")) for m in msgs if m.get("role") == "user")
    assistant = turn.response or "\n".join(content_text(m.get("content")) for m in turn.messages
                                           if m.get("role") == "assistant")[-600:]
    if len(user) > MAX_VIEW_CHARS:  # pasted material: the user's own framing sits at its two ends
        user = user[:MAX_VIEW_CHARS * 3 // 4] + "\n…\n" + user[-MAX_VIEW_CHARS // 4:]
    assistant = assistant[:4000]
    if redact_secrets:
        from memstore.redact import redact_text

        user, assistant = redact_text(user), redact_text(assistant)
    return TurnView(user=user, assistant=assistant, date=turn.meta.get("date") or turn.created_at)


def _set_status(mem: Memory, turns: list[Turn], status: str, error: str | None = None, bump: bool = False) -> None:
    with session_scope(mem.engine) as s:
        for t in turns:
            row = s.exec(select(Turn).where(Turn.id == t.id)).one()
            row.status, row.error = status, error
            row.processed_at = utcnow()
            row.claimed_by = None
            if bump:
                row.attempts += 1
            s.add(row)
            t.status, t.error, t.attempts = row.status, row.error, row.attempts


def process_turns(mem: Memory, turns: list[Turn], extractor: Extractor | None = None,
                  raise_errors: bool = False) -> list[MemoryOp]:
    """Extracts a batch of claimed turns, grouped by user scope. Failures mark the group's turns failed
    (with the error) and never drop them; ``raise_errors`` re-raises after marking."""
    from memstore.extract.gate import gate_reason

    extractor = extractor or make_extractor(mem)
    groups: dict[tuple[str, str], list[Turn]] = defaultdict(list)
    for t in turns:
        groups[(t.user_id, t.namespace)].append(t)
    ops: list[MemoryOp] = []
    for (user_id, namespace), group in groups.items():
        views = {t.id: turn_view(t, mem.config.redact_secrets) for t in group}
        open_turns = [t for t in group if t.extract and gate_reason([{"role": "user", "content": views[t.id].user}])]
        closed = [t for t in group if t not in open_turns]
        if closed:
            _set_status(mem, closed, "skipped", "gate: nothing durable in the user's words")
        size = mem.config.extraction_batch_size
        for i in range(0, len(open_turns), size):
            chunk = open_turns[i:i + size]
            try:
                ops.extend(_extract_chunk(mem, user_id, namespace, chunk, [views[t.id] for t in chunk], extractor))
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("extraction failed for %d turn(s) of %s: %s", len(chunk), user_id, msg)
                _set_status(mem, chunk, "failed", msg, bump=True)
                if raise_errors:
                    if isinstance(exc, LLMError):
                        raise
                    raise ExtractionError(msg) from exc
                continue
            _set_status(mem, chunk, "done", bump=True)
    return ops


def _extract_chunk(mem: Memory, user_id: str, namespace: str, turns: list[Turn], views: list[TurnView],
                   extractor: Extractor) -> list[MemoryOp]:
    handles: dict[str, str] = {}
    shown: list[ExistingItem] = []
    by_id: dict[str, str] = {}

    def handle_for(rec: Any) -> str:
        if rec.id not in by_id:
            h = f"m{len(shown) + 1}"
            by_id[rec.id] = h
            handles[h] = rec.id
            shown.append(ExistingItem(handle=h, text=rec.text, kind=rec.kind, date=rec.valid_from or rec.created_at))
        return by_id[rec.id]

    for v in views:
        if not v.user.strip():
            continue
        for hit in mem.search(v.user[:2000], user_id, namespace, limit=6):
            if len(shown) < MAX_SHOWN_MEMORIES:
                handle_for(hit.memory)

    def lookup(text: str) -> list[tuple[str, float]]:
        try:
            found = mem.store.dense_query(mem.store.embed_query(text), user_id, namespace, 5)
        except StorageError as exc:  # the index may be down: reconcile without it (the hash still dedupes)
            log.info("vector index unavailable for extraction lookup: %s", exc)
            return []
        recs = mem.store.get_many([i for i, _ in found], user_id, namespace)
        return [(handle_for(recs[i]), sim) for i, sim in found if i in recs and recs[i].invalid_at is None]

    rules = mem.rules(user_id, namespace).list()[-MAX_SHOWN_RULES:]  # the newest: a bounded prompt
    rule_handles = {f"r{i + 1}": r.id for i, r in enumerate(rules)}
    rule_items = [ExistingItem(handle=f"r{i + 1}", text=r.text) for i, r in enumerate(rules)]
    batch = Batch(turns=views, memories=shown, rules=rule_items, now=max(t.created_at for t in turns), lookup=lookup)
    result = extractor.extract(batch)
    from memstore.extract.reconcile import apply

    actor = "llm" if extractor.name == "llm" else "rules"
    return apply(mem, user_id, namespace, result, handles, rule_handles, [t.id for t in turns],
                 [v.user for v in views], actor, [t.meta.get("metadata") or {} for t in turns])


def extract_now(mem: Memory, messages: list[dict[str, Any]], user_id: str, namespace: str,
                metadata: dict[str, Any] | None = None) -> list[MemoryOp]:
    """``Memory.add(infer=True)``: records the messages as a turn and extracts it right away. On failure
    the turn stays in the outbox marked failed (retryable) and the error is raised."""
    turn = record_turn(mem, user_id, namespace, messages, mode="add", status="processing",
                       meta={"metadata": metadata} if metadata else None)
    return process_turns(mem, [turn], raise_errors=True)


# ---- the outbox -------------------------------------------------------------------------------------

def claim(mem: Memory, worker_id: str, limit: int = 32, lease_seconds: float = 300.0,
          retry_failed: bool = True) -> list[Turn]:
    """Atomically claims up to ``limit`` turns: pending ones, ones whose claim lease expired (a crashed
    worker), and failed ones due for an automatic retry (exponential backoff, up to the attempt limit).
    PostgreSQL uses SELECT ... FOR UPDATE SKIP LOCKED; SQLite serialises writers."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_seconds)
    conds = [Turn.status == "pending",
             (Turn.status == "processing") & (col(Turn.claimed_at) < stale)]  # type: ignore[operator]
    if retry_failed:
        conds.append((Turn.status == "failed") & (col(Turn.attempts) < mem.config.extraction_max_attempts)
                     & (col(Turn.processed_at) < now - timedelta(seconds=5)))  # type: ignore[operator]
    with session_scope(mem.engine) as s:
        q = select(Turn.id).where(or_(*conds)).order_by(col(Turn.created_at), col(Turn.pk)).limit(limit)
        if mem.engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        elif mem.engine.dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        ids = list(s.exec(q).all())
        if not ids:
            return []
        s.exec(update(Turn).where(col(Turn.id).in_(ids)).values(  # type: ignore[call-overload]
            status="processing", claimed_by=worker_id, claimed_at=now))
    with Session(mem.engine, expire_on_commit=False) as s:
        return list(s.exec(select(Turn).where(col(Turn.id).in_(ids), Turn.claimed_by == worker_id)
                           .order_by(col(Turn.created_at), col(Turn.pk))).all())


def retry_failed(mem: Memory, user_id: str | None = None, turn_ids: list[str] | None = None) -> int:
    """Puts failed turns back to pending (attempt counter reset). Returns how many."""
    with session_scope(mem.engine) as s:
        q = update(Turn).where(col(Turn.status) == "failed")
        if user_id is not None:
            q = q.where(col(Turn.user_id) == user_id)
        if turn_ids is not None:
            q = q.where(col(Turn.id).in_(turn_ids))
        return s.exec(q.values(status="pending", attempts=0, error=None)).rowcount  # type: ignore[call-overload]
