"""Style-rule checkers: recognition from wording, checking replies, validation, hints, language detection."""

from __future__ import annotations

from typing import Any

import pytest

from memstore.instructions.checkers import (
    CHECKER_KINDS,
    Checker,
    CheckResult,
    check,
    detect_language,
    find_emoji,
    format_rule_hint,
    recognize,
    validate_checker,
)


def run(kind: str, text: str, **params: Any) -> CheckResult:
    return check(Checker(kind=kind, params=params), text)  # type: ignore[arg-type]


def passes(kind: str, text: str, **params: Any) -> bool:
    return run(kind, text, **params).passed


# ---- lowercase ---------------------------------------------------------------------------------------------
def test_lowercase_fails_on_capitals_and_names_them() -> None:
    result = run("lowercase", "Hello there, I think so.")
    assert not result.passed
    assert result.detail == "found capital letters: 'Hello', 'I'"


@pytest.mark.parametrize("text", ["i think so.", "sure, i'll do it", "ça va très bien", "", "123 + 4 = 127!"])
def test_lowercase_passes(text: str) -> None:
    assert passes("lowercase", text)


@pytest.mark.parametrize("text", ["yes I can", "i like École", "ok. Δ is delta", "all good\nExcept this"])
def test_lowercase_fails_on_any_uppercase_letter_unicode_aware(text: str) -> None:
    assert not passes("lowercase", text)


def test_lowercase_ignores_fenced_and_inline_code() -> None:
    text = "here it is: `MyClass.Run()`\n```python\nX = Foo()\n```\n~~~\nSELECT 1\n~~~\ndone."
    assert passes("lowercase", text)


def test_lowercase_unclosed_fence_runs_to_the_end() -> None:
    assert passes("lowercase", "try this:\n```\nPrint('Hi')")


# ---- no_trailing_question ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "Here you go. Want more?",
    "Here you go. Want more?  \n\n",
    "Here you go. Want more? 😊",
    "Here you go. Shall I continue?)",
    'Here you go. "Shall I continue?"',
    "Here you go. **Anything else?**",
    "Done.\n\nDoes that help？",
    "Here is the command: `ls`. Want the flags explained?",
])
def test_trailing_question_fails(text: str) -> None:
    result = run("no_trailing_question", text)
    assert not result.passed
    assert result.detail.startswith("reply ends with a question")


@pytest.mark.parametrize("text", [
    "He asked 'why?' and I answered.",
    "Why does this happen? Because the cache is cold.",
    "Let me know if you'd like more details!",
    "Does this work?\n```python\nprint('really?')\n```",
    "Run `echo what?` to see.",
    "Try `ls -la?`",
    "",
    "Best,\nClaude",
])
def test_trailing_question_passes(text: str) -> None:
    assert passes("no_trailing_question", text)


# ---- bullet_list / max_bullets -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "- one\n- two",
    "* one\n+ two\n• three",
    "1. first\n2) second",
    "Here are the steps:\n- one\n- two",
    "**Pros:**\n- fast\n**Cons:**\n- loud",
    "## Options\n- one\n- two",
    "- a long item\n  that continues here\n- b",
    "- a long item\nlazily continued\n- b",
    "- run this:\n```\nmake all\nmore code\n```\n- done",
])
def test_bullet_list_passes(text: str) -> None:
    assert passes("bullet_list", text)


@pytest.mark.parametrize("text", [
    "Just prose.",
    "- one\n- two\n\nHope this helps.",
    "Intro paragraph that is not a label.\n- one",
    "",
    "-not a bullet\n-neither",
])
def test_bullet_list_fails(text: str) -> None:
    assert not passes("bullet_list", text)


def test_bullet_list_detail_quotes_the_stray_line() -> None:
    assert "'Hope this helps.'" in run("bullet_list", "- a\n\nHope this helps.").detail


def test_max_bullets_counts_nested_but_not_code() -> None:
    text = "- a\n- b\n  - c\n```\n- d\n- e\n```"
    assert run("max_bullets", text, n=3).passed
    result = run("max_bullets", text, n=2)
    assert not result.passed
    assert result.detail == "3 bullet points, limit is 2"


def test_max_bullets_zero_bullets_pass() -> None:
    assert passes("max_bullets", "No list here at all.", n=1)


