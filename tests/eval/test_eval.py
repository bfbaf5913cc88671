"""The LoCoMo and PrefEval harnesses: scoring arithmetic on tiny synthetic data made here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memstore.cli.eval import bench_app, eval_app
from memstore.eval import locomo, prefeval
from memstore.recall.query import date_match, named_people, query_dates, strip_names
from memstore.storage.embed import HashEmbedder

# ---- LoCoMo ---------------------------------------------------------------------------------------


def _locomo_sample() -> dict[str, Any]:
    return {
        "sample_id": "conv-t",
        "conversation": {
            "speaker_a": "Alice",
            "speaker_b": "Bob",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Alice", "dia_id": "D1:1", "text": "Hi Bob, how are things?"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Great! I adopted a parrot called Kiwi yesterday."},
                {"speaker": "Alice", "dia_id": "D1:3", "text": "I started learning the cello last month."},
                {"speaker": "Bob", "dia_id": "D1:4", "text": "Nice, music is fun.",
                 "blip_caption": "a photo of a cello"},
            ],
            "session_2_date_time": "10:00 am on 2 June, 2023",
            "session_2": [
                {"speaker": "Alice", "dia_id": "D2:1", "text": "My cello teacher Margarethe is strict."},
                {"speaker": "Bob", "dia_id": "D2:2", "text": "Kiwi learned to whistle a tune!"},
                {"speaker": "Alice", "dia_id": "D2:3", "text": "I bought a telescope for stargazing."},
            ],
        },
        "qa": [
            # single-hop: one evidence turn, a unique word ("telescope")
            {"question": "What did Alice buy for stargazing with a telescope?", "answer": "a telescope",
             "evidence": ["D2:3"], "category": 4},
            # single-hop with two evidence turns, only one carries the query's words
            {"question": "What is Bob's parrot called, the one he adopted?", "answer": "Kiwi",
             "evidence": ["D1:2", "D2:2"], "category": 4},
            # temporal, written the way LoCoMo sometimes writes evidence ("D:2:1", "a; b")
            {"question": "Who is Alice's strict teacher Margarethe?", "answer": "cello teacher",
             "evidence": ["D:2:1"], "category": 2},
            # evidence that names no turn: dropped, question skipped
            {"question": "Where does Bob live?", "answer": "?", "evidence": ["D9:9"], "category": 1},
            # adversarial: not scored
            {"question": "What did Bob buy?", "answer": "n/a", "evidence": ["D2:3"], "category": 5},
        ],
    }


@pytest.fixture
def locomo_file(tmp_path: Path) -> Path:
    p = tmp_path / "locomo_tiny.json"
    p.write_text(json.dumps([_locomo_sample()]), encoding="utf-8")
    return p


def test_recall_at_k_arithmetic() -> None:
    ranked = [["D1:1"], ["D1:2", "D1:3"], [], ["D2:1"]]
    assert locomo.recall_at_k(ranked, ["D1:3"], 1) == 0.0
    assert locomo.recall_at_k(ranked, ["D1:3"], 2) == 1.0
    assert locomo.recall_at_k(ranked, ["D1:3", "D2:1", "D3:1"], 4) == pytest.approx(2 / 3)
    assert locomo.recall_at_k(ranked, ["D2:1", "D1:1"], 3) == 0.5
    assert locomo.recall_at_k([], ["D1:1"], 10) == 0.0
    assert locomo.recall_at_k(ranked, [], 10) == 0.0


def test_aggregate_per_category_exact() -> None:
    rows = [
        {"category": 4, "recall": {5: 1.0, 10: 1.0}, "tokens": {5: 100, 10: 200}, "latency_s": 0.010},
        {"category": 4, "recall": {5: 0.5, 10: 1.0}, "tokens": {5: 120, 10: 220}, "latency_s": 0.020},
        {"category": 1, "recall": {5: 0.0, 10: 1 / 3}, "tokens": {5: 80, 10: 160}, "latency_s": 0.030},
        {"category": 2, "recall": {5: 1.0, 10: 1.0}, "tokens": {5: 100, 10: 180}, "latency_s": 0.040},
    ]
    agg = locomo.aggregate(rows, [5, 10])
    assert agg["overall"] == {"n": 4, "recall@5": 62.5, "recall@10": round(100 * (3 + 1 / 3) / 4, 2)}
    cats = agg["per_category"]
    assert cats["4 single-hop"] == {"n": 2, "recall@5": 75.0, "recall@10": 100.0}
    assert cats["1 multi-hop"] == {"n": 1, "recall@5": 0.0, "recall@10": 33.33}
    assert cats["2 temporal"] == {"n": 1, "recall@5": 100.0, "recall@10": 100.0}
    assert "3 open-domain" not in cats
    assert agg["tokens_per_question"] == {"@5": 100.0, "@10": 190.0}
    assert agg["search_latency"]["p50_ms"] == pytest.approx(25.0)
    assert agg["search_latency"]["p95_ms"] == pytest.approx(38.5)


def test_parse_conversation_normalises_evidence() -> None:
    conv = locomo.parse_conversation(_locomo_sample())
    assert conv.speakers == ["Alice", "Bob"]
    assert [t.dia_id for t in conv.turns] == ["D1:1", "D1:2", "D1:3", "D1:4", "D2:1", "D2:2", "D2:3"]
    assert conv.turns[0].date is not None and conv.turns[0].date.isoformat() == "2023-05-08T13:56:00+00:00"
    assert [q.evidence for q in conv.questions] == [["D2:3"], ["D1:2", "D2:2"], ["D2:1"]]
    assert conv.skipped_questions == 1 and conv.dropped_evidence == ["D9:9"]
    assert locomo.parse_evidence(["D8:6; D9:17", "D", "D8:6"], {"D8:6", "D9:17"}) == (["D8:6", "D9:17"], ["D"])
    assert locomo.turn_text(conv.turns[3]) == "Bob (8 May 2023): Nice, music is fun. [shares a photo of a cello]"
    assert locomo.turn_text(conv.turns[3], keyed=False) == "Nice, music is fun. [shares a photo of a cello]"


@pytest.mark.parametrize("retriever", ["library", "rrf"])
def test_run_locomo_raw_scores_exactly(locomo_file: Path, tmp_path: Path, retriever: str) -> None:
    result = locomo.run_locomo(locomo_file, mode="raw", ks=[1, 50], retrievers=[retriever],
                               store=tmp_path / "store", show_progress=False, embedder=HashEmbedder())
    assert result["questions"] == 3 and result["turns"] == 7 and result["memories"] == 7
    assert result["skipped_questions"] == 1 and result["dropped_evidence_ids"] == ["D9:9"]
    res = result["retrievers"][retriever]
    rows = res["questions"]
    # per question: recall@1 follows from the top memory's source; @50 sees every turn
    assert [r["recall"][1] for r in rows] == [1.0, 0.5, 1.0]
    assert [r["recall"][50] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["top_sources"][0] for r in rows] == ["D2:3", "D1:2", "D2:1"]
    agg = res["all"]
    assert agg["overall"]["recall@1"] == round(100 * 2.5 / 3, 2)
    assert agg["per_category"]["4 single-hop"]["recall@1"] == 75.0
    assert agg["per_category"]["2 temporal"]["recall@1"] == 100.0
    assert agg["tokens_per_question"]["@1"] > 0
    assert "tune" not in res  # one conversation: no split
    if retriever == "library":  # what the model sees: the block Memory.context builds, within its budget
        assert 0 < agg["in_block"]["recall"] <= 100 and 0 < agg["in_block"]["tokens"] <= 800
    else:
        assert "in_block" not in agg


def test_run_locomo_extract_maps_sources_to_turns(locomo_file: Path, tmp_path: Path) -> None:
    from memstore.config import MemoryConfig

    result = locomo.run_locomo(locomo_file, mode="extract", ks=[50], retrievers=["library"],
                               config=MemoryConfig(extractor="heuristic"), store=tmp_path / "store",
                               show_progress=False, embedder=HashEmbedder())
    assert result["extractor"] == "heuristic" and result["memories"] > 0
    rows = result["retrievers"]["library"]["questions"]
    every = {s for r in rows for s in r["top_sources"]}
    assert every and every <= {"D1:1", "D1:2", "D1:3", "D1:4", "D2:1", "D2:2", "D2:3"}
    assert rows[0]["recall"][50] == 1.0  # "I bought a telescope ..." became a memory of turn D2:3
    # every turn is also an episode; both pools are reported, each alone too, from the same store
    assert result["episodes"] == result["turns"] == 7 and result["episodes_searched"]
    assert set(result["retrievers"]) == {"library", "library/episodes", "library/facts"}
    episodes_only = result["retrievers"]["library/episodes"]["all"]["overall"]
    assert episodes_only["recall@50"] == 100.0  # seven turns, seven episodes: every turn is found
    assert "in_block" in result["retrievers"]["library"]["all"]


def test_run_locomo_replays_the_observations_as_the_extractor(tmp_path: Path) -> None:
    """``--extractor observations``: the dataset's LLM-written observations stored, through the worker (gate,
    batches, reconciliation), from the turns they cite; the turns' episodes beside them."""
    sample = _locomo_sample()
    sample["observation"] = {
        "session_1_observation": {"Bob": [["Bob adopted a parrot named Kiwi.", "D1:2"]],
                                  "Alice": [["Alice is learning the cello.", "D1:3"]]},
        "session_2_observation": {"Alice": [["Alice's cello teacher Margarethe is strict.", "D2:1"],
                                            ["Alice bought a telescope for stargazing.", ["D2:3"]],
                                            ["Alice took up the cello and stargazing this spring.", "D1:3; D2:3"]],
                                  "Bob": [["Kiwi, Bob's parrot, learned to whistle.", "D2:2"]]},
    }
    path = tmp_path / "observed.json"
    path.write_text(json.dumps([sample]), encoding="utf-8")
    conv = locomo.load_locomo(path)[0]
    assert conv.observations["D2:3"] == ["Alice bought a telescope for stargazing.",
                                         "Alice took up the cello and stargazing this spring."]
    result = locomo.run_locomo(path, mode="extract", ks=[50], store=tmp_path / "store", show_progress=False,
                               embedder=HashEmbedder(), extractor="observations")
    assert result["extractor"] == "observations" and result["memories"] == 5 and result["episodes"] == 7
    from memstore.memory import Memory

    mem = Memory(path=tmp_path / "store", embedder=HashEmbedder())
    turns = {t.id: t.meta["dia_id"] for t in mem.outbox.list("conv-t", limit=None)}
    facts = {m.text: sorted(turns[t] for t in m.source_turn_ids) for m in mem.get_all("conv-t", "locomo")}
    assert facts == {"Bob adopted a parrot named Kiwi.": ["D1:2"], "Alice is learning the cello.": ["D1:3"],
                     "Alice's cello teacher Margarethe is strict.": ["D2:1"],
                     "Alice bought a telescope for stargazing.": ["D2:3"],
                     "Alice took up the cello and stargazing this spring.": ["D1:3", "D2:3"]}  # two turns
    # "Kiwi learned to whistle a tune!" is closed by the gate: an extractor behind it never sees the turn
    facts_only = result["retrievers"]["library/facts"]["all"]["overall"]
    assert facts_only["recall@50"] == pytest.approx(100 * (1 + 0.5 + 1) / 3, abs=0.01)
    with pytest.raises(ValueError, match="extractor must be one of"):
        locomo.run_locomo(path, mode="extract", extractor="gpt", show_progress=False)


