"""The Memory API on the embedded defaults: round trips, isolation, dedupe, invalidation, repair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memstore import ImportFormatError, InvalidInputError, Memory, MemoryConfig, NotFoundError


@pytest.fixture
def store(make_memory) -> Memory:
    return make_memory()


def test_add_search_get_update_delete_history(store: Memory) -> None:
    ops = store.add("I am vegetarian", user_id="alice", infer=False)
    assert [o.event for o in ops] == ["ADD"]
    mid = ops[0].memory.id
    store.add("My daughter Emma was born in 2021", user_id="alice", infer=False)

    hits = store.search("what food do I eat", user_id="alice")
    assert hits[0].memory.id == mid
    assert "dense" in hits[0].sources
    lexical = store.search("Emma", user_id="alice")
    assert "lexical" in lexical[0].sources and "Emma" in lexical[0].memory.text

    assert store.get(mid).text == "I am vegetarian"
    updated = store.update(mid, "I am vegan", reason="diet changed")
    assert updated.text == "I am vegan"
    assert store.search("vegan diet", user_id="alice")[0].memory.id == mid

    store.delete(mid)
    with pytest.raises(NotFoundError):
        store.get(mid)
    events = store.history(mid)
    assert [e.event for e in events] == ["ADD", "UPDATE", "DELETE"]
    assert events[1].old_text == "I am vegetarian" and events[1].new_text == "I am vegan"
    assert events[1].reason == "diet changed" and events[1].actor == "api"
    assert all(h.memory.id != mid for h in store.search("vegan", user_id="alice"))


def test_messages_infer_false_stores_each_user_message(store: Memory) -> None:
    ops = store.add([
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "I live in Porto"},
        {"role": "assistant", "content": "Nice city!"},
        {"role": "user", "content": [{"type": "text", "text": "I work as a nurse"}]},
    ], user_id="alice", infer=False, metadata={"src": "test"})
    assert [o.memory.text for o in ops] == ["I live in Porto", "I work as a nurse"]
    assert all(o.memory.meta == {"src": "test"} for o in ops)


def test_exact_duplicates_are_not_stored_twice(store: Memory) -> None:
    store.add("I love hiking", user_id="alice", infer=False)
    ops = store.add("  i love hiking. ", user_id="alice", infer=False)
    assert ops[0].event == "NOOP"
    assert len(store.get_all("alice")) == 1
    # another user may say the same thing
    assert store.add("I love hiking", user_id="bob", infer=False)[0].event == "ADD"


def test_isolation_between_users_and_namespaces(store: Memory) -> None:
    store.add("Alice's secret is the blue door", user_id="alice", infer=False)
    store.add("Bob keeps bees", user_id="bob", infer=False)
    store.add("Alice at work: uses vim", user_id="alice", namespace="work", infer=False)
    for query in ("secret blue door", "bees", "vim", "Alice"):
        assert all(h.memory.user_id == "bob" for h in store.search(query, user_id="bob"))
        assert all(h.memory.namespace == "default" for h in store.search(query, user_id="alice"))
    for filters in ({"kind": "fact"}, {"pinned": False}, {"metadata": {}}, {"user_id": "alice"}):
        assert all(h.memory.user_id == "bob" for h in store.search("secret door", user_id="bob", filters=filters))
    assert [m.text for m in store.get_all("bob")] == ["Bob keeps bees"]
    alice_id = store.get_all("alice")[0].id
    with pytest.raises(NotFoundError):
        store.get(alice_id, user_id="bob")
    with pytest.raises(NotFoundError):
        store.delete(alice_id, user_id="bob")
    assert store.get(alice_id).user_id == "alice"


def test_invalidated_memories_hidden_unless_asked(store: Memory) -> None:
    old = store.add("I live in Berlin", user_id="alice", infer=False)[0].memory
    new = store.add("I live in Lisbon", user_id="alice", infer=False)[0].memory
    store.invalidate(old.id, superseded_by=new.id, reason="moved")
    assert [h.memory.id for h in store.search("where do I live", user_id="alice")] == [new.id]
    with_invalid = store.search("where do I live", user_id="alice", include_invalid=True)
    assert {h.memory.id for h in with_invalid} == {old.id, new.id}
    assert [m.id for m in store.get_all("alice")] == [new.id]
    stale = store.get(old.id)
    assert stale.invalid_at is not None and stale.superseded_by == new.id
    # saying it again restores it
    assert store.add("I live in Berlin", user_id="alice", infer=False)[0].event == "RESTORE"
    assert store.get(old.id).invalid_at is None


def test_forget_removes_everything_of_the_user(store: Memory) -> None:
    mid = store.add("I have a cat named Miso", user_id="alice", infer=False)[0].memory.id
    store.add("Bob has a dog", user_id="bob", infer=False)
    store.set_instructions("alice", about_user="Cat person")
    store.rules("alice").add("Never use capital letters")
    counts = store.forget("alice")
    assert counts["memories"] == 1 and counts["profiles"] == 1 and counts["rules"] == 1
    assert store.get_all("alice") == []
    assert store.search("cat", user_id="alice") == []
    with pytest.raises(NotFoundError):
        store.history(mid)
    assert store.profile("alice").is_empty
    assert mid not in store.store.index.ids("alice")
    assert len(store.get_all("bob")) == 1


def test_export_import_round_trip(make_memory) -> None:
    src = make_memory()
    a = src.add("I am allergic to peanuts", user_id="alice", infer=False, metadata={"k": 1})[0].memory
    src.update(a.id, "I am allergic to peanuts and cashews")
    src.set_instructions("alice", about_user="Nurse in Porto", response_style="short answers")
    src.rules("alice").add("Answer in at most 3 bullet points")
    data = json.loads(json.dumps(src.export("alice")))
    assert data["format"] == "memstore.export" and data["version"] == 1

    dst = make_memory()
    counts = dst.import_(data)
    assert counts["memories"] == 1 and counts["events"] == 2 and counts["rules"] == 1
    rec = dst.get(a.id)
    assert rec.text == "I am allergic to peanuts and cashews" and rec.meta == {"k": 1}
    assert [e.event for e in dst.history(a.id)] == ["ADD", "UPDATE"]
    assert dst.search("nut allergy", user_id="alice")[0].memory.id == a.id
    profile = dst.profile("alice")
    assert profile.about_user == "Nurse in Porto" and profile.rules[0].checker == "max_bullets"
    assert dst.import_(data)["memories"] == 0  # importing twice adds nothing


@pytest.mark.parametrize("bad", [
    "{not json",
    json.dumps({"format": "something-else", "version": 1, "user_id": "a"}),
    json.dumps({"format": "memstore.export", "version": 99, "user_id": "a"}),
    json.dumps({"format": "memstore.export", "version": 1, "user_id": "a", "memories": [{"user_id": "a"}]}),
    json.dumps({"format": "memstore.export", "version": 1, "user_id": "a",
                "memories": [{"user_id": "b", "text": "x"}]}),
    json.dumps({"format": "memstore.export", "version": 1, "user_id": "a", "memories": "oops"}),
])
def test_corrupted_export_is_rejected_and_nothing_is_lost(store: Memory, tmp_path: Path, bad: str) -> None:
    store.add("I keep bees", user_id="a", infer=False)
    path = tmp_path / "bad.json"
    path.write_text(bad)
    with pytest.raises(ImportFormatError):
        store.import_(path)
    assert [m.text for m in store.get_all("a")] == ["I keep bees"]


def test_truncated_export_file_imports_nothing(make_memory, tmp_path: Path) -> None:
    src = make_memory()
    for i in range(3):
        src.add(f"fact number {i} about gardening", user_id="a", infer=False)
    text = json.dumps(src.export("a"))
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    dst = make_memory()
    with pytest.raises(ImportFormatError):
        dst.import_(path)
    assert dst.get_all("a") == []


@pytest.mark.parametrize("call", [
    lambda m: m.add("", user_id="alice", infer=False),
    lambda m: m.add("   ", user_id="alice", infer=False),
    lambda m: m.add(42, user_id="alice", infer=False),
    lambda m: m.add([{"role": "wizard", "content": "hi"}], user_id="alice", infer=False),
    lambda m: m.add("hello", user_id="", infer=False),
    lambda m: m.add("hello", user_id=7, infer=False),
    lambda m: m.add("hello", user_id="alice", namespace="", infer=False),
    lambda m: m.add("x" * 5000, user_id="alice", infer=False),
    lambda m: m.add("hello", user_id="alice", infer=False, kind="opinion"),
    lambda m: m.search("", user_id="alice"),
    lambda m: m.search("hi", user_id="alice", limit=0),
    lambda m: m.search("hi", user_id="alice", filters="kind=fact"),
    lambda m: m.update("nope", ""),
    lambda m: m.get(""),
    lambda m: m.get(None),
])
def test_bad_input_raises_clear_errors(store: Memory, call) -> None:
    store.add("I keep bees", user_id="alice", infer=False)
    with pytest.raises(InvalidInputError):
        call(store)
    assert [m.text for m in store.get_all("alice")] == ["I keep bees"]


def test_unknown_ids_raise_not_found(store: Memory) -> None:
    for call in (lambda: store.get("0" * 32), lambda: store.update("0" * 32, "x"),
                 lambda: store.delete("0" * 32), lambda: store.history("0" * 32),
                 lambda: store.invalidate("0" * 32)):
        with pytest.raises(NotFoundError):
            call()


def test_index_reset_and_rebuilt_from_sql(store: Memory) -> None:
    ids = [o.memory.id for o in store.add(
        [{"role": "user", "content": t} for t in ("I play the cello", "I grow tomatoes", "I speak Japanese")],
        user_id="alice", infer=False)]
    store.store.index.reset()
    assert store.store.index.count() == 0
    assert store.reindex() == 3
    assert store.store.index.ids("alice") == set(ids)
    assert store.search("musical instrument", user_id="alice")[0].memory.id == ids[0]


def test_index_rebuilt_from_sql_after_its_directory_is_deleted(tmp_path: Path) -> None:
    """Embedded files: the whole chroma directory deleted while no process runs."""
    import shutil

    home = tmp_path / "h"
    mem = Memory(config=MemoryConfig(home=home))
    ids = [o.memory.id for o in mem.add(
        [{"role": "user", "content": t} for t in ("I play the cello", "I grow tomatoes", "I speak Japanese")],
        user_id="alice", infer=False)]
    assert mem.search("musical instrument", user_id="alice")[0].memory.id == ids[0]
    # the next process rebuilds it from SQL
    shutil.rmtree(home / "chroma")
    code = (
        "import sys; from memstore import Memory, MemoryConfig; "
        f"m = Memory(config=MemoryConfig(home={str(home)!r})); "
        "print(m.reindex()); print(m.search('vegetables in my garden', user_id='alice')[0].memory.id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", ids[1]]


class _BrokenIndex:
    """A vector index that fails every write, like a crash between the SQL and the index write."""

    def __init__(self, real) -> None:
        self.real = real

    def upsert(self, *a, **k):
        raise RuntimeError("index down")

    def delete(self, *a, **k):
        raise RuntimeError("index down")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_crash_between_sql_and_index_write_is_repaired_on_next_open(make_memory) -> None:
    healthy = make_memory()
    healthy.add("I collect vinyl records", user_id="alice", infer=False)
    broken = Memory(config=healthy.config, index=_BrokenIndex(healthy.store.index))
    broken._repaired = True
    op = broken.add("I am training for a marathon", user_id="alice", infer=False)[0]
    assert op.memory.indexed is False  # stored in SQL, not in the index
    gone = broken.add("I dislike olives", user_id="alice", infer=False)[0].memory
    broken.delete(gone.id)  # SQL delete lands, the vector stays behind (tombstoned)

    reopened = Memory(config=healthy.config)
    hits = reopened.search("running race training", user_id="alice")
    assert hits[0].memory.id == op.memory.id
    assert "dense" in hits[0].sources
    assert gone.id not in reopened.store.index.ids("alice")
    assert reopened.get(op.memory.id).indexed is True


def test_pinned_memories_surface_in_search(store: Memory) -> None:
    pinned = store.add("My name is Dana", user_id="alice", infer=False, pinned=True)[0].memory
    store.add("I like jazz", user_id="alice", infer=False)
    hits = store.search("music", user_id="alice")
    assert pinned.id in {h.memory.id for h in hits}
    assert "pinned" in next(h for h in hits if h.memory.id == pinned.id).sources


def test_every_request_gets_the_pinned_memories_as_they_are_now(store: Memory) -> None:
    """The injected block starts with the user's valid pinned facts (oldest first): a pin, an unpin or an
    invalidation shows in the next request, other users' pins never do."""
    name = store.add("My name is Dana", user_id="alice", infer=False, pinned=True)[0].memory
    store.add("I like jazz", user_id="alice", infer=False)
    store.add("My name is Bob", user_id="bob", infer=False, pinned=True)
    assert [m.id for m in store.store.pinned("alice", "default")] == [name.id]
    assert [h.memory.id for h in store.context("alice", "weather?").memories][:1] == [name.id]
    allergy = store.add("Allergic to peanuts", user_id="alice", infer=False)[0].memory
    store.update(allergy.id, pinned=True, user_id="alice")
    assert [m.id for m in store.store.pinned("alice", "default")] == [name.id, allergy.id]
    store.update(name.id, pinned=False, user_id="alice")
    store.invalidate(allergy.id, user_id="alice")
    assert store.store.pinned("alice", "default") == []
    assert "pinned" not in {s for h in store.context("alice", "weather?").memories for s in h.sources}
    with pytest.raises(InvalidInputError, match="pool"):
        store.store.pinned("alice", "default", pool="everything")


