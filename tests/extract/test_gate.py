"""The extraction gate: which turns are worth an extraction call."""

from __future__ import annotations

import pytest

from memstore.extract.gate import clean_user_text, gate_reason, message_text, needs_extraction, split_sentences


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I'm a nurse at the city hospital.", "self-disclosure"),
        ("My daughter Emma was born in 2021.", "self-disclosure"),
        ("We moved to Lisbon last spring.", "self-disclosure"),
        ("I went to a support group yesterday and it was so powerful.", "self-disclosure"),
        ("I love hiking in the mountains.", "preference"),
        ("I can't stand cilantro.", "preference"),
        ("I'm allergic to peanuts, so keep that in mind.", "preference"),
        ("My favorite band is Radiohead.", "preference"),
        ("Never use capital letters.", "instruction"),
        ("From now on, reply in French.", "instruction"),
        ("Please always answer in bullet points.", "instruction"),
        ("Don't use emojis in your replies.", "instruction"),
        ("Call me Sam.", "instruction"),
        ("Remember that my wife's name is Ann.", "remember"),
        ("Please forget that I like sushi.", "forget"),
        ("You can use capital letters again.", "forget"),
    ],
)
def test_gate_opens_for_durable_user_statements(text: str, reason: str) -> None:
    assert gate_reason(user(text)) == reason
    assert needs_extraction(user(text))


@pytest.mark.parametrize(
    "text",
    [
        "what is 2+2?",
        "write a poem about cats",
        "explain quicksort",
        "Can you tell me more about the Krasnodar Oil Refinery?",
        "Please simplify this text: In this work, we explored how I and my colleagues build prompts.",
        "Summarize this: I love my job and I live in Paris with my wife.",
        "I want you to write a summary of this article.",
        "I have a question about programming a QScrollArea in Python.",
        "Hey! How are you?",
        "Thanks!",
        "I'm so happy for you!",
        "If I were rich, I would buy a boat.",
        "Bob loves sushi and lives in Berlin.",
        'He told me "I love sushi" yesterday.',
        "> I am a vegetarian\n\nis this sentence correct?",
        "Please write a poem about the sea.",
    ],
)
def test_gate_stays_closed_for_tasks_questions_and_small_talk(text: str) -> None:
    assert gate_reason(user(text)) == ""
    assert not needs_extraction(user(text))


def test_pasted_code_and_stack_traces_do_not_open_the_gate() -> None:
    code = "```python\n# I love this function, my favorite\ndef f(x):\n    return x + 1\n```\nwhy does it fail?"
    trace = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\n'
        "    main()\n"
        "NameError: name 'main' is not defined"
    )
    unfenced = "def fibonacci(number):\n    memo = {0: 0, 1: 1}\n    return memo[number]\n\nCONVERT THIS TO GOLANG"
    for text in (code, trace, unfenced):
        assert not needs_extraction(user(text)), text


def test_disclosure_next_to_pasted_code_still_opens_the_gate() -> None:
    text = "I'm a data engineer at a bank.\n```sql\nSELECT * FROM users;\n```\nWhat does this query do?"
    assert gate_reason(user(text)) == "self-disclosure"


def test_assistant_and_system_messages_never_open_the_gate() -> None:
    messages = [
        {"role": "system", "content": "I am a helpful assistant. Always answer in French."},
        {"role": "user", "content": "What is the capital of Peru?"},
        {"role": "assistant", "content": "I love this question! My favorite city is Lima."},
    ]
    assert not needs_extraction(messages)
    assert needs_extraction([*messages, {"role": "user", "content": "I'm moving to Lima next month."}])


def test_content_parts_are_read() -> None:
    parts = [{"type": "text", "text": "I have a peanut allergy."}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert message_text({"role": "user", "content": parts}) == "I have a peanut allergy."
    assert needs_extraction([{"role": "user", "content": parts}])
    assert not needs_extraction([{"role": "user", "content": None}])


def test_a_message_that_is_one_quoted_statement_is_the_users_own() -> None:
    assert gate_reason(user('"I dislike floral patterns."')) == "preference"


def test_cleaning_and_sentence_splitting() -> None:
    cleaned = clean_user_text("I'm vegan. Translate this: I love steak.\nAnd more pasted text.")
    assert cleaned == "I'm vegan. Translate this"
    assert split_sentences("I'm Dr. Smith. I live in Oslo! Do you?") == ["I'm Dr. Smith.", "I live in Oslo!", "Do you?"]


@pytest.mark.parametrize("text", ["Big news: I moved to Lisbon!", "Update: my wife is pregnant!"])
def test_news_after_a_short_lead_in_opens_the_gate(text: str) -> None:
    assert needs_extraction([{"role": "user", "content": text}])


@pytest.mark.parametrize("text", ["Translate this: I love my cat", "Summarize: I am the CEO of Acme and we grew"])
def test_material_after_a_task_lead_in_does_not(text: str) -> None:
    assert not needs_extraction([{"role": "user", "content": text}])