# ---- max_sentences -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "count"), [
    ("One. Two! Three? Four.", 4),
    ("Dr. Smith arrived at 3.5 p.m. today, e.g. on time. He left.", 2),
    ("Use a tool, i.e. a hammer. Mr. Jones agrees vs. Mrs. Lee.", 2),
    ("J. R. R. Tolkien wrote it. The U.S. edition came later.", 2),
    ("Apples, pears, etc. are fruit.", 1),
    ("Apples, pears, etc. The end.", 2),
    ("Wait... what happened here.", 1),
    ("Well... Then it broke.", 2),
    ("No trailing punctuation", 1),
    ("Version 2.0 shipped. It costs $3.50 now.", 2),
    ("Intro:\n- first point\n- second point", 3),
    ("# Title\nOnly sentence.", 1),
    ("这是第一句。这是第二句！", 2),
    ("Look at `os.path.join(a, b). Then`. Done.", 2),
])
def test_max_sentences_counting(text: str, count: int) -> None:
    assert run("max_sentences", text, n=count).passed
    if count > 1:
        assert not run("max_sentences", text, n=count - 1).passed


def test_max_sentences_detail_names_first_extra_sentence() -> None:
    result = run("max_sentences", "One. Two. Three.", n=2)
    assert result.detail == "3 sentences, limit is 2; number 3 starts 'Three.'"


# ---- max_words ---------------------------------------------------------------------------------------------
def test_max_words_ignores_code() -> None:
    text = "one two three `four five` six\n```\nlots of code words here\n```"
    assert passes("max_words", text, n=4)
    assert not passes("max_words", text, n=3)


def test_max_words_token_rules() -> None:
    assert passes("max_words", "don't e.g. 3.5 - well-known —", n=4)
    assert not passes("max_words", "don't e.g. 3.5 - well-known —", n=3)
    assert run("max_words", "a b c d e", n=3).detail == "5 words, limit is 3"


# ---- language ----------------------------------------------------------------------------------------------
SAMPLES = {
    "en": "Here is a short overview of how the system works and what you should do next if it fails.",
    "de": "Hier ist ein kurzer Überblick, wie das System funktioniert und was du als Nächstes tun solltest.",
    "fr": "Voici un bref aperçu du fonctionnement du système et de ce que vous devez faire ensuite.",
    "es": "Aquí tienes un breve resumen de cómo funciona el sistema y lo que debes hacer a continuación.",
    "it": "Ecco una breve panoramica di come funziona il sistema e di cosa dovresti fare dopo.",
    "pt": "Aqui está uma breve visão geral de como o sistema funciona e o que você deve fazer a seguir.",
    "nl": "Hier is een kort overzicht van hoe het systeem werkt en wat je daarna moet doen.",
    "ru": "Вот краткий обзор того, как работает система и что нужно делать дальше.",
    "uk": "Ось короткий огляд того, як працює система і що потрібно робити далі.",
    "zh": "这是系统工作原理的简要概述以及下一步该怎么做。",
    "ja": "これはシステムの仕組みと次に何をすべきかの簡単な概要です。",
    "ko": "시스템 작동 방식과 다음에 해야 할 일에 대한 간단한 개요입니다.",
    "ar": "هذه نظرة عامة موجزة على كيفية عمل النظام وما يجب عليك فعله بعد ذلك.",
    "el": "Αυτή είναι μια σύντομη επισκόπηση του τρόπου λειτουργίας του συστήματος.",
    "he": "זוהי סקירה קצרה של אופן פעולת המערכת ומה עליך לעשות בהמשך.",
}


@pytest.mark.parametrize(("code", "text"), SAMPLES.items())
def test_detect_language(code: str, text: str) -> None:
    assert detect_language(text) == code


@pytest.mark.parametrize("text", ["", "OK", "Ja.", "Python 3.11 numpy pandas", "42 + 17"])
def test_detect_language_undecidable(text: str) -> None:
    assert detect_language(text) is None


@pytest.mark.parametrize("code", ["de", "fr", "es", "ru", "zh"])
def test_language_check_pass_and_fail(code: str) -> None:
    assert passes("language", SAMPLES[code], code=code)
    result = run("language", SAMPLES["en"], code=code)
    assert not result.passed
    assert "English (en)" in result.detail


def test_language_short_or_code_only_replies_pass() -> None:
    assert passes("language", "OK", code="de")
    assert passes("language", "Sure!", code="fr")
    assert passes("language", "```python\nprint('this is english text that is code')\n```", code="de")


def test_language_ignores_code_blocks() -> None:
    text = SAMPLES["de"] + "\n```python\n# this is the English comment for the code and it is long\n```"
    assert passes("language", text, code="de")


def test_language_wrong_script_fails_even_when_undecidable() -> None:
    result = run("language", "Добре дякую тобі друже мій", code="de")
    assert not result.passed


