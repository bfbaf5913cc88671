"""From outbox turns to stored memories: keep each exchange as an episode, gate, gather similar memories,
extract, reconcile, mark done.

Episodes: every chat turn the worker processes is also stored as one memory of kind ``episode`` (the user's
words of that turn and the reply, speaker-labelled and clipped), whether or not anything durable is
extracted from it, so past conversations can be recalled themselves. It is written idempotently (its text
is its content hash: processing a turn again stores nothing new) with the turn's provenance.

:class:`Extraction` receives the parts it uses (store, profiles, outbox, retriever) and a way to get the model
client. ``Memory.add(infer=True)`` runs it synchronously; the background worker (worker.py) drains the outbox
through it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from memstore.errors import ExtractionError, LLMError, StorageError
from memstore.extract.extractors import Batch, Extractor, HeuristicExtractor, LLMExtractor
from memstore.extract.prompts import ExistingItem, TurnView
from memstore.instructions.profiles import ProfileStore
from memstore.messages import content_text
from memstore.outbox import Outbox
from memstore.recall.search import Retriever
from memstore.records import EPISODE, MemoryOp, Turn
from memstore.storage.db import provenance_from_meta
from memstore.storage.store import MemoryStore

log = logging.getLogger("memstore")
MAX_SHOWN_MEMORIES = 40
MAX_SHOWN_RULES = 60
MAX_VIEW_CHARS = 16_000  # of a turn's user text: gate, redaction and prompt work stay bounded
EPISODE_USER_CHARS = 900    # of an episode: the user's words of the turn ...
EPISODE_REPLY_CHARS = 600   # ... and the reply (an excerpt, not a transcript: the block has a token budget)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut) + "…"


def episode_item(turn: Turn) -> dict[str, Any] | None:
    """The episode of a chat turn as ``MemoryStore.add_many`` takes it, or None (not a chat turn, or no user
    words). Its text is "User: ...\nAssistant: ..." (the speaker names from the turn's ``speaker`` /
    ``reply_speaker`` metadata when it has them); it carries the turn's conversation, position, speaker and
    message time (``valid_from``)."""
    if turn.meta.get("mode", "chat") != "chat":
        return None
    msgs = turn.messages
    last_assistant = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=-1)
    user = " ".join(content_text(m.get("content")) for m in msgs[last_assistant + 1:] if m.get("role") == "user")
    user = _clip(user, EPISODE_USER_CHARS)
    if not user:
        return None
    who = str(turn.meta.get("speaker") or "User")[:64]
    text = f"{who}: {user}"
    reply = _clip(turn.response or "", EPISODE_REPLY_CHARS)
    if reply:
        text += f"\n{str(turn.meta.get('reply_speaker') or 'Assistant')[:64]}: {reply}"
    conversation, position, speaker = provenance_from_meta(turn.meta)
    when = turn.meta.get("date")
    try:
        valid_from = datetime.fromisoformat(when) if isinstance(when, str) else turn.created_at
    except ValueError:
        valid_from = turn.created_at
    if valid_from is not None and valid_from.tzinfo is None:
        valid_from = valid_from.replace(tzinfo=UTC)
    return {"text": text, "kind": EPISODE, "importance": 0.3, "source": "api", "source_turn_ids": [turn.id],
            "valid_from": valid_from, "conversation": conversation, "position": position,
            "speaker": speaker or who, "meta": {"turn_id": turn.id}}


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


class Extraction:
    """Turns claimed outbox turns into memory operations and rule changes, one scope at a time."""

    def __init__(self, store: MemoryStore, profiles: ProfileStore, outbox: Outbox, retriever: Retriever, *,
                 llm: Callable[[], Any], extractor: str = "llm", batch_size: int = 8,
                 redact_secrets: bool = True, episodes: bool = True) -> None:
        self.store = store
        self.profiles = profiles
        self.outbox = outbox
        self.retriever = retriever
        self.llm = llm  # called when the LLM extractor is first needed: the client is built lazily
        self.extractor = extractor
        self.batch_size = batch_size
        self.redact_secrets = redact_secrets
        self.episodes = episodes  # every chat turn is also kept as a searchable episode

    def make_extractor(self) -> Extractor:
        return HeuristicExtractor() if self.extractor == "heuristic" else LLMExtractor(self.llm())

    def process(self, turns: list[Turn], extractor: Extractor | None = None,
                raise_errors: bool = False) -> list[MemoryOp]:
        """Extracts a batch of claimed turns, grouped by user scope. Failures mark the group's turns failed
        (with the error) and never drop them; ``raise_errors`` re-raises after marking."""
        from memstore.extract.gate import gate_reason

        extractor = extractor or self.make_extractor()
        groups: dict[tuple[str, str], list[Turn]] = defaultdict(list)
        for t in turns:
            groups[(t.user_id, t.namespace)].append(t)
        ops: list[MemoryOp] = []
        for (user_id, namespace), group in groups.items():
            if self.episodes:
                try:
                    self.store_episodes(user_id, namespace, group)  # not in ``ops``: those are what was learned
                except Exception as exc:  # retried with the turns (an episode already stored is a NOOP then)
                    msg = f"episodes: {type(exc).__name__}: {exc}"[:2000]
                    log.debug("storing episodes failed for %d turn(s) of %s: %s", len(group), user_id, msg)
                    self.outbox.mark(group, "failed", msg, attempted=True)
                    if raise_errors:
                        raise ExtractionError(msg) from exc
                    continue
            views = {t.id: turn_view(t, self.redact_secrets) for t in group}
            open_turns = [t for t in group
                          if t.extract and gate_reason([{"role": "user", "content": views[t.id].user}])]
            closed = [t for t in group if t not in open_turns]
            if closed:
                self.outbox.mark(closed, "skipped", "gate: nothing durable in the user's words")
            for i in range(0, len(open_turns), self.batch_size):
                chunk = open_turns[i:i + self.batch_size]
                try:
                    ops.extend(self._extract_chunk(user_id, namespace, chunk, [views[t.id] for t in chunk],
                                                   extractor))
                except Exception as exc:
                    msg = f"{type(exc).__name__}: {exc}"[:2000]
                    log.debug("extraction failed for %d turn(s) of %s: %s", len(chunk), user_id, msg)
                    self.outbox.mark(chunk, "failed", msg, attempted=True)
                    if raise_errors:
                        if isinstance(exc, LLMError):
                            raise
                        raise ExtractionError(msg) from exc
                    continue
                self.outbox.mark(chunk, "done", attempted=True)
        return ops

    def store_episodes(self, user_id: str, namespace: str, turns: list[Turn]) -> list[MemoryOp]:
        """Stores the episode of each chat turn (one batch, one embedding call). Idempotent."""
        items = [item for t in turns if t.extract and (item := episode_item(t)) is not None]
        if not items:
            return []
        # a turn forgotten (memstore forget) while it was being processed leaves no episode behind
        alive = {t.id for t in self.outbox.list(turn_ids=[i["source_turn_ids"][0] for i in items], limit=None)}
        items = [i for i in items if i["source_turn_ids"][0] in alive]
        if not items:
            return []
        limit = self.store.max_chars
        for item in items:  # a store configured for short memories still takes its episodes
            if len(item["text"]) > limit:
                item["text"] = item["text"][:limit - 1] + "…"
        return self.store.add_many(user_id, namespace, items, actor="api", reason="recorded exchange")

    def extract_now(self, messages: list[dict[str, Any]], user_id: str, namespace: str,
                    metadata: dict[str, Any] | None = None) -> list[MemoryOp]:
        """``Memory.add(infer=True)``: records the messages as a turn and extracts it right away. On failure
        the turn stays in the outbox marked failed (retryable) and the error is raised."""
        turn = self.outbox.record(user_id, namespace, messages, mode="add", status="processing",
                                  meta={"metadata": metadata} if metadata else None)
        return self.process([turn], raise_errors=True)

    def _extract_chunk(self, user_id: str, namespace: str, turns: list[Turn], views: list[TurnView],
                       extractor: Extractor) -> list[MemoryOp]:
        store = self.store
        handles: dict[str, str] = {}
        shown: list[ExistingItem] = []
        by_id: dict[str, str] = {}

        def handle_for(rec: Any) -> str:
            if rec.id not in by_id:
                h = f"m{len(shown) + 1}"
                by_id[rec.id] = h
                handles[h] = rec.id
                shown.append(ExistingItem(handle=h, text=rec.text, kind=rec.kind,
                                          date=rec.valid_from or rec.created_at))
            return by_id[rec.id]

        for v in views:
            if not v.user.strip():
                continue
            for hit in self.retriever.search(v.user[:2000], user_id, namespace, limit=6):
                if len(shown) < MAX_SHOWN_MEMORIES:
                    handle_for(hit.memory)

        def lookup(text: str) -> list[tuple[str, float]]:
            try:
                found = store.dense_query(store.embed_query(text), user_id, namespace, 5, pool="facts")
            except StorageError as exc:  # the index may be down: reconcile without it (the hash still dedupes)
                log.info("vector index unavailable for extraction lookup: %s", exc)
                return []
            recs = store.get_many([i for i, _ in found], user_id, namespace)
            return [(handle_for(recs[i]), sim) for i, sim in found if i in recs and recs[i].invalid_at is None]

        rules = self.profiles.rules(user_id, namespace)
        shown_rules = rules.list()[-MAX_SHOWN_RULES:]  # the newest: a bounded prompt
        rule_handles = {f"r{i + 1}": r.id for i, r in enumerate(shown_rules)}
        rule_items = [ExistingItem(handle=f"r{i + 1}", text=r.text) for i, r in enumerate(shown_rules)]
        batch = Batch(turns=views, memories=shown, rules=rule_items, now=max(t.created_at for t in turns),
                      lookup=lookup)
        result = extractor.extract(batch)
        from memstore.extract.reconcile import apply

        return apply(store, rules, result, handles, rule_handles, [t.id for t in turns], [v.user for v in views],
                     extractor.name, [t.meta.get("metadata") or {} for t in turns],
                     [provenance_from_meta(t.meta) for t in turns])
