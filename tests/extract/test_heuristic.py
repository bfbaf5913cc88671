"""The offline (rules-based) extractor, its date resolution, and the extraction scoring arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from memstore.eval.extraction import (
    locomo_observation_prf,
    parse_locomo_datetime,
    prefeval_gate_savings,
    score_turns,
)
from memstore.extract.heuristic import extract, resolve_date, third_person
from memstore.extract.models import Candidate

NOW = datetime(2024, 6, 15, 12, 30, tzinfo=UTC)  # a Saturday


def run(text: str, now: datetime | None = NOW) -> list[Candidate]:
    return extract([{"role": "user", "content": text}], now=now)


def one(text: str) -> Candidate:
    found = run(text)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------------------------------
# what is kept, and how it is phrased


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("I'm vegetarian.", "Is vegetarian", None),
        ("I work as a nurse at the city hospital.", "Works as a nurse at the city hospital", "fact"),
        ("I have two cats named Luna and Milo.", "Has two cats named Luna and Milo", "fact"),
        ("My sister lives in Toronto.", "Sister lives in Toronto", "fact"),
        ("I love hiking.", "Loves hiking", "preference"),
        ("I can't stand cilantro.", "Cannot stand cilantro", "preference"),
        ("I prefer aisle seats.", "Prefers aisle seats", "preference"),
        ("I usually study at night.", "Usually studies at night", "fact"),
        ("I adopted a dog two weeks ago.", "Adopted a dog two weeks ago", "event"),
    ],
)
def test_first_person_statements_become_third_person_candidates(text: str, expected: str, kind: str | None) -> None:
    c = one(text)
    assert c.text == expected
    assert c.action == "add"
    assert not c.explicit
    assert 0.0 < c.confidence <= 1.0
    if kind:
        assert c.kind == kind


def test_event_with_absolute_year() -> None:
    c = one("My daughter Emma was born in 2021.")
    assert c.text == "Daughter Emma was born in 2021"
    assert c.kind == "event"
    assert c.valid_from is not None and c.valid_from.date().isoformat() == "2021-01-01"


def test_instructions_are_imperative_rules() -> None:
    c = one("Please never use capital letters.")
    assert (c.text, c.kind, c.action) == ("Never use capital letters", "instruction", "add")
    assert one("From now on, reply in French.").text == "Reply in French"
    assert one("I want you to always respond in Spanish.").text == "Always respond in Spanish"
    assert one("Call me Sam.").text == "Call the user Sam"
    assert run("Please write a poem about the sea.") == []  # a one-off task is not a standing rule


def test_plain_negation_stays_an_added_fact() -> None:
    c = one("I don't eat meat.")
    assert c.action == "add"
    assert c.text == "Does not eat meat"
    assert c.kind == "fact"


@pytest.mark.parametrize(
    ("text", "retracted"),
    [
        ("I no longer live in Berlin.", "Lives in Berlin"),
        ("I don't live in Berlin anymore.", "Lives in Berlin"),
        ("I'm not vegetarian anymore.", "Is vegetarian"),
        ("Forget that I like sushi.", "Likes sushi"),
        ("Please forget that my wife's name is Ann.", "Wife's name is Ann"),
    ],
)
def test_retractions_invalidate(text: str, retracted: str) -> None:
    c = one(text)
    assert c.action == "invalidate"
    assert c.text == retracted


def test_retracting_a_standing_instruction() -> None:
    c = one("You can use capital letters again.")
    assert (c.kind, c.action) == ("instruction", "invalidate")
    assert "capital letters" in c.text


def test_remember_is_explicit_and_confident() -> None:
    c = one("Remember that I'm allergic to peanuts.")
    assert c.explicit
    assert c.confidence >= 0.9
    assert c.text == "Is allergic to peanuts"
    assert one("Please remember: my wife's name is Ann.").text == "Wife's name is Ann"
    assert run("Don't forget to take breaks!") == []  # advice, not a memory command
    assert run("Can you remember what I said?") == []


@pytest.mark.parametrize(
    "text",
    [
        "What is 2+2?",
        "Where do I live?",
        "Do you like sushi?",
        "Write a poem about cats.",
        "Explain quicksort.",
        "Hey! How are you?",
        "Thanks, that helps!",
        "I'm so happy for you!",
        "I hope you have a great day!",
        "Me too!",
        "If I were rich, I would buy a boat.",
        "Bob loves sushi.",
        "She moved to Paris last year.",
        "You are so talented.",
        'He said "I love sushi" yesterday.',
        "> I am a vegetarian\nis this sentence correct?",
        "```python\n# I love this code\nmy_var = 1\n```",
        "I want you to write a summary of this article.",
        "Summarize this text: I love my job and I live in Paris with my wife.",
    ],
)
def test_nothing_is_extracted_from_questions_tasks_small_talk_or_other_peoples_words(text: str) -> None:
    assert run(text) == []


def test_quoted_titles_survive_in_the_candidate_text() -> None:
    c = one('My favorite movie is "The Matrix".')
    assert c.text == 'Favorite movie is "The Matrix"'
    assert c.kind == "preference"


def test_sentences_and_clauses_are_split_and_sources_indexed() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "I am a bot that loves rules."},
        {"role": "user", "content": "Hi! I really enjoy cooking Italian food, but I hate washing dishes."},
        {"role": "assistant", "content": "I love that! My favorite dish is lasagna."},
        {"role": "user", "content": [{"type": "text", "text": "Lost my job as a banker yesterday."}]},
    ]
    found = extract(messages, now=NOW)
    assert [(c.text, c.source_index) for c in found] == [
        ("Really enjoys cooking Italian food", 1),
        ("Hates washing dishes", 1),
        ("Lost their job as a banker yesterday", 3),
    ]
    assert found[2].kind == "event"
    assert found[2].valid_from == datetime(2024, 6, 14, tzinfo=UTC)


def test_leading_time_phrase_is_kept_and_resolved() -> None:
    c = one("Last week, I started a pottery class.")
    assert c.text == "Last week, started a pottery class"
    assert c.valid_from == datetime(2024, 6, 3, tzinfo=UTC)  # the Monday of last week


def test_a_statement_about_it_stays_with_what_it_refers_to() -> None:
    # "It made me ..." alone would be stored as "It made them ...": joined to the statement before it
    assert [c.text for c in run("I loved \"Becoming Nicole\" by Amy Ellis Nutt. It made me feel connected and "
                                "gave me hope.")] == [
        'Loved "Becoming Nicole" by Amy Ellis Nutt; it made them feel connected and gave them hope']
    assert [c.text for c in run("I struggled with my mental health last year. It made me realize how much "
                                "support matters. I also adopted a cat.")] == [
        "Struggled with their mental health last year; it made them realize how much support matters",
        "Also adopted a cat"]
    # "this necklace" names its subject; with nothing before it in the message, "it" is left as it is
    assert [c.text for c in run("This necklace is super special to me. My grandma gave it to me.")] == [
        "This necklace is super special to them", "Grandma gave it to them"]
    assert [c.text for c in run("It really helps me relax.")] == ["It really helps them relax"]


def test_duplicates_are_dropped() -> None:
    assert len(run("I love hiking. I love hiking!")) == 1


def test_default_now_still_resolves_absolute_dates() -> None:
    found = run("I was born in 1990 in Lagos.", now=None)
    assert found[0].valid_from is not None and found[0].valid_from.year == 1990


# --------------------------------------------------------------------------------------------------
# pieces


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("I love my dog", "Loves their dog"),
        ("I'm a teacher", "Is a teacher"),
        ("I've been to Rome twice", "Has been to Rome twice"),
        ("I really rely on my friends", "Really relies on their friends"),
        ("I avoid SUVs and prefer compact cars", "Avoids SUVs and prefers compact cars"),
        ("We go camping every summer", "They go camping every summer"),
        ("My favorite food is sushi", "Favorite food is sushi"),
        ("I went to a concert with my wife", "Went to a concert with their wife"),
    ],
)
def test_third_person(statement: str, expected: str) -> None:
    assert third_person(statement) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I went there yesterday", "2024-06-14"),
        ("the day before yesterday", "2024-06-13"),
        ("I moved last week", "2024-06-03"),
        ("we met last weekend", "2024-06-08"),
        ("I started last month", "2024-05-01"),
        ("I graduated last year", "2023-01-01"),
        ("I quit two years ago", "2022-06-15"),
        ("a couple of weeks ago", "2024-06-01"),
        ("I moved there in May", "2024-05-01"),
        ("I was there in August", "2023-08-01"),
        ("I'm flying there in August", "2024-08-01"),
        ("I left on Friday", "2024-06-14"),
        ("I'm flying next Friday", "2024-06-21"),
        ("we married on 12 June 2019", "2019-06-12"),
        ("my birthday is March 3rd", "2024-03-03"),
        ("I came back in 2019", "2019-01-01"),
    ],
)
def test_resolve_date(text: str, expected: str) -> None:
    found = resolve_date(text, NOW)
    assert found is not None and found.date().isoformat() == expected
    assert found.tzinfo is UTC


def test_resolve_date_without_a_date() -> None:
    assert resolve_date("I like tea", NOW) is None
    assert resolve_date("I may go", NOW) is None  # "may" the verb is not May the month


# --------------------------------------------------------------------------------------------------
# scoring arithmetic (synthetic data; does not need the real benchmarks)


def test_score_turns_arithmetic() -> None:
    result = score_turns(predicted={"a", "b", "c", "zz"}, gold={"a", "b", "d"}, universe={"a", "b", "c", "d", "e"})
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 1, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert score_turns(set(), set(), {"a"})["f1"] == 0.0


def test_parse_locomo_datetime() -> None:
    assert parse_locomo_datetime("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56)
    assert parse_locomo_datetime("12:05 am on 1 January, 2024") == datetime(2024, 1, 1, 0, 5)
    assert parse_locomo_datetime("sometime") is None


def _turn(dia_id: str, text: str, speaker: str = "Ann") -> dict[str, str]:
    return {"speaker": speaker, "dia_id": dia_id, "text": text}


def test_locomo_observation_prf_on_a_tiny_conversation(tmp_path: Path) -> None:
    conversation = {
        "speaker_a": "Ann",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            _turn("D1:1", "I adopted a dog named Rex last week."),  # gold, predicted -> TP
            _turn("D1:2", "Wow, what kind of dog is he?", "Ben"),  # neither -> TN
            _turn("D1:3", "I love hiking in the Alps."),  # gold, predicted -> TP
        ],
        "session_2_date_time": "10:00 am on 9 May, 2023",
        "session_2": [
            _turn("D2:1", "I live in Denver with my two kids.", "Ben"),  # predicted, not cited -> FP
            _turn("D2:2", "That sounds awesome!"),  # cited, not predicted -> FN
            _turn("D2:3", "Thanks!", "Ben"),  # neither -> TN
        ],
    }
    observation = {
        "session_1_observation": {"Ann": [["Ann adopted a dog named Rex.", "D1:1"], ["Ann likes hikes.", "D1:3"]]},
        "session_2_observation": {"Ann": [["Ann is enthusiastic.", ["D2:2"]]]},
    }
    second = {
        "sample_id": "c2",
        "conversation": {"session_1": [_turn("D1:1", "I'm a pilot.")]},
        "observation": {"session_1_observation": {"Ann": [["Ann is a pilot.", "D1:1"]]}},
    }
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([{"sample_id": "c1", "conversation": conversation, "observation": observation}, second]))

    result = locomo_observation_prf(path)

    assert (result["conversations"], result["turns"], result["fact_bearing_turns"]) == (2, 7, 4)
    ext = result["extractor"]
    assert (ext["tp"], ext["fp"], ext["fn"], ext["tn"]) == (3, 1, 1, 2)
    assert ext["precision"] == 0.75 and ext["recall"] == 0.75 and ext["f1"] == 0.75
    assert result["gate"]["tp"] == 3 and result["gate"]["fp"] == 1
    assert result["baseline_every_turn"]["precision"] == pytest.approx(4 / 7, abs=1e-4)
    first = result["per_conversation"][0]
    assert first["sample_id"] == "c1"
    assert (first["extractor"]["precision"], first["extractor"]["recall"]) == (pytest.approx(2 / 3, abs=1e-4),) * 2
    assert result["per_conversation"][1]["extractor"]["f1"] == 1.0
    json.dumps(result)  # plain data


def test_prefeval_gate_savings_on_a_tiny_directory(tmp_path: Path) -> None:
    chats = [
        {
            "conversation_id": "x",
            "conversation": [
                {"role": "user", "content": "what is the fastest car in the world"},
                {"role": "assistant", "content": "I love cars! My favorite is..."},
                {"role": "user", "content": "write 10 tests for it"},
            ],
        },
        {
            "conversation_id": "y",
            "conversation": [
                {"role": "user", "content": "Please simplify this text: we propose a method."},
                {"role": "user", "content": "I'm a nurse and I work nights."},
            ],
        },
    ]
    (tmp_path / "filtered_inter_turns.json").write_text(json.dumps(chats))
    (tmp_path / "explicit_preference").mkdir()
    items = [
        {"preference": "I don't enjoy games with pixel art graphics.", "question": "q", "explanation": "e"},
        {"preference": "I have a severe peanut allergy.", "question": "q", "explanation": "e"},
    ]
    (tmp_path / "explicit_preference" / "games.json").write_text(json.dumps(items))

    result = prefeval_gate_savings(tmp_path)

    assert (result["distractor_turns"], result["gate_skipped"], result["skip_rate"]) == (4, 3, 0.75)
    assert (result["preference_statements"], result["gate_passed"], result["pass_rate"]) == (2, 2, 1.0)
    assert result["extracted_rate"] == 1.0
    assert result["per_topic"]["games"]["gate_pass_rate"] == 1.0