def test_query_analysis() -> None:
    assert query_dates("When did Melanie go camping in June?") == [(None, 6, None)]
    assert query_dates("What did Gina find on 1 February, 2023?") == [(2023, 2, 1)]
    assert query_dates("What painting did she show on October 13, 2023?") == [(2023, 10, 13)]
    assert query_dates("How many times in 2023?") == [(2023, None, None)]
    assert query_dates("Which activities may she like?") == []
    from datetime import datetime

    assert date_match([(None, 6, None)], datetime(2023, 6, 20)) == 1.0
    assert date_match([(None, 6, None)], datetime(2023, 7, 2)) == 0.5
    assert date_match([(2022, 6, None)], datetime(2023, 6, 2)) == 0.0
    assert named_people("What did Caroline research?", ["Caroline", "Melanie"]) == ["Caroline"]
    assert named_people("What did Ana say?", ["Ana Lima"]) == ["Ana Lima"]  # a first name names the person
    assert strip_names("What is Caroline's identity?", ["Caroline"]) == "What is identity?"


def test_follow_ups_search_with_the_message_they_lean_on(tmp_path: Path) -> None:
    from memstore.eval.followups import run_followups
    from memstore.recall.query import conversation_query, follow_up

    assert follow_up("and tomorrow?") and follow_up("What about the weather there?")
    assert not follow_up("Which restaurants should I try in Lisbon for dinner tonight?")
    assert conversation_query(["I'm planning a trip to Lisbon", "what about the weather there?"]) == \
        "I'm planning a trip to Lisbon\nwhat about the weather there?"
    assert conversation_query(["I'm planning a trip to Lisbon", "Recommend three restaurants in Porto for a "
                               "family dinner"]) == "Recommend three restaurants in Porto for a family dinner"
    result = run_followups(distractors=20, store=tmp_path / "f", embedder=HashEmbedder())
    ib = result["in_block"]
    assert result["cases"] >= 20 and 0 <= ib["latest_message_only"] <= ib["conversation_query"] <= 100


