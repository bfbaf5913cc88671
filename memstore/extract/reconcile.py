"""Applies an ExtractionResult to the store: the only place extraction writes.

Handles (m1, r1 ...) are mapped back to real ids; an unknown handle never touches another memory.
Contradictions invalidate and link (superseded_by), they never delete. Rules extracted from a turn are
accepted only when the user's own words in that turn (quotes, code and pasted material removed) carry
them: instructions inside pasted content never become rules.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from memstore.errors import InvalidInputError, NotFoundError
from memstore.extract.prompts import ExtractionResult
from memstore.records import MemoryOp

if TYPE_CHECKING:
    from memstore.memory import Memory

log = logging.getLogger("memstore")
NEAR_DUPLICATE = 0.93


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return datetime.strptime(value.strip()[: len(fmt) + 2], fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _content_words(text: str) -> set[str]:
    from memstore.lexical import STOPWORDS

    return {w[:5] for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in STOPWORDS}


def grounded_rule(rule_text: str, user_text: str) -> bool:
    """True when the user's own words (quotes, code, pasted material removed) carry the rule."""
    from memstore.extract.gate import clean_user_text, sentence_reason, split_sentences

    own = clean_user_text(user_text)
    if not own.strip():
        return False
    if any(sentence_reason(s) == "instruction" for s in split_sentences(own)):
        return True
    want = _content_words(rule_text)
    return bool(want) and len(want & _content_words(own)) / len(want) >= 0.5


def apply(mem: Memory, user_id: str, namespace: str, result: ExtractionResult, handles: dict[str, str],
          rule_handles: dict[str, str], turn_ids: list[str], user_texts: list[str], actor: str,
          turn_metadata: list[dict] | None = None) -> list[MemoryOp]:
    """Applies the operations; ``turn_metadata[i]`` (from ``Memory.add(metadata=...)``) is given to memories
    added from turn i."""
    ops: list[MemoryOp] = []

    def turn_id(i: int | None) -> list[str]:
        return [turn_ids[i]] if i is not None and 0 <= i < len(turn_ids) else list(turn_ids[:1])

    def meta_of(i: int | None) -> dict:
        if not turn_metadata:
            return {}
        return turn_metadata[i] if i is not None and 0 <= i < len(turn_metadata) else turn_metadata[0]

    def add(text: str, kind: str, turn: int | None, date: str | None, reason: str) -> MemoryOp:
        for mid, sim in mem.store.index.query(mem.store.embed_query(text), user_id, namespace, 3):
            if sim < NEAR_DUPLICATE:
                break
            rec = mem.store.get_many([mid], user_id, namespace).get(mid)
            if rec is not None and rec.invalid_at is None:
                return MemoryOp(event="NOOP", memory=rec, reason="near-duplicate of an existing memory")
        item = {"text": text, "kind": kind, "source": actor, "source_turn_ids": turn_id(turn),
                "valid_from": parse_date(date), "confidence": 0.8, "meta": dict(meta_of(turn))}
        return mem.store.add_many(user_id, namespace, [item], actor=actor, reason=reason or None)[0]

    for op in result.operations:
        try:
            target = handles.get(op.target or "")
            text = (op.text or "").strip()
            if op.op == "ADD" or (op.op == "UPDATE" and target is None):
                if text:
                    ops.append(add(text, op.kind, op.turn, op.date, op.reason))
            elif op.op == "UPDATE" and target and text:
                ops.append(mem.store.update_text(target, text, actor, op.reason or None, user_id))
            elif op.op == "INVALIDATE" and target:
                new_id = None
                if text:
                    added = add(text, op.kind, op.turn, op.date, op.reason)
                    ops.append(added)
                    new_id = added.memory.id if added.memory and added.memory.id != target else None
                ops.append(mem.store.invalidate(target, actor, op.reason or None, new_id, user_id))
            elif op.op == "NOOP" and target:
                ops.append(MemoryOp(event="NOOP", memory=mem.store.get(target, user_id), reason=op.reason or None))
        except (InvalidInputError, NotFoundError) as exc:
            log.info("skipped extraction operation %s: %s", op.op, exc)

    rules = mem.rules(user_id, namespace)
    for change in result.instructions:
        try:
            if change.action == "add":
                i = change.turn if change.turn is not None and 0 <= change.turn < len(user_texts) else None
                texts = [user_texts[i]] if i is not None else user_texts
                if not any(grounded_rule(change.text, t) for t in texts):
                    log.info("refused rule not stated by the user: %r", change.text)
                    continue
                rules.propose(change.text, source_turn_ids=turn_id(change.turn), actor=actor)
            else:
                rid = rule_handles.get(change.target or "")
                if rid:
                    rules.remove(rid, actor=actor)
                else:
                    rules.remove_matching(change.text, actor=actor)
        except (InvalidInputError, NotFoundError) as exc:
            log.info("skipped instruction change: %s", exc)
    return ops

