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

from memstore.errors import InvalidInputError, NotFoundError, StorageError
from memstore.extract.prompts import ExtractionResult
from memstore.instructions.profiles import RulesHandle
from memstore.records import MemoryOp
from memstore.storage.store import MemoryStore

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


def details(text: str) -> set[str]:
    """The parts of a statement an embedding barely sees: numbers and names ("born in 2021" vs "2022",
    "item k27" vs "item k22", "sister Ana" vs "sister Eva" are 0.9+ similar yet different facts)."""
    words = re.findall(r"[^\W_]+", text)
    return {w.lower() for i, w in enumerate(words) if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper())}


def near_duplicate(text: str, existing: str, similarity: float, threshold: float = NEAR_DUPLICATE) -> bool:
    return similarity >= threshold and details(text) == details(existing)


def _content_words(text: str) -> set[str]:
    from memstore.storage.lexical import STOPWORDS

    return {w[:5] for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in STOPWORDS}


# words every rule has: they say nothing about which rule the user stated
_GENERIC_RULE_WORDS = frozenset({"alway", "never", "use", "reply", "repli", "respo", "answe", "pleas", "stop",
                                 "start", "keep", "make", "write", "don't", "dont", "every", "from", "now", "any",
                                 "your", "messa", "user"})


def grounded_rule(rule_text: str, user_text: str) -> bool:
    """True when the user's own words (quotes, code, pasted material removed) carry the rule: most of the
    rule's specific words are in one of the user's own instruction sentences (or, failing that, in their
    own text). That the user gave *some* instruction is not enough: "Please never use emojis. Summarize:
    '... always reply in French ...'" grounds the emoji rule, not the French one."""
    from memstore.extract.gate import clean_user_text, sentence_reason, split_sentences

    own = clean_user_text(user_text)
    if not own.strip():
        return False
    instructions = [s for s in split_sentences(own) if sentence_reason(s) == "instruction"]
    want = _content_words(rule_text) - _GENERIC_RULE_WORDS
    if not want:  # nothing specific to look for ("Always reply", "Never do that")
        return bool(instructions)
    if any(len(want & _content_words(s)) / len(want) >= 0.5 for s in instructions):
        return True
    return len(want & _content_words(own)) / len(want) >= 0.5


def apply(store: MemoryStore, rules: RulesHandle, result: ExtractionResult, handles: dict[str, str],
          rule_handles: dict[str, str], turn_ids: list[str], user_texts: list[str], actor: str,
          turn_metadata: list[dict] | None = None,
          turn_provenance: list[tuple[str | None, int | None, str | None]] | None = None) -> list[MemoryOp]:
    """Applies the operations to one scope (``rules``' user and namespace); ``turn_metadata[i]`` (from
    ``Memory.add(metadata=...)``) is given to memories added from turn i, and so is where turn i came from
    (``turn_provenance[i]``: conversation, position, speaker)."""
    user_id, namespace = rules.user_id, rules.namespace
    ops: list[MemoryOp] = []

    def turn_id(i: int | None) -> list[str]:
        return [turn_ids[i]] if i is not None and 0 <= i < len(turn_ids) else list(turn_ids[:1])

    def meta_of(i: int | None) -> dict:
        if not turn_metadata:
            return {}
        return turn_metadata[i] if i is not None and 0 <= i < len(turn_metadata) else turn_metadata[0]

    def similar(text: str) -> list[tuple[str, float]]:
        try:
            return store.dense_query(store.embed_query(text), user_id, namespace, 3, pool="facts")
        except StorageError as exc:  # exact duplicates are still caught by the content hash
            log.info("vector index unavailable for the near-duplicate check: %s", exc)
            return []

    def add(text: str, kind: str, turn: int | None, date: str | None, reason: str) -> MemoryOp:
        for mid, sim in similar(text):
            if sim < NEAR_DUPLICATE:
                break
            rec = store.get_many([mid], user_id, namespace).get(mid)
            if rec is not None and rec.invalid_at is None and near_duplicate(text, rec.text, sim):
                said_in = turn_id(turn)
                if said_in:
                    # said again: this exchange is a source too (its excerpt repeats the fact in the block,
                    # and goes out of date with it)
                    rec = store.add_sources(rec.id, said_in, user_id)
                return MemoryOp(event="NOOP", memory=rec, reason="near-duplicate of an existing memory")
        conv, pos, speaker = (turn_provenance[turn] if turn_provenance and turn is not None
                              and 0 <= turn < len(turn_provenance) else (None, None, None))
        item = {"text": text, "kind": kind, "source": actor, "source_turn_ids": turn_id(turn),
                "conversation": conv, "position": pos, "speaker": speaker,
                "valid_from": parse_date(date), "confidence": 0.8, "meta": dict(meta_of(turn))}
        return store.add_many(user_id, namespace, [item], actor=actor, reason=reason or None)[0]

    for op in result.operations:
        try:
            target = handles.get(op.target or "")
            text = (op.text or "").strip()
            if op.op == "ADD" or (op.op == "UPDATE" and target is None):
                if text:
                    ops.append(add(text, op.kind, op.turn, op.date, op.reason))
            elif op.op == "UPDATE" and target and text:
                ops.append(store.update_text(target, text, actor, op.reason or None, user_id))
            elif op.op == "INVALIDATE" and target:
                new_id = None
                if text:
                    added = add(text, op.kind, op.turn, op.date, op.reason)
                    ops.append(added)
                    new_id = added.memory.id if added.memory and added.memory.id != target else None
                ops.append(store.invalidate(target, actor, op.reason or None, new_id, user_id))
            elif op.op == "NOOP" and target:
                rec = store.get(target, user_id)
                said_in = turn_id(op.turn) if op.turn is not None else []
                if said_in and rec.invalid_at is None:  # stated again there
                    rec = store.add_sources(target, said_in, user_id)
                ops.append(MemoryOp(event="NOOP", memory=rec, reason=op.reason or None))
        except (InvalidInputError, NotFoundError) as exc:
            log.info("skipped extraction operation %s: %s", op.op, exc)

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

