"""Isolation, property-based: random users, namespaces and operations; no read ever shows another scope's data.

A hypothesis state machine drives one store with adds (verbatim and through extraction), updates, deletes,
invalidations, custom instructions, rules and forgets, over scopes chosen to collide: ids that differ only in
case, whitespace, a zero-width space, a prefix, Unicode normalisation, SQL or JSON metacharacters, plus random
text. Every stored text carries a unique marker (``mk<n>q``) and the test keeps the truth: which markers each
(user, namespace) owns. Every read -- get_all, search, get, history, export, and the block MemoryClient would
inject (``mem.context``) -- may only contain markers of the scope it asked for; reaching into another scope
by id fails with NotFoundError.

HashEmbedder keeps it fast (a real, deterministic embedder); all texts share words ("tea", "coffee"), so
dense and lexical search always have cross-scope candidates to leak.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, rule

from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError, NotFoundError
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder
from memstore.validate import check_scope

TRICKY_USERS = [
    "alice", "Alice", "alice ", " alice", "ali", "alice\u200b", "\uff41\uff4c\uff49\uff43\uff45", "al'ice",
    "al\"ice", "a%", "_", "*", "alice/../bob", "' OR '1'='1", '{"$ne": null}', "\u7528\u6237", "\U0001f600",
    "x" * 256, "s616c696365x64656661756c74",  # looks like a lexical scope token
]
TRICKY_NAMESPACES = ["default", "Default", "default ", "work", "w%", "ns:1", "\u00e9", "e\u0301"]
_MARK = re.compile(r"mk(\d+)q")


def _valid(value: str) -> bool:
    try:
        check_scope(value, "default")
    except InvalidInputError:
        return False
    return True


users = st.one_of(st.sampled_from(TRICKY_USERS), st.text(min_size=1, max_size=12).filter(_valid))
namespaces = st.one_of(st.sampled_from(TRICKY_NAMESPACES), st.text(min_size=1, max_size=8).filter(_valid))
scopes_ = st.tuples(users, namespaces)
WORDS = st.sampled_from(["tea", "coffee", "hiking", "berlin", "cats", "jazz"])


class Truth:
    """Which markers each scope owns (memories valid and invalid, profile text, rules)."""

    def __init__(self) -> None:
        self.memories: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.other: dict[tuple[str, str], set[str]] = defaultdict(set)  # profile, rules, turns, history

    def allowed(self, user: str, namespace: str | None) -> set[str]:
        keys = [k for k in (set(self.memories) | set(self.other))
                if k[0] == user and (namespace is None or k[1] == namespace)]
        return set().union(*(self.memories[k] | self.other[k] for k in keys)) if keys else set()


class IsolationMachine(RuleBasedStateMachine):
    """Each example gets a fresh store (its own SQLite file and chroma collection under one chroma client),
    so a failure shrinks to a self-contained sequence of operations."""

    home: Path | None = None
    examples = itertools.count()
    scopes_seen: ClassVar[set[tuple[str, str]]] = set()

    memories = Bundle("memories")
    scopes = Bundle("scopes")

    def __init__(self) -> None:
        super().__init__()
        self.truth = Truth()
        self.counter = itertools.count()
        self.store: Memory | None = None

    @initialize()
    def open_store(self) -> None:
        assert self.home is not None
        n = next(self.examples)
        cfg = MemoryConfig(home=self.home, extractor="heuristic", collection=f"iso{n}",
                           database_url=f"sqlite:///{self.home}/example{n}.db")
        self.store = Memory(config=cfg, embedder=HashEmbedder())

    @property
    def mem(self) -> Memory:
        assert self.store is not None
        return self.store

    def marker(self) -> str:
        return f"mk{next(self.counter)}q"

    # ---- writes (into scopes the example has used, so that reads and forgets meet earlier writes) --------
    @rule(target=scopes, scope=scopes_)
    def new_scope(self, scope: tuple[str, str]) -> tuple[str, str]:
        type(self).scopes_seen.add(scope)
        return scope

    @rule(target=memories, scope=scopes, word=WORDS, pinned=st.booleans())
    def add(self, scope: tuple[str, str], word: str, pinned: bool) -> tuple[str, str, str]:
        mark = self.marker()
        (op,) = self.mem.add(f"{mark} likes tea and coffee and {word}", user_id=scope[0], namespace=scope[1],
                             infer=False, pinned=pinned)
        self.truth.memories[scope].add(mark)
        return (*scope, op.memory.id)

    @rule(scope=scopes, word=WORDS)
    def add_through_extraction(self, scope: tuple[str, str], word: str) -> None:
        mark = self.marker()
        self.truth.other[scope].add(mark)  # the turn holds it even if nothing is extracted
        self.mem.add(f"I love {word} and tea {mark}.", user_id=scope[0], namespace=scope[1])

    @rule(ref=memories, other=scopes)
    def update(self, ref: tuple[str, str, str], other: tuple[str, str]) -> None:
        user, ns, mid = ref
        mark = self.marker()
        if other[0] != user:
            with pytest.raises(NotFoundError):
                self.mem.update(mid, f"{mark} stolen tea", user_id=other[0])
            return
        try:
            self.mem.update(mid, f"{mark} now drinks tea and coffee", user_id=user)
        except NotFoundError:  # deleted or forgotten meanwhile
            return
        self.truth.other[(user, ns)].add(mark)      # old texts stay in history
        self.truth.memories[(user, ns)].add(mark)

    @rule(ref=consumes(memories), other=scopes)
    def delete(self, ref: tuple[str, str, str], other: tuple[str, str]) -> None:
        user, _ns, mid = ref
        if other[0] != user:
            with pytest.raises(NotFoundError):
                self.mem.delete(mid, user_id=other[0])
        with contextlib.suppress(NotFoundError):
            self.mem.delete(mid, user_id=user)

    @rule(ref=memories, other=scopes)
    def invalidate_and_peek(self, ref: tuple[str, str, str], other: tuple[str, str]) -> None:
        user, _ns, mid = ref
        if other[0] != user:
            for call in (lambda: self.mem.invalidate(mid, user_id=other[0]),
                         lambda: self.mem.get(mid, user_id=other[0]),
                         lambda: self.mem.history(mid, user_id=other[0]),
                         lambda: self.mem.restore(mid, user_id=other[0])):
                with pytest.raises(NotFoundError):
                    call()
            return
        with contextlib.suppress(NotFoundError):
            self.mem.invalidate(mid, user_id=user)

    @rule(scope=scopes)
    def instructions_and_rules(self, scope: tuple[str, str]) -> None:
        a, r = self.marker(), self.marker()
        self.mem.set_instructions(scope[0], scope[1], about_user=f"{a} drinks tea", response_style=f"{a} short")
        self.mem.rules(scope[0], scope[1]).add(f"Mention tea {r} once")
        self.truth.other[scope].update({a, r})

    @rule(scope=scopes, everything=st.booleans())
    def forget(self, scope: tuple[str, str], everything: bool) -> None:
        ns = None if everything else scope[1]
        self.mem.forget(scope[0], ns)
        for key in list(self.truth.memories) + list(self.truth.other):
            if key[0] == scope[0] and (ns is None or key[1] == ns):
                self.truth.memories.pop(key, None)
                self.truth.other.pop(key, None)

    # ---- reads ----------------------------------------------------------------------------------------
    def assert_only(self, blob: str, user: str, namespace: str | None, what: str) -> None:
        found = {f"mk{x}q" for x in _MARK.findall(blob)}
        leaked = found - self.truth.allowed(user, namespace)
        assert not leaked, f"{what} for {(user, namespace)} shows {sorted(leaked)}"

    @rule(scope=scopes, word=WORDS)
    def read_everything(self, scope: tuple[str, str], word: str) -> None:
        user, ns = scope
        rows = self.mem.get_all(user, ns, include_invalid=True)
        assert all((m.user_id, m.namespace) == scope for m in rows)
        self.assert_only(" ".join(m.text for m in rows), user, ns, "get_all")

        for settings_name in ("hybrid", "dense", "lexical"):
            hits = self.mem.search(f"tea coffee {word}", user, ns, limit=50, include_invalid=True,
                                   settings=settings_name)
            assert all((h.memory.user_id, h.memory.namespace) == scope for h in hits)
            self.assert_only(" ".join(h.memory.text for h in hits), user, ns, f"search[{settings_name}]")

        ctx = self.mem.context(user, f"what about tea, coffee and {word}?", ns, token_budget=4000)
        assert all((h.memory.user_id, h.memory.namespace) == scope for h in ctx.memories)
        self.assert_only(ctx.system_block, user, ns, "context block")

        self.assert_only(json.dumps(self.mem.export(user, ns), default=str), user, ns, "export")
        self.assert_only(json.dumps(self.mem.export(user), default=str), user, None, "export of all namespaces")
        all_ns = self.mem.get_all(user, None, include_invalid=True)
        assert all(m.user_id == user for m in all_ns)
        self.assert_only(" ".join(m.text for m in all_ns), user, None, "get_all(namespace=None)")


@pytest.fixture
def isolation_home(tmp_path: Path) -> Path:
    IsolationMachine.home = tmp_path / "iso"
    IsolationMachine.scopes_seen = set()
    return IsolationMachine.home


def test_no_read_ever_shows_another_scopes_data(isolation_home: Path) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(IsolationMachine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    # the machine really did spread data over many colliding scopes
    assert len(IsolationMachine.scopes_seen) >= 40, len(IsolationMachine.scopes_seen)


def test_lookalike_scopes_are_distinct(tmp_path: Path) -> None:
    """The deterministic core of the property: every pair of lookalike ids is its own scope everywhere."""
    mem = Memory(config=MemoryConfig(home=tmp_path / "pairs", extractor="heuristic"), embedder=HashEmbedder())
    pairs = [(u, n) for u in TRICKY_USERS for n in TRICKY_NAMESPACES[:3]]
    for i, (u, n) in enumerate(pairs):
        mem.add(f"mk{i}q likes tea and coffee", user_id=u, namespace=n, infer=False)
        mem.set_instructions(u, n, about_user=f"mk{i}q about")
        mem.rules(u, n).add(f"Mention mk{i}q")
    for i, (u, n) in enumerate(pairs):
        blobs = [
            " ".join(m.text for m in mem.get_all(u, n, include_invalid=True)),
            " ".join(h.memory.text for h in mem.search("tea coffee", u, n, limit=100)),
            mem.context(u, "tea and coffee?", n, token_budget=4000).system_block,
            json.dumps(mem.export(u, n), default=str),
        ]
        for blob in blobs:
            assert {f"mk{x}q" for x in _MARK.findall(blob)} == {f"mk{i}q"}, (u, n, blob[:300])
