"""The memstore CLI as a real process (``python -m memstore.cli``, what the console script runs): every
command, exit codes, stdout/stderr separation, --json parsed back, $EDITOR as a script, piped stdin, a
missing home, corrupted imports, and the offline demo on a machine with no key."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memstore.config import MemoryConfig
from memstore.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, home: Path | None = None, code: int = 0, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTORE_")}
    full_env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                    HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", COLUMNS="200", NO_COLOR="1")
    full_env.update(env or {})
    argv = [sys.executable, "-m", "memstore.cli", *(["--home", str(home)] if home else []), *args]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def js(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def editor(tmp_path: Path, pattern: str, replacement: str) -> str:
    script = tmp_path / "editor.py"
    script.write_text("import re, sys\np = sys.argv[-1]\nt = open(p).read()\n"
                      "open(p, 'w').write(re.sub(sys.argv[1], sys.argv[2], t, count=1, flags=re.M))\n")
    return " ".join(shlex.quote(p) for p in (sys.executable, str(script), pattern, replacement))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def mem(home: Path) -> Any:
    from memstore.memory import Memory

    return Memory(config=MemoryConfig(home=home))


@pytest.fixture
def seeded(mem: Any) -> dict[str, str]:
    ids = {t: mem.add(t, "alice", infer=False)[0].id for t in ("Is vegetarian", "Lives in Berlin")}
    mem.rules("alice").add("Never use capital letters")
    mem.set_instructions("alice", about_user="A nurse", response_style="Be brief")
    return ids


def test_help_version_docs_and_usage_errors(tmp_path: Path) -> None:
    assert "memories" in cli("--help").stdout
    assert cli("--version").stdout.startswith("memstore ")
    docs = subprocess.run([sys.executable, "-m", "memstore.cli.docs"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert docs.stdout == (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    one_line_error(cli("memories", "list", code=2), "Missing option '--user'")
    one_line_error(cli("nosuchcommand", code=2), "nosuchcommand")


def test_read_commands(home: Path, seeded: dict[str, str]) -> None:
    assert {u["user_id"] for u in js(cli("users", "list", "--json", home=home))} == {"alice"}
    assert "alice" in cli("users", "list", home=home).stdout
    listed = js(cli("memories", "list", "--user", "alice", "--json", home=home))
    assert [m["text"] for m in listed] == ["Is vegetarian", "Lives in Berlin"]
    assert "Lives in Berlin" in cli("memories", "list", "--user", "alice", home=home).stdout
    mid = seeded["Lives in Berlin"]
    assert js(cli("memories", "show", mid[:6], "--json", home=home))["id"] == mid
    assert "Lives in Berlin" in cli("memories", "show", mid[:6], home=home).stdout
    assert js(cli("memories", "history", mid[:8], "--json", home=home))[0]["event"] == "ADD"
    assert "ADD" in cli("memories", "history", mid, home=home).stdout
    profile = js(cli("instructions", "show", "--user", "alice", "--json", home=home))
    assert profile["about_user"] == "A nurse" and profile["rules"][0]["text"] == "Never use capital letters"
    assert "Be brief" in cli("instructions", "show", "--user", "alice", home=home).stdout
    rules = js(cli("rules", "list", "--user", "alice", "--json", home=home))
    assert rules[0]["checker"] == "lowercase"
    assert "Never use capital letters" in cli("rules", "list", "--user", "alice", home=home).stdout
    exported = cli("export", "--user", "alice", home=home)
    assert json.loads(exported.stdout)["user_id"] == "alice" and exported.stderr == ""
    one_line_error(cli("memories", "show", "zzzzzzzz", home=home, code=1), "no memory with id 'zzzzzzzz'")
    one_line_error(cli("memories", "show", "abc", home=home, code=1), "at least 6")


def test_missing_home(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    for args in (("users", "list"), ("memories", "list", "--user", "a"), ("export", "--user", "a"),
                 ("rules", "list", "--user", "a"), ("turns", "list", "--failed")):
        one_line_error(cli(*args, home=home, code=1), "no memstore at", str(home))
    assert js(cli("doctor", "--json", home=home))["ok"] is True
    assert not home.exists()


def test_write_commands_and_search(home: Path, seeded: dict[str, str]) -> None:
    added = js(cli("memories", "add", "--user", "alice", "-", "--json", home=home, input="Has a cat called Miso\n"))
    assert added[0]["event"] == "ADD"
    hits = js(cli("memories", "search", "--user", "alice", "pets", "--json", home=home))
    assert hits[0]["text"] == "Has a cat called Miso"
    mid = seeded["Lives in Berlin"]
    cli("memories", "invalidate", mid, home=home)
    cli("memories", "restore", mid, home=home)
    assert js(cli("memories", "edit", mid, "--text", "Lives in Lisbon", "--json", home=home))["text"] == \
        "Lives in Lisbon"
    cli("memories", "delete", mid, "--yes", home=home)
    events = js(cli("memories", "history", mid, "--json", home=home))
    assert [e["event"] for e in events] == ["ADD", "INVALIDATE", "RESTORE", "UPDATE", "DELETE"]
    assert {e["actor"] for e in events[1:]} == {"cli"}


def test_editor_edits(home: Path, seeded: dict[str, str], tmp_path: Path) -> None:
    mid = seeded["Is vegetarian"]
    env = {"EDITOR": editor(tmp_path, r"\AIs vegetarian", "Is vegan"), "VISUAL": ""}
    cli("memories", "edit", mid[:8], home=home, env=env)
    assert js(cli("memories", "show", mid, "--json", home=home))["text"] == "Is vegan"
    env = {"EDITOR": editor(tmp_path, "Be brief", "Be brief and kind"), "VISUAL": ""}
    cli("instructions", "edit", "--user", "alice", home=home, env=env)
    assert js(cli("instructions", "show", "--user", "alice", "--json", home=home))["response_style"] == \
        "Be brief and kind"
    one_line_error(cli("memories", "edit", mid, home=home, code=1, env={"EDITOR": "false", "VISUAL": ""}),
                   "exited with status 1")


def test_rules_and_instructions(home: Path, seeded: dict[str, str], mem: Any) -> None:
    rule = js(cli("rules", "add", "--user", "alice", "Answer in at most 50 words", "--json", home=home))
    assert rule["checker"] == "max_words" and rule["params"] == {"n": 50}
    proposal = mem.rules("alice").add("Answer in French", proposed=True, source="extracted", actor="llm")
    other = mem.rules("alice").add("Be sarcastic", proposed=True, source="extracted", actor="llm")
    cli("rules", "accept", "--user", "alice", proposal.id[:8], home=home)
    cli("rules", "reject", "--user", "alice", other.id[:8], home=home)
    cli("rules", "disable", "--user", "alice", rule["id"], home=home)
    cli("rules", "enable", "--user", "alice", rule["id"], home=home)
    cli("rules", "remove", "--user", "alice", rule["id"][:6], home=home)
    texts = [r["text"] for r in js(cli("rules", "list", "--user", "alice", "--json", home=home))]
    assert texts == ["Never use capital letters", "Answer in French"]
    undone = js(cli("rules", "undo", "--user", "alice", "--json", home=home))
    assert "Answer in at most 50 words" in [r["text"] for r in undone["rules"]]
    assert js(cli("rules", "history", "--user", "alice", "--json", home=home))[-1]["actor"] == "cli"
    p = js(cli("instructions", "set", "--user", "alice", "--style", "-", "--json", home=home, input="Be warm\n"))
    assert p["response_style"] == "Be warm" and p["about_user"] == "A nurse"


def test_export_import_and_corrupted_import(home: Path, seeded: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    path.write_text(cli("export", "--user", "alice", home=home).stdout)
    other = tmp_path / "other"
    counts = js(cli("import", str(path), "--json", home=other))
    assert counts["memories"] == 2 and counts["rules"] == 1 and counts["profiles"] == 1
    assert js(cli("memories", "search", "--user", "alice", "food", "--json", home=other))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(path.read_text()[:300])
    one_line_error(cli("import", str(truncated), home=home, code=1), "not valid JSON", "nothing was imported")
    data = json.loads(path.read_text())
    data["memories"].append({"user_id": "mallory", "text": "sneaky"})
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({**data, "user_id": "alice"}))
    fresh = tmp_path / "fresh"
    one_line_error(cli("import", str(mixed), home=fresh, code=1), "another user", "nothing was imported")
    assert js(cli("users", "list", "--json", home=fresh)) == []  # nothing half-imported
    one_line_error(cli("import", "-", home=home, code=1, input="not json at all"), "not a memstore export")


def test_forget(home: Path, seeded: dict[str, str]) -> None:
    refused = cli("forget", "--user", "alice", home=home, code=1, input="n\n")
    assert "2 memories" in refused.stderr and refused.stderr.strip().endswith(
        "error: nothing deleted (answer y, or pass --yes)")
    assert cli("forget", "--user", "alice", home=home, code=1).returncode == 1  # stdin closed: no
    done = cli("forget", "--user", "alice", home=home, input="y\n")
    assert "deleted 2 memories" in done.stdout and "1 rule" in done.stdout
    assert js(cli("users", "list", "--json", home=home)) == []
    assert "Nothing is stored" in cli("forget", "--user", "alice", "--yes", home=home).stderr


def test_turns_and_feedback(home: Path, mem: Any, tmp_path: Path) -> None:
    from memstore.instructions import feedback

    class Broken:
        name = "llm"

        def extract(self, batch: Any) -> Any:
            raise RuntimeError("model unreachable")

    turn = mem.outbox.record("alice", "default", [{"role": "user", "content": "I live in Berlin"}], "ok",
                       response_id="r1")
    mem.extraction.process([turn], Broken())
    mem.outbox.record("alice", "default", [{"role": "user", "content": "I live in Berlin"}], "meh", response_id="r2",
                extract=False)
    failed = js(cli("turns", "list", "--failed", "--json", home=home))
    assert [t["id"] for t in failed] == [turn.id] and "model unreachable" in failed[0]["error"]
    assert "model unreachable" in cli("turns", "list", home=home).stdout
    assert js(cli("turns", "show", turn.id[:8], "--json", home=home))["status"] == "failed"
    retried = js(cli("turns", "retry", "--extractor", "heuristic", "--json", home=home))
    assert retried["retried"] == 1 and retried["still_failed"] == []
    assert [m["text"] for m in js(cli("memories", "list", "--user", "alice", "--json", home=home))] == \
        ["Lives in Berlin"]
    feedback.compare(mem.engine, "r1", "r2", preferred="r1")
    out = tmp_path / "dpo.jsonl"
    cli("feedback", "export", "--format", "openai-dpo", "-o", str(out), home=home)
    pair = json.loads(out.read_text().splitlines()[0])
    assert pair["preferred_output"][0]["content"] == "ok" and pair["non_preferred_output"][0]["content"] == "meh"


def test_doctor_and_reindex(home: Path, seeded: dict[str, str], mem: Any) -> None:
    assert js(cli("doctor", "--json", home=home))["ok"]
    mem.store.index.delete(list(seeded.values()))
    broken = cli("doctor", home=home, code=1)
    assert "out of sync" in broken.stdout and "memstore reindex" in broken.stdout
    assert js(cli("reindex", "--json", home=home))["indexed"] == 2
    assert js(cli("doctor", "--json", home=home))["ok"]


def test_chat_with_piped_stdin(home: Path) -> None:
    from memstore.cli.demo import scripted_reply

    with ScriptedLLM(reply_fn=scripted_reply) as llm:
        proc = cli("chat", "--user", "alice", "--model", "scripted", "--base-url", llm.base_url, "--api-key", "x",
                   home=home, input="Hi! I live in Berlin and I'm vegetarian.\n/rules\n/exit\n")
    assert "Nice to meet you!" in proc.stdout
    assert "+ Lives in Berlin" in proc.stdout and "+ Is vegetarian" in proc.stdout
    assert {m["text"] for m in js(cli("memories", "list", "--user", "alice", "--json", home=home))} == \
        {"Lives in Berlin", "Is vegetarian"}


def test_extensions_fail_cleanly_or_run() -> None:
    for name in ("eval", "bench", "serve", "keys"):
        proc = subprocess.run([sys.executable, "-m", "memstore.cli", name, "--help"], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "Traceback" not in proc.stderr
        if proc.returncode:
            assert proc.returncode == 1
            one_line_error(proc, f"memstore {name} is not available")
        else:
            assert "Usage" in proc.stdout


@pytest.mark.slow
def test_demo_on_a_fresh_machine(tmp_path: Path) -> None:
    """No key, no network, a fresh $HOME: the demo runs on the scripted local model and leaves nothing."""
    fresh_home = tmp_path / "user-home"
    fresh_home.mkdir()
    env = {"HOME": str(fresh_home), "OPENAI_API_KEY": "", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}
    proc = cli("demo", env=env)
    out = proc.stdout
    for expected in ("scripted local model", "1. a conversation", "+ Lives in Berlin", "- Lives in Berlin",
                     "+ Lives in Lisbon", "+ rule: Never use capital letters", "2. what memstore stored",
                     "3. the history of the fact that changed", "INVALIDATE", "4. the next request",
                     "<memstore_context>", "Lives in Lisbon</memory>", "lisbon?"):
        assert expected in out, expected
    assert not (fresh_home / ".memstore").exists()
