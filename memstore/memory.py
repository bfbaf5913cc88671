"""The Memory facade: add / search / get / update / delete / history / forget / export / import.

Profiles, custom instructions and style rules hang off it too (``profile``, ``rules``,
``set_instructions``, ``compliance``), and so does the context block MemoryClient injects (``context``).

Memory wires the parts and nothing below imports it: the store (rows + vectors), the profile store, the turn
outbox, the retriever and the extraction pipeline each receive only what they use.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError
from memstore.instructions.profiles import Profile, ProfileStore, RulesHandle
from memstore.messages import normalize_messages
from memstore.outbox import Outbox
from memstore.recall.context import Context, build_context
from memstore.recall.search import PRESETS, Retriever, SearchSettings
from memstore.records import EPISODE, MemoryEvent, MemoryHit, MemoryOp, MemoryRecord
from memstore.storage.db import get_engine
from memstore.storage.embed import Embedder, SentenceTransformerEmbedder
from memstore.storage.store import MemoryStore
from memstore.storage.vectors import ChromaIndex, VectorIndex
from memstore.validate import check_actor, check_kind, check_metadata, check_scope, check_text

if TYPE_CHECKING:
    from memstore.extract.pipeline import Extraction

log = logging.getLogger("memstore")


class Memory:
    """A user-scoped memory store. Embedded defaults (SQLite + chroma + bundled MiniLM) need no server.

    >>> mem = Memory(path="/tmp/mem")
    >>> mem.add("I am vegetarian", user_id="alice", infer=False)
    """

    def __init__(
        self,
        path: str | Path | None = None,
        config: MemoryConfig | None = None,
        *,
        embedder: Embedder | None = None,
        index: VectorIndex | None = None,
        llm: Any = None,
    ) -> None:
        cfg = config or MemoryConfig()
        if path is not None:
            cfg = cfg.model_copy(update={"home": Path(path)})
        self.config = cfg
        self.engine = get_engine(cfg.resolved_database_url())
        if index is None:
            index = ChromaIndex(url=cfg.vector_url, collection=cfg.collection) if cfg.vector_url else \
                ChromaIndex(path=cfg.resolved_vector_path(), collection=cfg.collection)
        self.store = MemoryStore(self.engine, index, embedder or SentenceTransformerEmbedder(cfg.embedding_model),
                                 max_chars=cfg.max_memory_chars, redact_secrets=cfg.redact_secrets,
                                 vector_cache_bytes=cfg.vector_cache_mb * 2**20)
        self._llm = llm
        self.llm_given = llm is not None  # an extraction model given here wins over every default
        self.retriever = Retriever(self.store, PRESETS["hybrid"].with_(
            dense_weight=cfg.dense_weight, lexical_weight=cfg.lexical_weight, recency_weight=cfg.recency_weight))
        self.profiles = ProfileStore(self.engine, max_instruction_chars=cfg.max_instruction_chars,
                                     auto_accept_rules=cfg.auto_accept_rules)
        self.outbox = Outbox(self.engine, redact_secrets=cfg.redact_secrets,
                             max_attempts=cfg.extraction_max_attempts, spool_dir=cfg.resolved_home() / "spool")

    @functools.cached_property
    def extraction(self) -> Extraction:
        """The extraction pipeline over this store's parts (built on first use: a CLI listing never needs it)."""
        from memstore.extract.pipeline import Extraction

        cfg = self.config
        return Extraction(self.store, self.profiles, self.outbox, self.retriever, llm=lambda: self.llm,
                          extractor=cfg.extractor, batch_size=cfg.extraction_batch_size,
                          redact_secrets=cfg.redact_secrets, episodes=cfg.episodes)

    @property
    def search_settings(self) -> SearchSettings:
        """The retriever's settings (from the config's weights); ``Memory.search(settings=...)`` overrides."""
        return self.retriever.settings

    # ---- lifecycle ----------------------------------------------------------------------------------
    def repair(self) -> dict[str, int]:
        """Finishes index writes a crash interrupted. Runs once by itself, lazily, before the first index use."""
        return self.store.repair_index()

    @property
    def llm(self) -> Any:
        """The model client used for extraction (memstore.llm.LLM), built from the config on first use."""
        if self._llm is None:
            from memstore.llm import LLM

            self._llm = LLM.from_config(self.config)
        return self._llm

    @llm.setter
    def llm(self, value: Any) -> None:
        """Replaces the extraction model (MemoryClient points it at the application's own endpoint)."""
        self._llm = value

    # ---- memories -----------------------------------------------------------------------------------
    def add(
        self,
        messages: str | list[dict[str, Any]],
        user_id: str,
        namespace: str = "default",
        infer: bool = True,
        metadata: dict[str, Any] | None = None,
        *,
        kind: str = "fact",
        pinned: bool = False,
        importance: float = 0.5,
        actor: str = "api",
    ) -> list[MemoryOp]:
        """Stores what ``messages`` say about the user.

        ``infer=False`` stores each user message verbatim as one memory (no model call); ``infer=True``
        runs the configured extractor (LLM or rules) with reconciliation against existing memories.
        """
        user_id, namespace = check_scope(user_id, namespace)
        msgs = normalize_messages(messages)
        if metadata is not None:
            check_metadata(metadata)
        check_actor(actor)
        check_kind(kind)
        self.store.ensure_repaired()
        if not infer:
            items = [
                {"text": m["content"], "kind": kind, "pinned": bool(pinned), "importance": float(importance),
                 "meta": dict(metadata or {}), "source": actor}
                for m in msgs if m["role"] == "user" and m["content"].strip()
            ]
            if not items:
                raise InvalidInputError("there is no user message to store")
            for it in items:
                it["text"] = check_text(it["text"], self.config.max_memory_chars)
            return self.store.add_many(user_id, namespace, items, actor=actor)
        return self.extraction.extract_now(msgs, user_id, namespace, metadata=metadata)

    def search(
        self,
        query: str,
        user_id: str,
        namespace: str = "default",
        limit: int = 10,
        filters: dict[str, Any] | None = None,
        *,
        include_invalid: bool = False,
        settings: SearchSettings | str | None = None,
        kind: str | None = None,
        episodes: bool = False,
    ) -> list[MemoryHit]:
        """Hybrid search within one user's scope, best first. Searches the facts (every kind but episodes)
        unless ``kind`` says otherwise: ``kind="episode"`` searches the excerpts of past conversations, any
        other kind keeps only memories of that kind. ``episodes=True``: the facts and the excerpts of past
        conversations in one list (a fact and the excerpt of the exchange it came from take one place)."""
        user_id, namespace = check_scope(user_id, namespace)
        query = check_text(query, 10_000, "query")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            raise InvalidInputError("limit must be a positive integer")
        if filters is not None and not isinstance(filters, dict):
            raise InvalidInputError("filters must be a dict")
        if isinstance(settings, str):
            if settings not in PRESETS:
                raise InvalidInputError(f"unknown search preset {settings!r}; one of {sorted(PRESETS)}")
            settings = PRESETS[settings]
        if not isinstance(episodes, bool):
            raise InvalidInputError("episodes must be true or false")
        if episodes:
            if kind is not None:
                raise InvalidInputError("kind cannot be combined with episodes=True (kind='episode' searches "
                                        "the excerpts alone)")
            return self.retriever.search_merged(query, user_id, namespace, limit, filters, include_invalid,
                                                settings)
        pool = "facts"
        if kind is not None:
            check_kind(kind)
            if kind == EPISODE:
                pool = "episodes"
            else:
                filters = {**(filters or {}), "kind": kind}
        return self.retriever.search(query, user_id, namespace, limit, filters, include_invalid, settings,
                                     pool=pool)

    def get(self, memory_id: str, *, user_id: str | None = None) -> MemoryRecord:
        """One memory by id (restricted to ``user_id`` when given). Raises NotFoundError."""
        return self.store.get(memory_id, user_id)

    def get_all(
        self,
        user_id: str,
        namespace: str | None = "default",
        include_invalid: bool = False,
        *,
        kind: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        """Every memory of the user, oldest first (``namespace=None``: all namespaces). Facts only (every kind
        but episodes) unless ``kind`` names one: ``kind="episode"`` lists the excerpts of past conversations."""
        check_scope(user_id, namespace if namespace is not None else "default")
        if kind is not None:
            check_kind(kind)
        return self.store.list(user_id, namespace, include_invalid, kind=kind, limit=limit, offset=offset,
                               pool="facts" if kind is None else None)

    def update(self, memory_id: str, text: str | None = None, *, user_id: str | None = None,
               actor: str = "api", reason: str | None = None, kind: str | None = None,
               pinned: bool | None = None, importance: float | None = None,
               metadata: dict[str, Any] | None = None) -> MemoryRecord:
        """Changes a memory's text (re-embedded) and/or its fields; the old text stays in history."""
        check_actor(actor)
        fields: dict[str, Any] = {}
        if kind is not None:
            fields["kind"] = check_kind(kind)
        if pinned is not None:
            fields["pinned"] = bool(pinned)
        if importance is not None:
            if not 0.0 <= float(importance) <= 1.0:
                raise InvalidInputError("importance must be between 0 and 1")
            fields["importance"] = float(importance)
        if metadata is not None:
            fields["meta"] = check_metadata(metadata)
        if text is None:
            if not fields:
                raise InvalidInputError("nothing to update: give text or a field")
            return self.store.set_fields(memory_id, actor, user_id, reason, **fields)
        self.store.ensure_repaired()
        op = self.store.update_text(memory_id, text, actor, reason, user_id, **fields)
        assert op.memory is not None
        return op.memory

    def invalidate(self, memory_id: str, *, user_id: str | None = None, reason: str | None = None,
                   superseded_by: str | None = None, actor: str = "api") -> MemoryOp:
        """Marks a memory as no longer true; it stays in history and ``include_invalid`` searches."""
        return self.store.invalidate(memory_id, actor, reason, superseded_by, user_id)

    def restore(self, memory_id: str, *, user_id: str | None = None, actor: str = "api") -> MemoryOp:
        return self.store.restore(memory_id, actor, "restored", user_id)

    def delete(self, memory_id: str, *, user_id: str | None = None, actor: str = "api",
               reason: str | None = None) -> MemoryOp:
        """Deletes a memory and its vector; its history is kept (until ``forget``)."""
        return self.store.delete(memory_id, actor, reason, user_id)

    def history(self, memory_id: str, *, user_id: str | None = None) -> list[MemoryEvent]:
        """Every change of a memory, oldest first."""
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInputError("memory_id must be a non-empty string")
        return self.store.history(memory_id, user_id)

    def forget(self, user_id: str, namespace: str | None = None) -> dict[str, int]:
        """Deletes everything of the user: memories, vectors, events, profile, rules, turns, feedback."""
        check_scope(user_id, namespace if namespace is not None else "default")
        counts = {"memories": self.store.forget(user_id, namespace)}
        from memstore import portability

        counts.update(portability.forget_rest(self.engine, user_id, namespace))
        counts["turns"] = counts.get("turns", 0) + self.outbox.forget_spooled(user_id, namespace)
        return counts

    def users(self) -> list[dict[str, Any]]:
        """Every (user, namespace) with memory counts and last activity."""
        from memstore import portability

        return portability.list_users(self.engine)

    # ---- portability --------------------------------------------------------------------------------
    def export(self, user_id: str, namespace: str | None = None) -> dict[str, Any]:
        """A JSON-serialisable, versioned dump of everything stored about the user."""
        check_scope(user_id, namespace if namespace is not None else "default")
        from memstore import portability

        return portability.export_user(self.engine, user_id, namespace)

    def import_(self, data: dict[str, Any] | str | Path, *, dry_run: bool = False) -> dict[str, int]:
        """Restores an export (a dict, a JSON string or a file path), all or nothing, every row checked as the
        write path that made it would check it and kept inside its own scope. Existing records are kept.
        ``dry_run``: check and count what would be written; write nothing."""
        from memstore import portability

        result = portability.import_data(self.engine, data, dry_run=dry_run,
                                         limits=portability.ImportLimits.from_config(self.config))
        if not dry_run:
            self.store.repair_index()
        return result

    def reindex(self, progress: Any = None) -> int:
        """Rebuilds the vector index from SQL; returns the number of memories indexed."""
        return self.store.reindex(progress)

    # ---- profiles, rules, context ------------------------------------------------------------------
    def profile(self, user_id: str, namespace: str = "default") -> Profile:
        """The user's custom instructions and style rules (what every request gets)."""
        return self.profiles.get(user_id, namespace)

    def set_instructions(self, user_id: str, namespace: str = "default", *, about_user: str | None = None,
                         response_style: str | None = None, actor: str = "api") -> Profile:
        """Sets either or both custom-instruction fields ("" clears one); every change can be undone."""
        return self.profiles.set_instructions(user_id, namespace, about_user=about_user,
                                              response_style=response_style, actor=actor)

    def rules(self, user_id: str, namespace: str = "default") -> RulesHandle:
        """The user's style rules: add, remove, list, accept, reject, enable/disable, versions, undo."""
        return self.profiles.rules(user_id, namespace)

    def compliance(self, user_id: str, namespace: str = "default") -> list[dict[str, Any]]:
        """Per checkable rule: replies checked, replies that passed, the pass rate."""
        return self.profiles.compliance(user_id, namespace)

    def context(self, user_id: str, messages: str | list[dict[str, Any]], namespace: str = "default",
                *, token_budget: int | None = None, episodes: bool | None = None) -> Context:
        """What MemoryClient would inject for these messages, without calling a model. ``episodes``: include
        the relevant excerpts of past conversations (default: ``MemoryConfig.episodes``)."""
        if episodes is not None and not isinstance(episodes, bool):
            raise InvalidInputError("episodes must be true or false")
        on = self.config.episodes if episodes is None else episodes
        return build_context(self.retriever, self.profiles, user_id, namespace, messages,
                             token_budget=self.config.token_budget if token_budget is None else token_budget,
                             limit=self.config.search_limit, episodes=self.config.episode_limit if on else 0)