def test_a_batch_comes_back_as_stored_records_with_their_history(store: Memory) -> None:
    """``add_many`` writes a batch's rows and ADD events as multi-row inserts; what it returns is what a
    session would have left (detached, with primary keys), usable with the rest of the store."""
    from sqlalchemy import inspect as sa_inspect

    from memstore.storage.db import session_scope

    ops = store.add([{"role": "user", "content": t} for t in ("I like jazz", "I live in Porto", "I like jazz")],
                    user_id="alice", infer=False)
    assert [op.event for op in ops] == ["ADD", "ADD", "NOOP"]
    jazz, porto = ops[0].memory, ops[1].memory
    assert jazz.pk is not None and porto.pk is not None and sa_inspect(jazz).detached
    assert [(e.event, e.new_text) for e in store.history(porto.id)] == [("ADD", "I live in Porto")]
    with session_scope(store.store.engine) as s:  # a returned record given to a session updates its row
        s.add(porto)
        porto.importance = 0.9
    assert sorted(m.text for m in store.get_all("alice")) == ["I like jazz", "I live in Porto"]
    assert store.get(porto.id).importance == 0.9
    assert [h.memory.id for h in store.search("where do I live", user_id="alice", limit=1)] == [porto.id]


def test_users_listing(store: Memory) -> None:
    store.add("a fact", user_id="alice", infer=False)
    store.add("b fact", user_id="bob", infer=False)
    store.add("c fact", user_id="bob", infer=False)
    users = {u["user_id"]: u for u in store.users()}
    assert users["alice"]["memories"] == 1 and users["bob"]["memories"] == 2