# ---- no_emoji ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["Great 👍", "skin 👍🏽", "family 👨\u200d👩\u200d👧", "flag 🇩🇪", "keycap 1️⃣",
                                  "done ✅", "star ⭐", "warning ⚠️", "heart ❤️", "coffee ☕", "🤖"])
def test_no_emoji_fails(text: str) -> None:
    result = run("no_emoji", text)
    assert not result.passed
    assert result.detail.startswith("found emoji")


@pytest.mark.parametrize("text", ["© 2024 Acme™ ®", "a → b ← c", "check ✓ ✔", "★ ☆ ♥ • ⚠", "plain text", "1. # *"])
def test_no_emoji_passes_on_text_symbols(text: str) -> None:
    assert passes("no_emoji", text)


def test_find_emoji_keeps_sequences_whole() -> None:
    assert find_emoji("a 👨\u200d👩\u200d👧 b 🇫🇷 c 👍🏽") == ["👨\u200d👩\u200d👧", "🇫🇷", "👍🏽"]


# ---- json_only ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"a": 1}', "  [1, 2]\n", '```json\n{"a": [1, 2]}\n```', "```\n[]\n```"])
def test_json_only_passes(text: str) -> None:
    assert passes("json_only", text)


@pytest.mark.parametrize("text", ['Here: {"a": 1}', "42", '"ok"', '{"a": 1} hope this helps', "", "```json\n{\n```"])
def test_json_only_fails(text: str) -> None:
    assert not passes("json_only", text)


# ---- must_contain / must_not_contain -----------------------------------------------------------------------
def test_must_contain() -> None:
    assert passes("must_contain", "Thanks!\nCheers", phrase="cheers")
    assert passes("must_contain", "tl;dr: it works", phrase="TL;DR")
    assert passes("must_contain", "see the   release\nnotes", phrase="release notes")
    assert not passes("must_contain", "Cheerful regards", phrase="Cheers")
    assert not passes("must_contain", "cheers", phrase="Cheers", case_sensitive=True)
    assert run("must_contain", "bye", phrase="Cheers").detail == "missing required phrase 'Cheers'"


def test_must_not_contain_whole_words_and_quotes() -> None:
    assert passes("must_not_contain", "He said it in passing.", phrase="AI")
    assert not passes("must_not_contain", "As an AI, I can’t.", phrase="as an ai")
    assert not passes("must_not_contain", "Let’s delve in.", phrase="delve")
    assert not passes("must_not_contain", "I can't help", phrase="I can’t")
    assert passes("must_not_contain", "Let's DELVE in.", phrase="delve", case_sensitive=True)
    assert passes("must_not_contain", "delved deeply", phrase="delve")


