"""Security: secrets never stored, stored text never breaks out of its block, pasted instructions never become
rules, and hostile input (huge, binary, nested) gets a clear error or bounded work.

Corpora live in tests/data: secrets_corpus.json, injection_corpus.json, pasted_instructions.json.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from memstore import MemoryClient
from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError
from memstore.extract.prompts import ExistingItem, TurnView, render_input
from memstore.memory import Memory
from memstore.recall.inject import render_block
from memstore.recall.tokens import count_tokens
from memstore.records import MemoryEvent, MemoryRecord, StyleRule, Turn, utcnow
from memstore.redact import PLACEHOLDERS, iban_valid, luhn_valid, redact
from memstore.storage.embed import HashEmbedder
from memstore.testing import ScriptedLLM
from memstore.worker import drain

DATA = Path(__file__).parent / "data"
SECRETS = json.loads((DATA / "secrets_corpus.json").read_text())
INJECTIONS: list[str] = json.loads((DATA / "injection_corpus.json").read_text())
PASTED = json.loads((DATA / "pasted_instructions.json").read_text())


# ---- fake credentials, generated so that no key-shaped string is committed ----------------------------

def _rand(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    s = "".join(rng.choice(alphabet) for _ in range(n))
    return s[:-2] + "7q"  # at least one digit and one letter


def fake_secrets(seed: int = 7) -> dict[str, str]:
    r = random.Random(seed)
    b64 = lambda n: _rand(r, n, string.ascii_letters + string.digits + "_-")  # noqa: E731
    return {
        "openai": "sk-" + _rand(r, 48),
        "openai_proj": "sk-proj-" + b64(120),
        "anthropic": "sk-ant-api03-" + b64(93) + "AA",
        "aws_id": "AKIA" + _rand(r, 16, string.ascii_uppercase + string.digits)[:-2] + "7Q",
        "aws_secret": _rand(r, 38, string.ascii_letters + string.digits + "/+") + "7q",
        "github": "ghp_" + _rand(r, 36),
        "github_pat": "github_pat_" + _rand(r, 22) + "_" + _rand(r, 59),
        "slack": "xoxb-" + _rand(r, 12, string.digits) + "-" + _rand(r, 13, string.digits) + "-" + _rand(r, 24),
        "slack_hook": "https://hooks.slack.com/services/T" + _rand(r, 8, string.ascii_uppercase + string.digits)
                      + "/B" + _rand(r, 8, string.ascii_uppercase + string.digits) + "/" + _rand(r, 24),
        "google": "AIza" + b64(35),
        "stripe": "sk_live_" + _rand(r, 24),
        "bearer": b64(40),
        "jwt": "eyJ" + b64(30) + ".eyJ" + b64(60) + "." + b64(43),
        "generic": _rand(r, 32),
    }


def secret_cases(seed: int = 7) -> list[tuple[str, str, str]]:
    """(text, secret, kind) for every corpus entry, with generated credentials filled in."""
    keys = fake_secrets(seed)
    out = []
    for entry in SECRETS["secret"]:
        text = entry["text"]
        names = re.findall(r"<<(\w+)>>", text)
        for name in names:
            text = text.replace(f"<<{name}>>", keys[name])
        secrets = [keys[n] for n in names] or [entry["secret"]]
        for s in secrets:
            out.append((text, s, entry["kind"]))
    return out


def hash_memory(tmp_path: Path, name: str = "store", **cfg: Any) -> Memory:
    return Memory(config=MemoryConfig(home=tmp_path / name, extractor="heuristic", **cfg), embedder=HashEmbedder())


# ---- redaction ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "secret", "kind"), secret_cases(), ids=lambda v: str(v)[:24])
def test_secret_corpus_is_redacted(text: str, secret: str, kind: str) -> None:
    out, findings = redact(text)
    assert secret not in out
    assert PLACEHOLDERS[kind] in out, (out, findings)
    assert kind in {f.kind for f in findings}
    for f in findings:  # positions refer to the input
        assert 0 <= f.start < f.end <= len(text)


@pytest.mark.parametrize("text", SECRETS["clean"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == (text, [])


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112") and not luhn_valid("12345")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and iban_valid("gb82west12345698765432")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")   # check digits
    assert not iban_valid("DE89 3704 0044 0532 0130 0")    # German IBANs have 22 characters
    assert not iban_valid("ZZ89370400440532013000")        # no such country


@settings(max_examples=150, deadline=None)
@given(prefix=st.text(max_size=60), suffix=st.text(max_size=60), which=st.sampled_from(sorted(fake_secrets())),
       seed=st.integers(0, 10_000))
def test_generated_keys_are_always_removed_and_redaction_is_idempotent(prefix: str, suffix: str, which: str,
                                                                        seed: int) -> None:
    key = fake_secrets(seed)[which]
    if which in ("bearer", "generic", "aws_secret"):  # bare random strings: only with their context words
        key = {"bearer": "Bearer ", "generic": "api_key=", "aws_secret": "aws secret key: "}[which] + key
    text = f"{prefix} {key} {suffix}"
    out, findings = redact(text)
    secret = key.split()[-1].split("=")[-1]
    assert secret not in out and findings
    assert redact(out)[0] == out  # placeholders are never re-redacted


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_redact_never_fails_on_arbitrary_text(text: str) -> None:
    out, findings = redact(text)
    assert isinstance(out, str)
    assert redact(out)[0] == out
    if not findings:
        assert out == text


def test_redaction_is_linear_on_adversarial_input() -> None:
    big = {
        "keywords": "password is token sk- AKIA DE89 4111 " * 30_000,
        "passwords": "password is x1y2z3 " * 50_000,
        "digits": "4111 1111 " * 100_000,
        "one long token": "sk-" + "a1" * 500_000,
        "dashes": "-" * 1_000_000,
        "jwt-ish": "eyJ" + "a" * 1_000_000,
    }
    for name, text in big.items():
        t0 = time.perf_counter()
        redact(text)
        assert time.perf_counter() - t0 < 15, name


def test_secrets_are_never_stored_as_memories(tmp_path: Path) -> None:
    mem = hash_memory(tmp_path)
    cases = secret_cases()
    for i, (text, _secret, _kind) in enumerate(cases):
        mem.add(f"fact {i}: {text}", user_id="alice", infer=False)
    first = mem.get_all("alice")[0]
    mem.update(first.id, "updated: my password is S3cretUpd4te!", user_id="alice")
    stored = {m.text.split(":")[0]: m.text for m in mem.get_all("alice")}
    events = json.dumps(mem.export("alice"), default=str)
    for i, (_text, secret, kind) in enumerate(cases):
        if i:
            assert secret not in stored[f"fact {i}"] and PLACEHOLDERS[kind] in stored[f"fact {i}"]
        if len(secret) >= 6:
            assert secret not in events
    assert "S3cretUpd4te!" not in events and "[redacted password]" in stored["updated"]

    plain = hash_memory(tmp_path, "plain", redact_secrets=False)  # configurable: off stores verbatim
    plain.add("my password is hunter2", user_id="alice", infer=False)
    assert plain.get_all("alice")[0].text == "my password is hunter2"


def test_secrets_never_reach_the_outbox_the_extraction_prompt_or_the_store(tmp_path: Path) -> None:
    """Through MemoryClient: the chat model may see what the user typed, but the Turn outbox, the extraction
    model's prompt and the stored memories never hold it, even when the extraction model copies it."""
    keys = fake_secrets(11)
    said = (f"I'm a developer. My openai key is {keys['openai']} and my password is Hunter2Pass! "
            "My card number is 4111 1111 1111 1111. I love hiking.")

    def reply(req: Any) -> str:
        if "long-term memory" in req.system_text:
            user = req.last_user_text  # a naive model that copies whatever it sees into memories
            return json.dumps({"operations": [{"op": "ADD", "text": f"Said: {user[-400:]}", "turn": 0},
                                              {"op": "ADD", "text": f"Has key {keys['github']}", "turn": 0}],
                               "instructions": []})
        return f"Got it, your key {keys['openai']} is noted."  # the chat model echoes the secret

    with ScriptedLLM(reply) as llm:
        cfg = MemoryConfig(home=tmp_path / "s", llm_model="openai/scripted", llm_api_base=llm.base_url,
                           llm_api_key="k", llm_max_retries=0)
        mem = Memory(config=cfg, embedder=HashEmbedder())
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            resp = c.chat.completions.create(model="scripted", user="alice",
                                             messages=[{"role": "user", "content": said}])
            assert keys["openai"] in resp.choices[0].message.content  # the caller's response is untouched
            stream = c.chat.completions.create(model="scripted", user="alice", stream=True,
                                               messages=[{"role": "user", "content": said}])
            assert keys["openai"] in "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        drain(mem.extraction)
        prompts = [json.dumps(r.body) for r in llm.requests if "long-term memory" in r.system_text]
    assert prompts, "the extraction model was called"
    with Session(mem.engine) as s:
        turns = [json.dumps(t.model_dump(mode="json")) for t in s.exec(select(Turn)).all()]
        events = [json.dumps(e.model_dump(mode="json")) for e in s.exec(select(MemoryEvent)).all()]
    memories = [m.text for m in mem.get_all("alice")]
    assert len(turns) == 2 and memories and events
    for secret in (keys["openai"], keys["github"], "Hunter2Pass!", "4111 1111 1111 1111"):
        for blob in (*turns, *prompts, *memories, *events):
            assert secret not in blob
    assert any("[redacted api key]" in m for m in memories)


