"""The candidate memory type every extractor (LLM or rules) produces.

A :class:`Candidate` is a proposal, not a stored memory: reconciliation decides whether it becomes an ADD,
an UPDATE of an existing memory, an INVALIDATE, or nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal["fact", "preference", "event", "instruction"]


class Candidate(BaseModel):
    """One durable statement about the user, proposed for storage."""

    text: str = Field(
        description=(
            "A durable, self-contained statement in third person about the user, e.g. 'Is vegetarian', "
            "'Daughter Emma was born in 2021', 'Prefers aisle seats'; for instructions the imperative "
            "rule, e.g. 'Never use capital letters'."
        )
    )
    kind: Kind
    action: Literal["add", "invalidate"] = Field(
        default="add",
        description="'invalidate' when the user retracts something: 'forget that ...', 'I no longer ...'.",
    )
    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    source_index: int | None = Field(
        default=None, description="Index of the message in the input list the candidate came from."
    )
    explicit: bool = Field(default=False, description="The user asked to remember it ('remember that ...').")
    valid_from: datetime | None = Field(
        default=None, description="When the event happened / the fact became true, if resolvable."
    )
