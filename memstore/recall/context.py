"""What gets injected for one request: profile + enabled rules (always), pinned facts, then the facts most
relevant to the conversation's latest request, then the most relevant excerpts of past conversations
(episodes), all within a token budget."""

from __future__ import annotations

import functools
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from memstore.instructions.profiles import ProfileStore
from memstore.messages import content_text, normalize_messages
from memstore.recall.inject import (
    recall_parts,
    render_block,
    render_episode,
    render_memory,
    render_recall,
    render_rules,
)
from memstore.recall.query import conversation_query
from memstore.recall.search import Retriever
from memstore.recall.tokens import count_tokens
from memstore.records import MemoryHit, MemoryRecord, StyleRule
from memstore.validate import check_scope


class Context(BaseModel):
    """The block MemoryClient would add for a request, and what went into it.

    ``system_block`` is the whole block (the "system" placement). The "split" placement sends it in two parts:
    ``stable_block`` (rules, profile, pinned memories: the same text from one request to the next while nothing
    stored changes) and ``recall_block`` (what was recalled for this query, with its own preamble)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    user_id: str
    namespace: str
    system_block: str
    memories: list[MemoryHit]
    stable_block: str = ""
    recall_block: str = ""
    episodes: list[MemoryHit] = []   # excerpts of past conversations in the block, after the memories
    rules: list[StyleRule]
    about_user: str = ""
    response_style: str = ""
    tokens: int
    token_budget: int
    query: str = ""
    dropped: int = 0          # relevant memories left out for lack of budget
    latency_ms: float = 0.0

    @property
    def memory_ids(self) -> list[str]:
        return [h.memory.id for h in self.memories]

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.rules]

    @property
    def episode_ids(self) -> list[str]:
        return [h.memory.id for h in self.episodes]

    def summary(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "namespace": self.namespace, "memory_ids": self.memory_ids,
                "episode_ids": self.episode_ids, "rule_ids": self.rule_ids, "tokens": self.tokens,
                "dropped": self.dropped}


def build_context(retriever: Retriever, profiles: ProfileStore, user_id: str, namespace: str, messages: Any,
                  token_budget: int, limit: int, episodes: int = 0) -> Context:
    """Profile and enabled rules (always), pinned facts, then the ``limit`` facts most relevant to the latest
    user message (with the one before it when the latest is a follow-up), then up to ``episodes`` excerpts of
    past conversations relevant to it, as many as fit in ``token_budget`` (facts first)."""
    user_id, namespace = check_scope(user_id, namespace)
    t0 = time.perf_counter()
    budget = token_budget
    msgs = normalize_messages(messages)
    query = conversation_query([content_text(m.get("content")) for m in msgs if m.get("role") == "user"])
    if query:  # the query embedding computes while the profile and the pinned memories are read
        retriever.prefetch(query[:4000], user_id, namespace)
    profile = profiles.get(user_id, namespace)

    rules, dropped = _fit_rules(profile.rules, budget)
    base = render_block(profile.about_user, profile.response_style, rules, [])
    used = count_tokens(base) if base else _wrapper_tokens()  # the wrapper costs tokens once a memory goes in

    chosen: list[MemoryHit] = []
    seen: set[str] = set()
    candidates: list[MemoryHit] = []
    pinned = retriever.store.pinned(user_id, namespace, pool="facts")
    candidates.extend(MemoryHit(memory=p, score=1.0, sources=["pinned"]) for p in
                      sorted(pinned, key=lambda m: (-m.importance, m.created_at, m.id)))
    found: dict[str | None, list[MemoryHit]] = {"facts": [], "episodes": []}
    if query:  # facts and episodes from one candidate phase
        limits: dict[str | None, int] = {"facts": limit, **({"episodes": episodes * 2} if episodes > 0 else {})}
        found.update(retriever.search_pools(query[:4000], user_id, namespace, limits,
                                            settings=retriever.settings.with_(include_pinned=False)))
        candidates.extend(found["facts"])
    for hit in candidates:
        if hit.memory.id in seen:
            continue
        seen.add(hit.memory.id)
        cost = count_tokens(render_memory(hit.memory)) + 1
        if used + cost > budget:
            dropped += 1
            continue
        used += cost
        chosen.append(hit)

    recalled: list[MemoryHit] = []
    if found["episodes"]:
        used += _section_tokens()
        # an exchange whose every turn already gave the block a fact would repeat it, and one whose every fact
        # has since been invalidated (the user moved, changed their mind) would bring back what is no longer
        # true: the next one says more
        told = {t for h in chosen for t in h.memory.source_turn_ids or []}
        told |= retriever.store.stale_turns(user_id, namespace,
                                            {t for h in found["episodes"] for t in h.memory.source_turn_ids or []})
        for hit in found["episodes"]:
            if len(recalled) >= episodes:
                break
            turns = set(hit.memory.source_turn_ids or [])
            if turns and turns <= told:
                continue
            fitted = _fit_episode(hit, budget - used)
            if fitted is None:
                dropped += 1
                continue
            used += count_tokens(render_episode(fitted.memory)) + 1
            recalled.append(fitted)
    past = [h.memory for h in recalled]

    block = render_block(profile.about_user, profile.response_style, rules, [h.memory for h in chosen], past)
    pinned_ids = {p.id for p in pinned}
    stable = render_block(profile.about_user, profile.response_style, rules,
                          [h.memory for h in chosen if h.memory.id in pinned_ids])
    recall = render_recall([h.memory for h in chosen if h.memory.id not in pinned_ids], past)
    return Context(
        user_id=user_id, namespace=namespace, system_block=block, memories=chosen, rules=rules,
        stable_block=stable, recall_block=recall, episodes=recalled,
        about_user=profile.about_user, response_style=profile.response_style,
        tokens=count_tokens(block) if block else 0, token_budget=budget, query=query, dropped=dropped,
        latency_ms=(time.perf_counter() - t0) * 1000,
    )


def _fit_rules(rules: list[StyleRule], budget: int) -> tuple[list[StyleRule], int]:
    """The rules that fit in the budget on their own, in order: all of them normally; a user with hundreds
    of rules cannot make the block unbounded. (The two custom-instruction fields are always injected, each
    capped by ``max_instruction_chars``.) Returns (kept rules, number left out)."""
    used = 0
    for i, r in enumerate(rules):
        used += count_tokens(render_rules([r]).split("\n")[1]) + 1
        if used > budget:
            return rules[:i], len(rules) - i
    return rules, 0


MIN_EXCERPT_CHARS = 160  # an excerpt shorter than this says too little to be worth its tokens


def _fit_episode(hit: MemoryHit, room: int) -> MemoryHit | None:
    """The episode as it fits in ``room`` tokens: whole, or its text cut short (the start of an exchange
    carries the user's words); None when not even ``MIN_EXCERPT_CHARS`` of it fit."""
    rec = hit.memory
    if count_tokens(render_episode(rec)) + 1 <= room:
        return hit
    overhead = count_tokens(render_episode(rec.model_copy(update={"text": ""}))) + 2
    chars = (room - overhead) * 3  # ~3-4 characters a token: cut, then check
    while chars >= MIN_EXCERPT_CHARS:
        cut = rec.model_copy(update={"text": rec.text[:chars].rstrip() + "…"})
        if count_tokens(render_episode(cut)) + 1 <= room:
            return MemoryHit(memory=cut, score=hit.score, sources=hit.sources)
        chars = chars * 4 // 5
    return None


@functools.cache
def _section_tokens() -> int:
    """Tokens of the past-conversations section's wrapper (paid once, when an excerpt goes in)."""
    placeholder = MemoryRecord(id="x" * 32, user_id="u", text="x", kind="episode")
    return count_tokens("\n".join(recall_parts(episodes=[placeholder]))) - count_tokens(render_episode(placeholder))


@functools.cache
def _wrapper_tokens() -> int:
    """Tokens of the block's wrapper and preamble around the memories (the same for every request)."""
    placeholder = MemoryRecord(id="x" * 32, user_id="u", text="x", kind="fact")
    return count_tokens(render_block(memories=[placeholder])) - count_tokens(render_memory(placeholder))