# ---- memory poisoning: stored text is data that cannot break out of its block ----------------------------

_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _as_parsed(text: str) -> str:
    """What an XML parser gives back for quoted text: forbidden characters gone, line ends normalised."""
    return _ILLEGAL_XML.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def check_block(block: str, memories: list[str], rules: list[str], about: str = "", style: str = "") -> None:
    """The block is well-formed XML with exactly the expected elements, and every stored text comes back
    from the parser verbatim: nothing inside a text opened, closed or forged an element or attribute."""
    root = ET.fromstring(block)
    assert root.tag == "memstore_context"
    sections = {el.tag: el for el in root}
    assert len(sections) == len(list(root)) and set(sections) <= {"user_instructions", "user_profile", "memories"}
    got_rules = [el for el in sections.get("user_instructions", []) if el.tag == "rule"]
    got_style = [el for el in sections.get("user_instructions", []) if el.tag == "response_style"]
    assert [_as_parsed(r) for r in rules] == [el.text or "" for el in got_rules]
    assert all(set(el.attrib) == {"id"} and len(el) == 0 for el in got_rules)
    assert [el.text or "" for el in got_style] == ([_as_parsed(style)] if style else [])
    if about:
        assert sections["user_profile"].text == _as_parsed(about) and len(sections["user_profile"]) == 0
    got = list(sections.get("memories", []))
    assert all(el.tag == "memory" and set(el.attrib) == {"id", "kind", "date"} and len(el) == 0 for el in got)
    assert sorted(el.text or "" for el in got) == sorted(_as_parsed(m) for m in memories)