def test_eval_locomo_cli(locomo_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(eval_app, ["locomo", "--data", str(locomo_file), "--k", "1", "5", "--no-progress",
                                        "--out", str(out), "-r", "library", "--per-question"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["ks"] == [1, 5]
    rows = data["retrievers"]["library"]["questions"]
    assert len(rows) == 3 and all("question" not in r for r in rows)  # no dataset text in result files
    assert "LoCoMo evidence recall" in res.output


# ---- PrefEval ---------------------------------------------------------------------------------------

def _prefeval_dir(tmp_path: Path) -> Path:
    root = tmp_path / "prefeval"
    (root / "explicit_preference").mkdir(parents=True)
    (root / "explicit_preference" / "food.json").write_text(json.dumps([
        {"preference": "I'm strictly vegetarian and never eat meat or fish.",
         "question": "Can you suggest a dinner recipe for tonight?", "explanation": "x"},
        {"preference": "I really dislike spicy food.", "question": "What should I order at a Thai place?"},
    ]))
    (root / "explicit_preference" / "travel.json").write_text(json.dumps([
        {"preference": "I hate long flights and prefer trains.", "question": "How should I get to Vienna?"},
    ]))
    (root / "filtered_inter_turns.json").write_text(json.dumps([
        {"conversation_id": "a", "conversation": [
            {"role": "user", "content": "How do I reverse a list in Python?"},
            {"role": "assistant", "content": "Use reversed() or slicing."},
            {"role": "user", "content": "What is the capital of Peru?"},
            {"role": "assistant", "content": "Lima."},
        ]},
        {"conversation_id": "b", "conversation": [
            {"role": "user", "content": "Explain TCP handshakes briefly."},
            {"role": "assistant", "content": "SYN, SYN-ACK, ACK."},
        ]},
    ]))
    return root


def test_prefeval_loading_and_distractors(tmp_path: Path) -> None:
    root = _prefeval_dir(tmp_path)
    items = prefeval.load_items(root)
    assert [(i.topic, i.index) for i in items] == [("food", 0), ("travel", 0), ("food", 1)]  # round-robin
    assert [(i.topic, i.index) for i in prefeval.load_items(root, limit=2)] == [("food", 0), ("travel", 0)]
    ex = prefeval.load_exchanges(root)
    assert [u for u, _ in ex] == ["How do I reverse a list in Python?", "What is the capital of Peru?",
                                  "Explain TCP handshakes briefly."]
    picked = prefeval.distractors_for(ex, 5, item_no=1)  # starts at 37 % 3 == 1, wraps around
    assert [u for u, _ in picked] == [ex[1][0], ex[2][0], ex[0][0], ex[1][0], ex[2][0]]
    assert prefeval.distractors_for(ex, 0, 0) == []


def test_prefeval_summary_arithmetic() -> None:
    rows = [{"hit": True, "extracted": True, "tokens": 100}, {"hit": False, "extracted": True, "tokens": 300},
            {"hit": True, "extracted": True, "tokens": 200}, {"hit": False, "extracted": False, "tokens": 0}]
    s = prefeval.summarise(rows)
    assert s["items"] == 4 and s["hits"] == 2 and s["hit_rate"] == 50.0 and s["extracted_rate"] == 75.0
    assert s["tokens_mean"] == 150.0 and s["tokens_max"] == 300 and s["tokens_p95"] == pytest.approx(285.0)


def test_prefeval_hit_requires_the_preference_turn() -> None:
    from memstore.recall.context import Context
    from memstore.records import MemoryHit, MemoryRecord, StyleRule

    def ctx(mems: list[MemoryRecord], rules: list[StyleRule]) -> Context:
        return Context(user_id="u", namespace="n", system_block="", memories=[MemoryHit(memory=m, score=1.0, sources=[])
                       for m in mems], rules=rules, tokens=0, token_budget=800)

    other = MemoryRecord(user_id="u", text="Uses Python", source_turn_ids=["t-other"])
    mine = MemoryRecord(user_id="u", text="Is vegetarian", source_turn_ids=["t-x", "t-pref"])
    rule = StyleRule(user_id="u", text="Never suggest meat", source_turn_ids=["t-pref"])
    assert not prefeval.preference_hit(ctx([other], []), "t-pref")
    assert prefeval.preference_hit(ctx([other, mine], []), "t-pref")
    assert prefeval.preference_hit(ctx([other], [rule]), "t-pref")


def test_run_prefeval_end_to_end(tmp_path: Path) -> None:
    from memstore.config import MemoryConfig

    root = _prefeval_dir(tmp_path)
    result = prefeval.run_prefeval(root, distractors=[2], config=MemoryConfig(extractor="heuristic"),
                                   store=tmp_path / "store", show_progress=False, embedder=HashEmbedder())
    r = result["distractors"]["2"]
    assert r["items"] == 3 and len(r["rows"]) == 3
    assert r["hits"] == sum(1 for row in r["rows"] if row["hit"])
    assert r["hit_rate"] == round(100 * r["hits"] / 3, 2)
    assert all(row["extracted"] for row in r["rows"])  # all three are plain first-person preferences
    assert r["hit_rate"] == 100.0
    assert 0 < r["tokens_max"] <= 800
    assert set(r["per_topic"]) == {"food", "travel"} and r["per_topic"]["food"]["items"] == 2


def test_run_prefeval_implicit_sets_find_the_revealing_conversation(tmp_path: Path) -> None:
    from memstore.config import MemoryConfig

    root = _prefeval_dir(tmp_path)
    (root / "implicit_preference" / "choice-based").mkdir(parents=True)
    (root / "implicit_preference" / "persona-driven").mkdir(parents=True)
    (root / "implicit_preference" / "choice-based" / "travel.json").write_text(json.dumps([{
        "preference": "Prefers trains to flights.", "question": "How should I get to Vienna from Munich?",
        "conversation": {"query": "How can I get from Paris to Lyon?",
                         "assistant_options": "1. Fly from Orly. 2. Take the TGV train.",
                         "user_selection": "The train, option 2: I avoid planes whenever I can.",
                         "assistant_acknowledgment": "Understood, trains it is."}}]))
    (root / "implicit_preference" / "persona-driven" / "travel.json").write_text(json.dumps([{
        "preference": "Prefers trains to flights.", "question": "How should I get to Vienna from Munich?",
        "conversation": {"0": {"user": "I'm a retired teacher planning trips.", "assistant": "Lovely!"},
                         "1": {"user": "Last time I took the night train to Vienna, no planes for me.",
                               "assistant": "Night trains are relaxing."}}}]))
    assert [len(i.conversation or []) for i in prefeval.load_items(root, kind="choice-based")] == [2]
    with pytest.raises(ValueError, match="unknown PrefEval set"):
        prefeval.load_items(root, kind="implied")
    result = prefeval.run_prefeval(root, distractors=[3], config=MemoryConfig(extractor="heuristic"),
                                   store=tmp_path / "store", show_progress=False, embedder=HashEmbedder(),
                                   sets=["choice-based", "persona-driven"])
    assert set(result["sets"]) == {"choice-based", "persona-driven"} and "distractors" not in result
    for kind in ("choice-based", "persona-driven"):
        r = result["sets"][kind]["distractors"]["3"]
        assert r["items"] == 1 and r["hit_rate"] == 100.0  # an excerpt of the conversation is in the block
        assert r["rows"][0]["episodes_in_block"] >= 1 and r["tokens_max"] <= 800


def test_cli_apps_import_cheaply() -> None:
    import subprocess
    import sys

    code = ("import sys, memstore.cli.eval; heavy = [m for m in ('torch', 'chromadb', 'litellm', "
            "'sentence_transformers') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {c.name for c in eval_app.registered_commands} == {"locomo", "prefeval", "extraction", "followups"}
    assert {c.name for c in bench_app.registered_commands} == {"search", "ingest", "overhead", "cli", "server",
                                                              "backends", "embed", "startup", "prefix"}


def test_eval_extraction_cli(locomo_file: Path, tmp_path: Path) -> None:
    """Gate and rules-extractor precision/recall against the observations, gate savings on distractors."""
    sample = _locomo_sample()
    sample["observation"] = {  # Bob's parrot and Alice's cello lessons, telescope and teacher are facts
        "session_1_observation": {"Bob": [["Bob adopted a parrot named Kiwi.", "D1:2"]],
                                  "Alice": [["Alice learns the cello.", "D1:3"]]},
        "session_2_observation": {"Alice": [["Alice's cello teacher is Margarethe.", "D2:1"],
                                            ["Alice bought a telescope.", ["D2:3"]]]},
    }
    locomo_path = tmp_path / "observed.json"
    locomo_path.write_text(json.dumps([sample]), encoding="utf-8")
    pref = tmp_path / "prefeval"
    (pref / "explicit_preference").mkdir(parents=True)
    (pref / "filtered_inter_turns.json").write_text(json.dumps([{"conversation_id": "c", "conversation": [
        {"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "translate 'good morning' into French"},
        {"role": "user", "content": "I moved to Lisbon last month."}]}]))
    (pref / "explicit_preference" / "food.json").write_text(json.dumps([
        {"preference": "I am vegetarian and never eat meat.", "question": "q", "explanation": "e"}]))
    out = tmp_path / "extraction.json"
    res = CliRunner().invoke(eval_app, ["extraction", "--locomo", str(locomo_path), "--prefeval", str(pref),
                                        "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    loc = data["locomo"]
    assert (loc["turns"], loc["fact_bearing_turns"]) == (7, 4)
    base = loc["baseline_every_turn"]
    assert (base["tp"], base["fp"], base["precision"], base["recall"]) == (4, 3, round(4 / 7, 4), 1.0)
    for name in ("gate", "extractor"):
        r = loc[name]
        assert r["tp"] + r["fn"] == 4 and r["tp"] + r["fp"] + r["fn"] + r["tn"] == 7
        assert r["precision"] == round(r["tp"] / (r["tp"] + r["fp"]), 4)
    assert loc["extractor"]["tp"] >= 3  # the three first-person facts of Alice and Bob's parrot
    pe = data["prefeval"]
    assert (pe["distractor_turns"], pe["preference_statements"], pe["gate_passed"]) == (3, 1, 1)
    assert pe["gate_skipped"] == 2 and pe["skip_rate"] == round(2 / 3, 4)  # the self-disclosure goes through
    assert "LLM calls saved" in res.output and "precision" in res.output
    assert "per_conversation" not in loc and data["environment"]["machine"]["cpu_count"]
    bad = CliRunner().invoke(eval_app, ["extraction", "--out", str(out)])
    assert bad.exit_code == 2 and "--locomo" in bad.output


def test_benchmarks_doc_quotes_the_result_files() -> None:
    """docs/benchmarks.md states the headline figures of docs/results/*.json, to one decimal."""
    root = Path(__file__).resolve().parents[2] / "docs"
    doc = (root / "benchmarks.md").read_text(encoding="utf-8")
    keyed = json.loads((root / "results" / "locomo_raw_keyed.json").read_text())
    for name, res in keyed["retrievers"].items():
        for split in ("all", "held_out"):
            for k in (5, 10, 25):
                value = f"{res[split]['overall'][f'recall@{k}']:.1f}"
                assert value in doc, (name, split, k, value)
    library = keyed["retrievers"]["library"]["all"]
    assert f"**{library['in_block']['recall']:.1f}%**" in doc
    for cat, block in library["per_category"].items():
        assert f"| {cat} | {block['n']} | {block['recall@5']:.1f} | {block['recall@10']:.1f} |" in doc, cat
    pe = json.loads((root / "results" / "prefeval_rules.json").read_text())
    for n, r in pe["distractors"].items():
        assert f"| {n} | {r['items']} | **{r['hit_rate']:.1f}%** |" in doc, n
        assert f"| {r['tokens_max']} |" in doc
