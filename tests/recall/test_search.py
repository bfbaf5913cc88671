"""The one retriever (memstore.recall.search) through Memory.search: where memories came from, context views,
neighbours, names, dates, score bounds, and the chat thread a recorded turn belongs to."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from memstore import Memory, MemoryConfig
from memstore.recall.search import PRESETS
from memstore.storage.embed import HashEmbedder


@pytest.fixture
def mem(tmp_path: Path) -> Memory:
    return Memory(config=MemoryConfig(home=tmp_path / "store", extractor="heuristic"), embedder=HashEmbedder())


def chat(mem: Memory, user: str, conversation: str, turns: list[tuple[str, str]],
         start: datetime | None = None) -> list[str]:
    """Stores a conversation as one memory per turn, with its provenance; returns the ids in order."""
    items = [{"text": said, "kind": "event", "conversation": conversation, "position": i, "speaker": who,
              **({"valid_from": start} if start else {})} for i, (who, said) in enumerate(turns)]
    return [op.memory.id for op in mem.store.add_many(user, "default", items, actor="api")]


def test_provenance_is_stored_from_fields_or_metadata(mem: Memory) -> None:
    ids = chat(mem, "alice", "trip", [("Alice", "We should plan the trip"), ("Bob", "Agreed, in spring")])
    assert [(r.conversation, r.position, r.speaker) for r in (mem.get(i) for i in ids)] == \
        [("trip", 0, "Alice"), ("trip", 1, "Bob")]
    mem.add("I adopted a cat", user_id="alice", infer=False,
            metadata={"session": 7, "turn": 3, "speaker": "Alice"})
    rec = next(r for r in mem.get_all("alice") if r.text == "I adopted a cat")
    assert (rec.conversation, rec.position, rec.speaker) == ("7", 3, "Alice")


def test_a_reply_is_found_through_the_question_it_answers(mem: Memory) -> None:
    ids = chat(mem, "u", "s1", [("Ann", "did you visit the volcano museum in iceland"),
                                ("Ben", "yes it was amazing we loved every minute"),
                                ("Ann", "my sister bakes sourdough bread every weekend")])
    query = "volcano museum iceland visit amazing"
    plain = [h.memory.id for h in mem.search(query, "u", settings=PRESETS["score"], limit=3)]
    with_context = mem.search(query, "u", settings=PRESETS["context"], limit=3)
    # the reply shares one word with the query; through its context view it outranks the unrelated turn
    assert plain.index(ids[1]) >= 1
    assert [h.memory.id for h in with_context][:2] == [ids[0], ids[1]]


def test_neighbours_of_a_hit_come_along(mem: Memory) -> None:
    ids = chat(mem, "u", "s1", [("Ann", "what did the vet say"), ("Ben", "the parrot kiwi needs more fruit"),
                                ("Ann", "ok noted"), ("Ben", "unrelated weather chat")])
    hits = mem.search("parrot kiwi fruit", "u", settings=PRESETS["neighbours"], limit=4)
    by_id = {h.memory.id: h for h in hits}
    assert hits[0].memory.id == ids[1]
    assert "neighbour" in by_id[ids[0]].sources and "neighbour" in by_id[ids[2]].sources
    off = mem.search("parrot kiwi fruit", "u", settings=PRESETS["context"], limit=4)
    assert all("neighbour" not in h.sources for h in off)


def test_a_conversation_that_matches_elsewhere_too_lifts_its_other_memories(mem: Memory) -> None:
    garden = chat(mem, "u", "garden", [("Ann", "the tomato seedlings in the greenhouse are sprouting"),
                                       ("Ann", "lunch was pasta"), ("Ann", "the bus was late"),
                                       ("Ann", "a new phone case"), ("Ann", "watering the greenhouse twice a day now")])
    errands = chat(mem, "u", "errands", [("Ann", "bought a greenhouse thermometer at the shop"),
                                         ("Ann", "the bank opens at nine"), ("Ann", "parcel arrived")])
    query = "how are the tomato seedlings in the greenhouse"

    def rank(settings: str) -> list[str]:
        return [h.memory.id for h in mem.search(query, "u", settings=PRESETS[settings], limit=8)]

    alone, together = rank("no_conversation"), rank("hybrid")
    assert alone[0] == together[0] == garden[0]
    # on its own the thermometer matches better; beside the seedlings the watering does
    assert alone.index(errands[0]) < alone.index(garden[4])
    assert together.index(garden[4]) < together.index(errands[0])


def test_a_named_person_brings_their_memories_first(mem: Memory) -> None:
    chat(mem, "u", "s1", [("Caroline", "I researched adoption agencies"),
                          ("Melanie", "I researched pottery classes")])
    hits = mem.search("What did Caroline research?", "u", limit=2)
    assert hits[0].memory.speaker == "Caroline"
    assert mem.search("What did Melanie research?", "u", limit=2)[0].memory.speaker == "Melanie"
    # the people of a user's own life (not speakers): memories that name them come first
    mem.add([{"role": "user", "content": t} for t in ("Rex loves the beach", "Milo loves the beach")],
            user_id="pets", infer=False)

    def gap(settings: object) -> float:
        hits = {h.memory.text: h.score for h in mem.search("Does Rex love the beach?", "pets", settings=settings)}
        return hits["Rex loves the beach"] - hits["Milo loves the beach"]

    assert gap("hybrid") > gap(PRESETS["hybrid"].with_(name_boost=0.0)) > 0


def test_dates_named_in_the_query(mem: Memory) -> None:
    # equally close to either question in words; only the date tells them apart
    chat(mem, "u", "june", [("Ann", "we went camping at the lake")], start=datetime(2023, 6, 10, tzinfo=UTC))
    chat(mem, "u", "sept", [("Ann", "we went camping at the hill")], start=datetime(2023, 9, 3, tzinfo=UTC))
    assert mem.search("Where did we go camping in June?", "u", limit=1)[0].memory.text == \
        "we went camping at the lake"
    assert mem.search("Where did we go camping in September?", "u", limit=1)[0].memory.text == \
        "we went camping at the hill"


def test_scores_are_between_zero_and_one(mem: Memory) -> None:
    mem.add([{"role": "user", "content": t} for t in ("I live in Berlin", "I like tea", "My dog is Rex")],
            user_id="u", infer=False)
    mem.add("Always answer in English", user_id="u", infer=False, pinned=True)
    for preset in ("hybrid", "rrf", "names"):
        hits = mem.search("where do I live in Berlin?", "u", settings=preset)
        assert hits and all(0.0 <= h.score <= 1.0 for h in hits), preset
        assert hits[0].memory.text == "I live in Berlin"


def test_recorded_turns_know_their_chat_and_place(mem: Memory) -> None:
    first = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "I got a puppy!"}]
    t1 = mem.outbox.record("u", "default", first, "Congratulations!")
    later = [*first, {"role": "assistant", "content": "Congratulations!"},
             {"role": "user", "content": "My puppy is called Rex."}]
    t2 = mem.outbox.record("u", "default", later, "Lovely name.")
    other = mem.outbox.record("u", "default", [{"role": "user", "content": "Unrelated question"}], "ok")
    m1, m2, m3 = (mem.outbox.get(t.id).meta for t in (t1, t2, other))
    assert m1["conversation"] == m2["conversation"] != m3["conversation"]
    assert (m1["position"], m2["position"], m3["position"]) == (0, 1, 0)
    # memories extracted from a turn carry where it came from
    from memstore.worker import drain

    drain(mem.extraction)
    rex = [r for r in mem.get_all("u") if "Rex" in r.text]
    assert rex and all(r.conversation == m2["conversation"] and r.position == 1 for r in rex)


def test_an_older_store_gets_provenance_from_its_metadata(tmp_path: Path) -> None:
    home = tmp_path / "old"
    mem = Memory(config=MemoryConfig(home=home), embedder=HashEmbedder())
    mem.add("We met at the lake", user_id="u", infer=False, metadata={"session": 2, "turn": 5, "speaker": "Jo"})
    with mem.engine.begin() as conn:  # what a store written before the provenance columns looks like
        conn.execute(text("DROP INDEX ix_memories_scope_conversation"))
        for col in ("conversation", "position", "speaker"):
            conn.execute(text(f"ALTER TABLE memories DROP COLUMN {col}"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name = '006_provenance'"))
    mem.engine.dispose()
    code = ("from memstore import Memory, MemoryConfig; from memstore.storage.embed import HashEmbedder; "
            f"(r,) = Memory(config=MemoryConfig(home={str(home)!r}), embedder=HashEmbedder()).get_all('u'); "
            "print(r.conversation, r.position, r.speaker)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "5", "Jo"]