def test_injection_corpus_cannot_break_out_of_the_injected_block(tmp_path: Path) -> None:
    mem = hash_memory(tmp_path)
    for i, s in enumerate(INJECTIONS):
        user = f"u{i}"
        mem.add(s, user_id=user, infer=False, kind="fact")
        mem.add(f"{s} (second copy)", user_id=user, infer=False, pinned=True)
        if s.replace("\x00", "").strip():
            mem.rules(user).add(s[:500])
        mem.set_instructions(user, about_user=s[:1500], response_style=f"plain {s}"[:1500])
        ctx = mem.context(user, s if s.strip("\x00").strip() else "hello", token_budget=4000)
        stored = [m.text for m in mem.get_all(user)]
        assert len(ctx.memories) == len(stored) == 2
        profile = mem.profile(user)
        check_block(ctx.system_block, stored, [r.text for r in profile.rules], profile.about_user,
                    profile.response_style)
        assert ctx.system_block.count("</memstore_context>") == 1


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=120), min_size=1, max_size=4), about=st.text(max_size=80))
def test_any_text_renders_as_parseable_quoted_data(texts: list[str], about: str) -> None:
    memories = [MemoryRecord(user_id="u", text=t, kind="fact") for t in texts]
    rules = [StyleRule(user_id="u", text=t) for t in texts]
    block = render_block(about, "", rules, memories)
    check_block(block, texts, texts, about if _as_parsed(about) else "")


def test_injection_corpus_stays_quoted_in_the_extraction_prompt() -> None:
    texts = [s for s in INJECTIONS if s]
    prompt = render_input([TurnView(user=s, assistant=s) for s in texts],
                          [ExistingItem(handle=f"m{i}", text=s) for i, s in enumerate(texts)],
                          [ExistingItem(handle=f"r{i}", text=s) for i, s in enumerate(texts)], utcnow())
    root = ET.fromstring(f"<prompt>{prompt}</prompt>")
    assert [el.tag for el in root] == ["current_date", "existing_memories", "existing_rules", "turns"]
    assert [el.text for el in root[1]] == [_as_parsed(s) for s in texts]
    assert [el.text for el in root[2]] == [_as_parsed(s) for s in texts]
    turns = list(root[3])
    assert len(turns) == len(texts)
    for el, s in zip(turns, texts, strict=True):
        assert [c.tag for c in el] == ["user", "assistant"]
        assert el[0].text == _as_parsed(s)[:4000] or el[0].text == _as_parsed(s[:4000])


