"""People's judgements of replies (ratings and pairwise preferences) and their export as
preference-tuning data in OpenAI's DPO JSONL format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from memstore.errors import InvalidInputError, NotFoundError
from memstore.records import Feedback, Turn
from memstore.storage.db import session_scope


def _turn(s: Session, response_id: str) -> Turn:
    if not isinstance(response_id, str) or not response_id:
        raise InvalidInputError("response_id must be a non-empty string")
    turn = s.exec(select(Turn).where(Turn.response_id == response_id)).first()
    if turn is None:
        raise NotFoundError(f"no recorded response with id {response_id!r}")
    return turn


def rate(engine: Engine, response_id: str, rating: int, comment: str | None = None) -> Feedback:
    """Stores +1 / -1 for a recorded response."""
    if rating not in (1, -1) or isinstance(rating, bool):
        raise InvalidInputError("rating must be +1 or -1")
    with session_scope(engine) as s:
        turn = _turn(s, response_id)
        fb = Feedback(user_id=turn.user_id, namespace=turn.namespace, response_id=response_id, rating=rating,
                      comment=comment)
        s.add(fb)
    return fb


def compare(engine: Engine, response_id_a: str, response_id_b: str, preferred: str,
            comment: str | None = None) -> Feedback:
    """Stores which of two recorded responses to the same prompt the person preferred."""
    if preferred not in (response_id_a, response_id_b):
        raise InvalidInputError("preferred must be one of the two response ids")
    if response_id_a == response_id_b:
        raise InvalidInputError("compare needs two different responses")
    with session_scope(engine) as s:
        a, b = _turn(s, response_id_a), _turn(s, response_id_b)
        if (a.user_id, a.namespace) != (b.user_id, b.namespace):
            raise InvalidInputError("the two responses belong to different users")
        fb = Feedback(user_id=a.user_id, namespace=a.namespace, response_id=response_id_a,
                      other_response_id=response_id_b, preferred=preferred, comment=comment)
        s.add(fb)
    return fb


def _prompt(turn: Turn) -> list[dict[str, Any]]:
    return [m for m in turn.messages if m.get("role") in ("system", "developer", "user", "assistant")]


def dpo_pairs(engine: Engine, user_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Preference pairs in OpenAI's preference fine-tuning format:
    {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}],
     "non_preferred_output": [{"role": "assistant", "content": ...}]}
    from comparisons, and from a +1 and a -1 rating of replies to the same prompt."""
    with Session(engine) as s:
        q = select(Feedback).order_by(col(Feedback.created_at))
        if user_id is not None:
            q = q.where(Feedback.user_id == user_id)
        rows = list(s.exec(q).all())
        turns = {t.response_id: t for t in s.exec(select(Turn).where(
            col(Turn.response_id).in_({r.response_id for r in rows} | {r.other_response_id for r in rows
                                                                          if r.other_response_id}))).all()}
    for fb in rows:
        if fb.preferred and fb.other_response_id:
            good = turns.get(fb.preferred)
            bad = turns.get(fb.other_response_id if fb.preferred == fb.response_id else fb.response_id)
            if good and bad:
                yield _pair(_prompt(good), good.response, bad.response)
    by_prompt: dict[str, dict[int, Turn]] = {}
    for fb in rows:
        if fb.rating is not None and fb.response_id in turns:
            t = turns[fb.response_id]
            key = json.dumps(_prompt(t), sort_keys=True)
            by_prompt.setdefault(key, {})[fb.rating] = t
    for ratings in by_prompt.values():
        if 1 in ratings and -1 in ratings:
            yield _pair(_prompt(ratings[1]), ratings[1].response, ratings[-1].response)


def _pair(prompt: list[dict[str, Any]], good: str, bad: str) -> dict[str, Any]:
    return {"input": {"messages": prompt},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}