# ---- validation ---------------------------------------------------------------------------------------------
def test_checker_kinds() -> None:
    assert set(CHECKER_KINDS) == {"lowercase", "no_trailing_question", "bullet_list", "max_words", "max_sentences",
                                  "max_bullets", "language", "no_emoji", "must_contain", "must_not_contain",
                                  "json_only"}


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("shouting", {}, "unknown checker kind 'shouting'"),
    ("max_words", {}, "missing required param 'n'"),
    ("max_words", {"n": 0}, "at least 1"),
    ("max_words", {"n": True}, "whole number"),
    ("max_words", {"n": "ten"}, "whole number"),
    ("max_words", {"n": 2.5}, "whole number"),
    ("max_words", {"n": 5, "m": 1}, "unexpected param(s) 'm'"),
    ("lowercase", {"n": 1}, "allowed: none"),
    ("language", {}, "missing required param 'code'"),
    ("language", {"code": "klingon"}, "unsupported language 'klingon'"),
    ("must_contain", {"phrase": "  "}, "non-empty string"),
    ("must_contain", {"phrase": "x", "case_sensitive": "maybe"}, "true or false"),
    ("must_not_contain", {}, "missing required param 'phrase'"),
])
def test_validate_checker_errors(kind: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_checker(kind, params)
    assert message in str(info.value)


def test_validate_checker_rejects_non_mapping_params() -> None:
    with pytest.raises(ValueError, match="params must be a mapping"):
        validate_checker("lowercase", ["x"])  # type: ignore[arg-type]


def test_validate_checker_normalises() -> None:
    assert validate_checker("max_words", {"n": "50"}).params == {"n": 50}
    assert validate_checker("language", {"code": "German"}).params == {"code": "de"}
    assert validate_checker("language", {"code": "pt-BR"}).params == {"code": "pt"}
    assert validate_checker("must_contain", {"phrase": " Cheers "}).params == {"phrase": "Cheers",
                                                                              "case_sensitive": False}
    assert validate_checker("must_contain", {"phrase": "x", "case_sensitive": "true"}).params["case_sensitive"]
    assert validate_checker("no_emoji", None) == Checker(kind="no_emoji")


def test_check_raises_value_error_on_bad_params_or_kind() -> None:
    with pytest.raises(ValueError, match="missing required param 'n'"):
        check(Checker(kind="max_words"), "text")
    with pytest.raises(ValueError, match="unknown checker kind"):
        check(Checker.model_construct(kind="bogus", params={}), "text")


# ---- hints ---------------------------------------------------------------------------------------------------
def test_format_rule_hint() -> None:
    assert format_rule_hint(Checker(kind="lowercase")) == (
        "Use only lowercase letters, including the pronoun 'i'; no capital letters anywhere.")
    assert format_rule_hint(Checker(kind="max_words", params={"n": 50})) == "Keep the reply to at most 50 words."
    assert format_rule_hint(Checker(kind="max_sentences", params={"n": 1})) == "Keep the reply to at most 1 sentence."
    assert format_rule_hint(Checker(kind="language", params={"code": "de"})) == "Write the entire reply in German."
    assert "'delve'" in format_rule_hint(Checker(kind="must_not_contain", params={"phrase": "delve"}))


@pytest.mark.parametrize("kind", CHECKER_KINDS)
def test_every_kind_has_a_hint(kind: str) -> None:
    params = {"max_words": {"n": 3}, "max_sentences": {"n": 3}, "max_bullets": {"n": 3}, "language": {"code": "fr"},
              "must_contain": {"phrase": "x"}, "must_not_contain": {"phrase": "x"}}.get(kind, {})
    hint = format_rule_hint(Checker(kind=kind, params=params))  # type: ignore[arg-type]
    assert hint.endswith(".") and hint[0].isupper()


# ---- recognition ---------------------------------------------------------------------------------------------
RECOGNISED: list[tuple[str, str, dict[str, Any]]] = [
    ("never use capital letters", "lowercase", {}),
    ("write everything in lowercase", "lowercase", {}),
    ("all lowercase please", "lowercase", {}),
    ("no caps", "lowercase", {}),
    ('Never use capital letters, even for "I".', "lowercase", {}),
    ("Please don't use any capital letters in your replies.", "lowercase", {}),
    ("don't capitalize anything", "lowercase", {}),
    ("Use lower-case", "lowercase", {}),
    ("I hate capital letters", "lowercase", {}),
    ("don't end with a follow-up question", "no_trailing_question", {}),
    ("no follow-up questions at the end", "no_trailing_question", {}),
    ("stop asking me questions at the end", "no_trailing_question", {}),
    ("Don't end your replies with a question.", "no_trailing_question", {}),
    ('Don\'t finish with a question like "Want to know more?"', "no_trailing_question", {}),
    ("Please stop asking follow-up questions.", "no_trailing_question", {}),
    ("answer in at most 3 bullet points", "max_bullets", {"n": 3}),
    ("max 5 bullets", "max_bullets", {"n": 5}),
    ("Don't use more than 3 bullet points.", "max_bullets", {"n": 3}),
    ("Bullet points, max 5.", "max_bullets", {"n": 5}),
    ("use bullet points", "bullet_list", {}),
    ("Always format answers as bullet points.", "bullet_list", {}),
    ("Bullet points only.", "bullet_list", {}),
    ("Use a numbered list.", "bullet_list", {}),
    ("keep answers under 100 words", "max_words", {"n": 99}),
    ("no more than 50 words", "max_words", {"n": 50}),
    ("100 words max", "max_words", {"n": 100}),
    ("Word limit: 150", "max_words", {"n": 150}),
    ("Never exceed 120 words.", "max_words", {"n": 120}),
    ("Keep it to 80 words.", "max_words", {"n": 80}),
    ("at most 2 sentences", "max_sentences", {"n": 2}),
    ("answer in one sentence", "max_sentences", {"n": 1}),
    ("Keep it to a single sentence.", "max_sentences", {"n": 1}),
    ("answer in one or two sentences", "max_sentences", {"n": 2}),
    ("Reply in three sentences or less.", "max_sentences", {"n": 3}),
    ("Two sentences max.", "max_sentences", {"n": 2}),
    ("reply in German", "language", {"code": "de"}),
    ("always answer in Spanish", "language", {"code": "es"}),
    ("in French please", "language", {"code": "fr"}),
    ("Antworte immer auf Deutsch", "language", {"code": "de"}),
    ("en español por favor", "language", {"code": "es"}),
    ("Respond in French, even if I write in English.", "language", {"code": "fr"}),
    ("Don't reply in English, reply in German.", "language", {"code": "de"}),
    ("Please reply only in Dutch.", "language", {"code": "nl"}),
    ("Ukrainian only", "language", {"code": "uk"}),
    ("请用中文回答", "language", {"code": "zh"}),
    ("no emoji", "no_emoji", {}),
    ("don't use emojis", "no_emoji", {}),
    ("No emojis, ever.", "no_emoji", {}),
    ("emojis are not allowed", "no_emoji", {}),
    ("Emoji-free responses please.", "no_emoji", {}),
    ("respond only with JSON", "json_only", {}),
    ("Reply with JSON only.", "json_only", {}),
    ("Always respond in JSON format.", "json_only", {}),
    ("always end with 'Cheers'", "must_contain", {"phrase": "Cheers", "case_sensitive": False}),
    ("always include a TL;DR", "must_contain", {"phrase": "TL;DR", "case_sensitive": False}),
    ('Sign off with "Best, Sam"', "must_contain", {"phrase": "Best, Sam", "case_sensitive": False}),
    ("never say 'As an AI'", "must_not_contain", {"phrase": "As an AI", "case_sensitive": False}),
    ("don't use the word 'delve'", "must_not_contain", {"phrase": "delve", "case_sensitive": False}),
    ("don't use the word delve", "must_not_contain", {"phrase": "delve", "case_sensitive": False}),
    ("Don’t say “I hope this helps”", "must_not_contain", {"phrase": "I hope this helps", "case_sensitive": False}),
]


@pytest.mark.parametrize(("text", "kind", "params"), RECOGNISED)
def test_recognize(text: str, kind: str, params: dict[str, Any]) -> None:
    assert recognize(text) == Checker(kind=kind, params=params)  # type: ignore[arg-type]


NOT_RECOGNISED = [
    "use metric units", "be concise", "be friendly", "I like capital cities", "use capital letters for headings",
    "don't use bullet points", "no bullet points", "Use tables instead of bullet points", "use bullet points for lists",
    "Bullet points are annoying", "I prefer bullet points",
    # all caps / capitalisation of parts is a different rule than lowercase
    "Don't stop using emojis", "No, emojis are fine", "Never reply in English", "no caps in titles",
    "No capital letters at the start of sentences",
    "don't write in all caps", "no all caps", "Don't use caps lock", "Capitalize proper nouns.",
    "don't capitalize the first word of sentences", "I don't care about capitals", "use lowercase for file names",
    "no capital letters unless it's a proper noun", "don't write in lowercase",
    "I use lowercase in my messages, it's just habit",
    # questions: permissions, the opposite, or narrower rules
    "feel free to ask follow-up questions", "ask follow-up questions when something is unclear",
    "always end with a question", "I don't mind follow-up questions.", "Don't ask me personal questions.",
    "No more than one question per reply",
    # emoji: permissions and partial limits
    "fewer emojis please", "don't use too many emojis", "I love emojis", "don't be formal and use emojis",
    "Don't forget to use emojis", "Only one emoji per message", "no emojis in code comments",
    # limits on parts of a reply, approximate or soft limits
    "keep answers around 100 words", "try to keep answers under 100 words", "Each bullet under 20 words",
    "keep bullets under 10 words each", "Limit each paragraph to 3 sentences", "Headlines under 10 words",
    "Keep answers under 500 characters", "at least 100 words", "write in 50 words",
    # language: self-description, ambiguity, scope
    "I speak German", "I'm interested in German cars", "I am learning Spanish", "answer in German or English",
    "reply in the same language I use", "Explain German grammar in English.", "Use English for code comments",
    # json: negation, condition, preference
    "No JSON", "Don't respond in JSON.", "respond in JSON when I ask for data", "I prefer JSON",
    # phrases: narrower than containment, several phrases, conditional
    "never start with 'Certainly'", "Never begin with 'Sure!'", "Never use the words 'delve' or 'tapestry'",
    "Use 'Sie' when addressing me.", "Include a summary at the end",
    "", "   ", "the capital of France is Paris",
]


@pytest.mark.parametrize("text", NOT_RECOGNISED)
def test_not_recognized(text: str) -> None:
    assert recognize(text) is None


def test_recognized_checkers_check_what_the_rule_says() -> None:
    lower = recognize("never use capital letters")
    assert lower is not None
    assert not check(lower, "Sure, I can help.").passed
    assert check(lower, "sure, i can help.").passed
    ask = recognize("no follow-up questions at the end")
    assert ask is not None
    assert not check(ask, "Done. Want me to explain more?").passed
    assert check(ask, "Done. Let me know if you'd like more!").passed
