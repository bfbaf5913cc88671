"""The redactor on a labelled corpus (issue 19): every format's generated secrets are removed and typed, and
ordinary chat (LoCoMo, PrefEval: read at run time, never copied) is left alone.

The same measurement, with numbers, is ``python -m memstore.eval.redaction`` (docs/security.md).
"""

from __future__ import annotations

import base64
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memstore.eval.redaction import chat_messages, default_data_dir, generated_cases, measure
from memstore.redact import bip39_valid, find_secrets, redact

CASES = generated_cases(per_format=40, seed=19)


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_every_format_is_removed_and_typed(fmt: str) -> None:
    for text, secret, kind in CASES[fmt]:
        out, findings = redact(text)
        assert secret not in out, (fmt, text, out)
        assert kind in {f.kind for f in findings}, (fmt, text, findings)
        assert redact(out)[0] == out  # idempotent: placeholders are never re-redacted


@pytest.mark.parametrize(("text", "kept"), [
    ("postgres://admin:hunter1234@db.internal:5432/prod", "postgres://admin:"),
    ("mongodb+srv://app:p@ss#w0rd@cluster0.example.net/test", "@cluster0.example.net/test"),
    ("my login is jdoe / hunter1234", "my login is jdoe / "),
    ("username: jdoe, pw: s3cret!x", "username: jdoe"),
    ("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + "a1B2" * 22 + ";EndpointSuffix=core.windows.net",
     ";EndpointSuffix=core.windows.net"),
    ("Authorization: Basic " + base64.b64encode(b"jdoe:hunter1234").decode(), "Authorization: Basic "),
    ("passport number is 533380006", "passport number is "),
])
def test_new_formats_keep_their_context(text: str, kept: str) -> None:
    out, findings = redact(text)
    assert findings and kept in out and "[redacted" in out


@pytest.mark.parametrize("text", [
    "I passed my exam yesterday, the pass rate was 60%",
    "my login is broken / help me please",
    "The username field: jdoe is what it shows",
    "my username is CosmicDreamer27",
    "username: CosmicDreamer27 - it combines space and dreams",
    "log in with your username/password",
    "the basic idea is simple",
    "Basic Spanish phrases for travellers",
    "see https://example.com:8080/path and mail me at jdoe@example.com",
    "ssh git@github.com:owner/repo.git",
    "my passport expires in 2027",
    "I lost my passport in Rome 2 years ago",
    "SKIP this step, SKU ABCDEF1234",
    "I need to buy milk bread eggs apple banana orange lemon onion garlic pepper salt sugar flour",
    "my seed packets: tomato, basil, and parsley",
    "the ratio is 16:9 and the time is 10:30",
])
def test_ordinary_text_with_the_new_cue_words_is_left_alone(text: str) -> None:
    assert redact(text) == (text, [])


def test_seed_phrases_need_the_checksum_or_a_cue() -> None:
    from mnemonic import Mnemonic

    m = Mnemonic("english")
    phrase = m.to_mnemonic(bytes(range(16)))
    assert bip39_valid(phrase.split())
    words = phrase.split()
    broken = " ".join([*words[:-1], "zoo" if words[-1] != "zoo" else "zero"])
    assert not bip39_valid(broken.split())
    assert redact(f"ok {phrase} bye")[0] == "ok [redacted seed phrase] bye"
    numbered = " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))
    assert "[redacted seed phrase]" in redact(numbered)[0]
    assert redact(broken) == (broken, [])  # twelve list words without a checksum or a cue: left alone
    assert redact(f"my wallet recovery phrase: {broken}")[0] == "my wallet recovery phrase: [redacted seed phrase]"


@settings(max_examples=150, deadline=None)
@given(prefix=st.text(max_size=40), suffix=st.text(max_size=40), fmt=st.sampled_from(sorted(CASES)),
       i=st.integers(0, 39))
def test_generated_secrets_in_random_text_are_removed(prefix: str, suffix: str, fmt: str, i: int) -> None:
    text, secret, _kind = CASES[fmt][i]
    out, findings = redact(f"{prefix}\n{text}\n{suffix}")
    assert secret not in out and findings
    assert redact(out)[0] == out


def test_new_rules_stay_linear_on_adversarial_input() -> None:
    rng = random.Random(3)
    big = {
        "logins": "my login is jdoe / " * 40_000,
        "urls": "postgres://a:" * 60_000,
        "url no at": "postgres://user:" + "p" * 1_000_000,
        "basic": "Basic " + "QUJD" * 250_000,
        "seed words": " ".join(rng.choice(["abandon", "ability", "able", "about", "zoo"]) for _ in range(150_000)),
        "passports": "passport number is 12345 " * 40_000,
        "colons": "1234567890:AA" * 80_000,
    }
    for name, text in big.items():
        t0 = time.perf_counter()
        redact(text)
        assert time.perf_counter() - t0 < 15, name


DATA = default_data_dir()


@pytest.mark.skipif(DATA is None, reason="the shared LoCoMo / PrefEval data is not here (set MEMSTORE_CHAT_DATA)")
def test_ordinary_chat_has_near_zero_false_positives() -> None:
    assert DATA is not None
    sources = chat_messages(DATA)
    assert sum(len(v) for v in sources.values()) > 5000
    result = measure(per_format=5, data_dir=DATA, repeats=1)
    for source, r in result["chat"].items():
        assert r["false_positive_rate"] <= 0.001, (source, r)  # at most one message in a thousand
    for fmt, r in result["formats"].items():
        assert r["recall"] == 1.0, fmt


def test_findings_never_hold_the_secret() -> None:
    for cases in CASES.values():
        text, secret, _ = cases[0]
        for f in find_secrets(text):
            assert secret not in repr(f)