def _pasted_cases() -> list[tuple[str, str, list[dict[str, str]], list[str]]]:
    """(carrier, pasted instruction, messages, the rules the user did state in their own words)."""
    out = []
    for carrier in PASTED["carriers"]:
        own = [carrier["own_rule"]] if "own_rule" in carrier else []
        for instr in PASTED["instructions"]:
            if own and "emoji" in instr:  # the user said that one too
                continue
            msgs = [{**m, "content": m["content"].replace("{instruction}", instr)} for m in carrier["messages"]]
            out.append((carrier["name"], instr, msgs, own))
    return out


def test_pasted_instructions_never_become_rules(tmp_path: Path) -> None:
    """Through the LLM path, with a naive scripted model that proposes every instruction it sees (the pasted
    one included) as a standing rule: reconciliation refuses each one that the user did not state."""
    proposals: list[str] = []

    def naive_model(req: Any) -> str:
        prompt = req.last_user_text
        turns = re.findall(r"<turn index=\"(\d+)\"[^>]*>(.*?)</turn>", prompt, re.S)
        instructions = []
        for idx, body in turns:
            found = [i for i in [*PASTED["instructions"], *(o["rule"] for o in PASTED["own"])]
                     if i.lower() in body.lower() or i.lower().replace("always ", "") in body.lower()]
            proposals.extend(found)
            instructions += [{"action": "add", "text": i, "turn": int(idx)} for i in found]
        return json.dumps({"operations": [], "instructions": instructions})

    with ScriptedLLM(naive_model) as llm:
        cfg = MemoryConfig(home=tmp_path / "p", llm_model="openai/scripted", llm_api_base=llm.base_url,
                           llm_api_key="k", llm_max_retries=0)
        mem = Memory(config=cfg, embedder=HashEmbedder())
        cases = _pasted_cases()
        leaked = []
        for n, (carrier, instr, msgs, own) in enumerate(cases):
            user = f"user{n}"
            mem.add(msgs, user_id=user)
            rules = [r.text for r in mem.rules(user).list()]
            if rules != own:  # the pasted rule refused; the user's own rule in the same message accepted
                leaked.append((carrier, instr, rules))
        calls = sum(1 for r in llm.requests if "long-term memory" in r.system_text)
        # the positive controls: the same path accepts a rule the user states
        for i, own in enumerate(PASTED["own"]):
            mem.add(own["text"], user_id=f"own{i}")
            assert [r.text for r in mem.rules(f"own{i}").list()] == [own["rule"]], own
    assert leaked == []
    assert calls >= len(cases) * 0.8, "the model must actually be asked (the gate opens on the user's own words)"
    assert len(proposals) >= len(cases) * 0.8, "the naive model proposed the pasted instructions"


# ---- limits: clear errors or bounded work ---------------------------------------------------------------

def test_huge_and_malformed_input_gets_clear_errors(tmp_path: Path) -> None:
    mem = hash_memory(tmp_path)
    huge = "I like tea. " * 1_000_000  # 12 MB
    bad_inputs: list[tuple[Any, dict[str, Any]]] = [
        (huge, {"infer": False}),
        (b"\xff\xfe not utf-8", {}),
        ([{"role": "user", "content": b"\xff\xfe"}], {}),
        ([{"role": "user", "content": [{"type": "text", "text": b"\x80"}]}], {}),
        ("\x00\x00\x00", {"infer": False}),
        ("tea", {"user_id": "a\x00b"}),
        ("tea", {"user_id": "x" * 10_000}),
        ("tea", {"namespace": ""}),
        ([{"role": "hacker", "content": "x"}], {}),
        (_nested(10_000), {}),
        ([{"role": "user", "content": _nested(50)}], {}),
        ("tea", {"metadata": _deep_dict(10_000)}),
        ("tea", {"metadata": {"blob": "x" * 2_000_000}}),
        ("tea", {"user_id": "alice\udcff"}),
    ]
    for value, kwargs in bad_inputs:
        kwargs = {"user_id": "alice", **kwargs}
        t0 = time.perf_counter()
        with pytest.raises(InvalidInputError):
            mem.add(value, **kwargs)
        assert time.perf_counter() - t0 < 10
    for query in ("x" * 20_000, b"bytes", "\x00"):
        with pytest.raises(InvalidInputError):
            mem.search(query, user_id="alice")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        mem.rules("alice").add("Never use capital letters. " * 40_000)  # 1 MB rule text
    with pytest.raises(InvalidInputError):
        mem.set_instructions("alice", about_user="x" * 1_000_000)
    # NUL bytes inside otherwise fine text are dropped; lone surrogates (undecodable bytes) become U+FFFD
    mem.add("I like\x00 green tea", user_id="alice", infer=False)
    mem.add("caf\udce9 au lait", user_id="alice", infer=False)
    mem.add([{"role": "user", "content": "I love caf\udce9 noir"}], user_id="alice")  # the extraction path
    assert [m.text for m in mem.get_all("alice")] == ["I like green tea", "caf\ufffd au lait", "Loves caf\ufffd noir"]
    assert mem.search("caf\udce9", user_id="alice")


