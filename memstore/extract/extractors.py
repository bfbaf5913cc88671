"""Extractors: turn a batch of turns (plus the similar existing memories and rules) into an ExtractionResult.

``LLMExtractor`` asks a model through memstore.llm; ``HeuristicExtractor`` uses the no-LLM patterns in
heuristic.py and decides ADD / NOOP / INVALIDATE by embedding similarity. Both return the same
response model, so reconciliation is one piece of code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from memstore.extract.prompts import (
    ExistingItem,
    ExtractionResult,
    InstructionChange,
    MemoryOperation,
    TurnView,
    extraction_messages,
)

# text -> [(handle, cosine similarity)] of existing memories, best first
Lookup = Callable[[str], list[tuple[str, float]]]


@dataclass
class Batch:
    turns: list[TurnView]
    memories: list[ExistingItem]
    rules: list[ExistingItem]
    now: datetime
    lookup: Lookup = field(default=lambda _t: [])


class Extractor(Protocol):
    name: str

    def extract(self, batch: Batch) -> ExtractionResult: ...


class LLMExtractor:
    """One structured-output model call per batch."""

    name = "llm"

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def extract(self, batch: Batch) -> ExtractionResult:
        msgs = extraction_messages(batch.turns, batch.memories, batch.rules, batch.now)
        return self.llm.structured(msgs, ExtractionResult, repairs=1)


# Predicates that hold one value at a time: a new value replaces the old one.
_SINGLE_VALUED = re.compile(
    r"^(lives in|lives at|moved to|works at|works for|works as|is married to|is dating|is engaged to|"
    r"name is|is called|goes by|is \d+ years old|is aged|drives an?|studies at|is studying)\b", re.I)
DUPLICATE_SIMILARITY = 0.9
INVALIDATE_SIMILARITY = 0.55


def _predicate(text: str) -> str | None:
    m = _SINGLE_VALUED.match(text.strip())
    if not m:
        return None
    p = m.group(1).lower()
    return "lives in" if p in ("moved to", "lives at") else re.sub(r"\d+", "#", p)


class HeuristicExtractor:
    """The offline extractor: regex patterns for candidates, embeddings for reconciliation."""

    name = "heuristic"

    def extract(self, batch: Batch) -> ExtractionResult:
        from memstore.extract.heuristic import extract as extract_candidates
        from memstore.extract.reconcile import near_duplicate

        by_handle = {m.handle: m for m in batch.memories}
        out = ExtractionResult()
        for i, turn in enumerate(batch.turns):
            for cand in extract_candidates([{"role": "user", "content": turn.user}], now=turn.date or batch.now):
                date = cand.valid_from.date().isoformat() if cand.valid_from else None
                if cand.kind == "instruction":
                    if cand.action == "invalidate":
                        target = _best_rule(cand.text, batch.rules)
                        if target:
                            out.instructions.append(InstructionChange(action="remove", text=cand.text,
                                                                      target=target, turn=i))
                    else:
                        out.instructions.append(InstructionChange(action="add", text=cand.text, turn=i))
                    continue
                similar = batch.lookup(cand.text)
                if cand.action == "invalidate":
                    if similar and similar[0][1] >= INVALIDATE_SIMILARITY:
                        out.operations.append(MemoryOperation(op="INVALIDATE", target=similar[0][0], turn=i,
                                                              reason="the user retracted it"))
                    continue
                known = {m.handle: m.text for m in batch.memories}  # lookup() adds to batch.memories
                if similar and near_duplicate(cand.text, known.get(similar[0][0], cand.text), similar[0][1],
                                              DUPLICATE_SIMILARITY):
                    out.operations.append(MemoryOperation(op="NOOP", target=similar[0][0], turn=i,
                                                          reason="near-duplicate"))
                    continue
                pred = _predicate(cand.text)
                replaced = next((h for h, _s in similar if pred and h in by_handle
                                 and _predicate(by_handle[h].text) == pred), None)
                kind = cand.kind if cand.kind in ("fact", "preference", "event") else "fact"
                if replaced:
                    out.operations.append(MemoryOperation(op="INVALIDATE", target=replaced, text=cand.text,
                                                          kind=kind, turn=i, date=date,
                                                          reason=f"new value for '{pred}'"))
                else:
                    out.operations.append(MemoryOperation(op="ADD", text=cand.text, kind=kind, turn=i, date=date,
                                                          reason="explicit" if cand.explicit else ""))
        return out


def _words(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2}


def _best_rule(text: str, rules: Sequence[ExistingItem]) -> str | None:
    want = _words(text)
    best, best_score = None, 0.0
    for r in rules:
        have = _words(r.text)
        score = len(want & have) / max(1, len(want | have))
        if score > best_score:
            best, best_score = r.handle, score
    return best if best_score >= 0.3 else None