def test_config_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMSTORE_TOKEN_BUDGET", "500")
    monkeypatch.setenv("MEMSTORE_AUTO_ACCEPT_RULES", "false")
    cfg = MemoryConfig()
    assert cfg.token_budget == 500 and cfg.auto_accept_rules is False
    assert MemoryConfig(token_budget=300).token_budget == 300
    assert MemoryConfig().resolved_home() == (tmp_path / "home").resolve()
    from memstore import ConfigError

    monkeypatch.setenv("MEMSTORE_TOKEN_BUDGET", "lots")
    with pytest.raises(ConfigError):
        MemoryConfig()


def test_import_memstore_is_light() -> None:
    code = ("import sys, memstore; heavy = [m for m in ('torch', 'sentence_transformers', 'chromadb', 'litellm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_forget_also_drops_the_users_turns_waiting_in_the_spool(tmp_path: Path) -> None:
    """A turn written while the database was locked waits in a spool file; forgetting its user deletes it."""
    import sqlite3

    from memstore.storage.db import short_waits
    from memstore.storage.embed import HashEmbedder

    mem = Memory(config=MemoryConfig(home=tmp_path / "spool"), embedder=HashEmbedder())
    mem.add("I like tea", user_id="alice", infer=False)
    lock = sqlite3.connect(tmp_path / "spool" / "memstore.db", timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with short_waits(0.05):
            for user in ("alice", "bob"):
                mem.outbox.record(user, "default", [{"role": "user", "content": f"I am {user}"}], "ok", spool=True)
    finally:
        lock.rollback()
        lock.close()
    assert len(mem.outbox.spooled()) == 2
    assert mem.forget("alice")["turns"] == 1
    (left,) = mem.outbox.spooled()
    assert "bob" in left.read_text()