def _nested(depth: int) -> Any:
    node: Any = "deep"
    for _ in range(depth):
        node = [{"type": "text", "text": node}]
    return node


def _deep_dict(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"k": node}
    return node


def test_thousands_of_memories_and_rules_stay_within_budget(tmp_path: Path) -> None:
    mem = hash_memory(tmp_path)
    items = [{"text": f"Likes topic number {i} about tea and travel", "kind": "preference",
              "pinned": i % 50 == 0, "source": "api"} for i in range(3000)]
    for i in range(0, len(items), 500):
        mem.store.add_many("alice", "default", items[i:i + 500], actor="api")
    rules = mem.rules("alice")
    for i in range(120):
        rules.add(f"Rule {i}: mention the word tea{i} once " + "and stay polite " * 20)
    about, style = ("I am a nurse who travels. " * 60)[:1500], ("Short answers, no fluff. " * 60)[:1500]
    mem.set_instructions("alice", about_user=about, response_style=style)
    profile_tokens = count_tokens(render_block(about, style))  # the two fields are always injected
    for budget in (100, 800, 3000):
        t0 = time.perf_counter()
        ctx = mem.context("alice", "what do I like about tea and travel?", token_budget=budget)
        assert time.perf_counter() - t0 < 30
        assert ctx.tokens <= budget + profile_tokens, (budget, ctx.tokens, profile_tokens)
        assert ctx.dropped > 0 and len(ctx.rules) < 120
    ctx = mem.context("alice", "tea?", token_budget=100_000)
    assert len(ctx.rules) == 120  # with room, every rule is injected
    assert len(mem.search("tea travel", user_id="alice", limit=10)) == 10


def test_the_extraction_prompt_is_bounded(tmp_path: Path) -> None:
    """Huge turns, thousands of memories and hundreds of rules: the prompt the extraction model gets stays
    bounded (turns truncated, similar memories and rules capped), and the turn is processed."""
    sizes: list[int] = []

    def model(req: Any) -> str:
        sizes.append(sum(len(m.get("content") or "") for m in req.body["messages"]))
        return json.dumps({"operations": [{"op": "ADD", "text": "Likes tea " + "x" * 1_000_000, "turn": 0}],
                           "instructions": [{"action": "add", "text": "Never use capitals " * 60_000, "turn": 0}]})

    with ScriptedLLM(model) as llm:
        cfg = MemoryConfig(home=tmp_path / "b", llm_model="openai/scripted", llm_api_base=llm.base_url,
                           llm_api_key="k", llm_max_retries=0)
        mem = Memory(config=cfg, embedder=HashEmbedder())
        mem.store.add_many("alice", "default", [{"text": f"Likes tea sort {i} " + "y" * 1500}
                                                for i in range(600)], actor="api")
        for i in range(120):
            mem.rules("alice").add(f"Rule {i} about tea " + "z" * 450)
        big = "I love tea and I'm a barista. " + "Pasted menu line with tea. " * 200_000  # 5 MB
        t0 = time.perf_counter()
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as c:
            c.chat.completions.create(model="scripted", user="alice", messages=[{"role": "user", "content": big}])
        drain(mem.extraction)
        elapsed = time.perf_counter() - t0
    assert len(sizes) == 2  # the chat call and one extraction call
    # 5 MB of turn, 1 MB of similar memories, 55 kB of rules -> at most 4000 characters of the turn, 40 memories
    # and 60 rules: a bounded prompt
    assert sizes[1] < 4000 + 40 * 1600 + 60 * 500 + 12_000, sizes
    assert elapsed < 60
    with Session(mem.engine) as s:
        (turn,) = s.exec(select(Turn)).all()
    assert turn.status == "done"  # the oversized memory and rule were refused, the turn was not dropped
    assert len(mem.rules("alice").list()) == 120
