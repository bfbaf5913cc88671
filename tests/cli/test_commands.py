"""The memstore CLI through typer's CliRunner (in-process): every command, --json parsed back, $EDITOR
editing with a script as the editor, bad ids, a missing home, corrupted imports, and one-line errors.
tests/cli/test_cli_subprocess.py runs the same commands as a real process."""

from __future__ import annotations

import json
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from memstore.cli.app import LAZY, app
from memstore.config import MemoryConfig
from memstore.testing import ScriptedLLM

runner = CliRunner()


# ---- helpers --------------------------------------------------------------------------------------------
def run(home: Path, *args: str, code: int = 0, input: str | None = None, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, ["--home", str(home), *args], input=input, env=env)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.output
    assert "unexpected" not in result.stderr, result.stderr
    return result


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


def one_line_error(result: Any, *needles: str) -> str:
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def editor(tmp_path: Path, pattern: str, replacement: str, name: str = "editor.py") -> str:
    """An $EDITOR command: a script that applies a regex substitution to the file it is given."""
    script = tmp_path / name
    script.write_text(
        "import re, sys\n"
        "path = sys.argv[-1]\n"
        "text = open(path, encoding='utf-8').read()\n"
        "open(path, 'w', encoding='utf-8').write(re.sub(sys.argv[1], sys.argv[2], text, count=1, flags=re.M))\n",
        encoding="utf-8")
    return " ".join(shlex.quote(p) for p in (sys.executable, str(script), pattern, replacement))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def mem(home: Path) -> Any:
    """The library's view of the same store the CLI uses (for seeding and for checking)."""
    from memstore.memory import Memory

    return Memory(config=MemoryConfig(home=home))


@pytest.fixture
def seeded(home: Path, mem: Any) -> dict[str, str]:
    ids = {}
    for text, kind in (("Is vegetarian", "preference"), ("Lives in Berlin", "fact"), ("Has a cat called Miso", "fact")):
        ids[text] = mem.add(text, "alice", infer=False, kind=kind)[0].id
    ids["bob"] = mem.add("Plays the cello", "bob", infer=False)[0].id
    return ids


# ---- help, usage errors, missing home -----------------------------------------------------------------------
def test_help_lists_every_command(home: Path) -> None:
    out = run(home, "--help").stdout
    for name in ("memories", "instructions", "rules", "users", "forget", "export", "import", "turns", "feedback",
                 "demo", "chat", "doctor", "reindex", "eval", "bench", "serve", "keys"):
        assert name in out
    assert runner.invoke(app, []).exit_code == 0  # bare `memstore` prints the help


def test_version(home: Path) -> None:
    assert run(home, "--version").stdout.startswith("memstore ")


def test_usage_errors_are_one_line_with_exit_2(home: Path) -> None:
    one_line_error(run(home, "memories", "list", code=2), "--user", "--help")
    one_line_error(run(home, "memories", "frobnicate", code=2))
    one_line_error(run(home, "memories", "list", "--user", "a", "--limit", "0", code=2))


def test_missing_home_is_a_clear_error_and_is_not_created(home: Path) -> None:
    for args in (["users", "list"], ["memories", "list", "--user", "alice"], ["memories", "show", "abcdef12"],
                 ["memories", "history", "abcdef12"], ["instructions", "show", "--user", "alice"],
                 ["rules", "list", "--user", "alice"], ["export", "--user", "alice"], ["turns", "list"],
                 ["forget", "--user", "alice", "--yes"], ["reindex"]):
        one_line_error(run(home, *args, code=1), "no memstore at", str(home))
    assert not home.exists()
    report = as_json(run(home, "doctor", "--json"))  # doctor explains instead of failing
    assert report["ok"] and report["checks"][0]["status"] == "warn"
    assert not home.exists()


def test_home_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run(f, "users", "list", code=2), "--home", "is a file")
    result = runner.invoke(app, ["users", "list"], env={"MEMSTORE_HOME": str(f)})
    assert result.exit_code == 1
    one_line_error(result, "not a directory")


def test_memstore_home_env_is_the_default(tmp_path: Path, seeded: dict[str, str], home: Path) -> None:
    result = runner.invoke(app, ["users", "list", "--json"], env={"MEMSTORE_HOME": str(home)})
    assert result.exit_code == 0
    assert {u["user_id"] for u in json.loads(result.stdout)} == {"alice", "bob"}


# ---- memories -------------------------------------------------------------------------------------------------
def test_users_list(home: Path, seeded: dict[str, str]) -> None:
    users = as_json(run(home, "users", "list", "--json"))
    alice = next(u for u in users if u["user_id"] == "alice")
    assert alice["memories"] == 3 and alice["namespace"] == "default" and alice["last_activity"]
    table = run(home, "users", "list").stdout
    assert "alice" in table and "bob" in table


def test_memories_list_json_and_table(home: Path, seeded: dict[str, str]) -> None:
    items = as_json(run(home, "memories", "list", "--user", "alice", "--json"))
    assert [m["text"] for m in items] == ["Is vegetarian", "Lives in Berlin", "Has a cat called Miso"]
    assert {m["user_id"] for m in items} == {"alice"}
    prefs = as_json(run(home, "memories", "list", "--user", "alice", "--kind", "preference", "--json"))
    assert [m["text"] for m in prefs] == ["Is vegetarian"]
    table = run(home, "memories", "list", "--user", "alice").stdout
    assert "Lives in Berlin" in table and seeded["Lives in Berlin"][:8] in table
    assert "No memories" in run(home, "memories", "list", "--user", "nobody").stderr
    one_line_error(run(home, "memories", "list", "--user", "alice", "--kind", "bogus", code=2), "kind")


def test_memories_add_search_show(home: Path) -> None:
    added = as_json(run(home, "memories", "add", "--user", "alice", "I am vegetarian", "--kind", "preference",
                        "--pin", "--json"))
    assert added[0]["event"] == "ADD"
    again = as_json(run(home, "memories", "add", "--user", "alice", "I am vegetarian", "--json"))
    assert again[0]["event"] == "NOOP"
    run(home, "memories", "add", "--user", "alice", "-", input="I play tennis on Sundays\n")
    hits = as_json(run(home, "memories", "search", "--user", "alice", "what do I eat", "--json"))
    assert hits[0]["text"] == "I am vegetarian" and "score" in hits[0]
    shown = as_json(run(home, "memories", "show", added[0]["id"][:6], "--json"))
    assert shown["id"] == added[0]["id"] and shown["pinned"] is True and shown["kind"] == "preference"
    table = run(home, "memories", "show", added[0]["id"]).stdout
    assert "I am vegetarian" in table and "History" in table and "ADD" in table
    one_line_error(run(home, "memories", "add", "--user", "alice", "   ", code=1), "empty")


def test_bad_ids(home: Path, seeded: dict[str, str], mem: Any) -> None:
    one_line_error(run(home, "memories", "show", "abc", code=1), "at least 6")
    one_line_error(run(home, "memories", "show", "ffffffffff", code=1), "no memory with id 'ffffffffff'")
    one_line_error(run(home, "memories", "delete", "ffffffffff", code=1), "no memory")
    # someone else's memory, scoped by --user
    one_line_error(run(home, "memories", "show", seeded["bob"], "--user", "alice", code=1), "for user 'alice'")
    # an ambiguous prefix
    base = {"format": "memstore.export", "version": 1, "user_id": "carol"}
    mem.import_({**base, "memories": [{"id": "abcdef01" + "0" * 24, "user_id": "carol", "text": "One"},
                                      {"id": "abcdef02" + "0" * 24, "user_id": "carol", "text": "Two"}]})
    one_line_error(run(home, "memories", "show", "abcdef", code=1), "ambiguous", "abcdef01", "abcdef02")
    assert as_json(run(home, "memories", "show", "abcdef02", "--json"))["text"] == "Two"
    one_line_error(run(home, "rules", "remove", "--user", "alice", "ffffffff", code=1), "no rule")
    one_line_error(run(home, "turns", "show", "ffffffff", code=1), "no turn")


def test_edit_with_editor(home: Path, seeded: dict[str, str], tmp_path: Path) -> None:
    mid = seeded["Lives in Berlin"]
    env = {"EDITOR": editor(tmp_path, r"\ALives in Berlin", "Lives in Lisbon"), "VISUAL": ""}
    assert "Updated" in run(home, "memories", "edit", mid[:8], env=env).stdout
    assert as_json(run(home, "memories", "show", mid, "--json"))["text"] == "Lives in Lisbon"
    events = as_json(run(home, "memories", "history", mid[:8], "--json"))
    assert [(e["event"], e["actor"]) for e in events] == [("ADD", "api"), ("UPDATE", "cli")]
    assert events[1]["old_text"] == "Lives in Berlin" and events[1]["new_text"] == "Lives in Lisbon"
    # an editor that changes nothing, one that empties the text, one that fails
    assert "No changes" in run(home, "memories", "edit", mid, env={"EDITOR": "true", "VISUAL": ""}).stderr
    emptied = run(home, "memories", "edit", mid, code=1, env={"EDITOR": editor(tmp_path, r"\A.*$", ""),
                                                                "VISUAL": ""})
    one_line_error(emptied, "empty text")
    one_line_error(run(home, "memories", "edit", mid, code=1, env={"EDITOR": "false", "VISUAL": ""}),
                   "exited with status 1")
    one_line_error(run(home, "memories", "edit", mid, code=1, env={"EDITOR": "/no/such/editor", "VISUAL": ""}),
                   "cannot start the editor")
    assert as_json(run(home, "memories", "show", mid, "--json"))["text"] == "Lives in Lisbon"


def test_edit_with_options(home: Path, seeded: dict[str, str]) -> None:
    mid = seeded["Is vegetarian"]
    updated = as_json(run(home, "memories", "edit", mid, "--text", "Is vegan", "--reason", "changed diet",
                          "--importance", "0.9", "--json"))
    assert updated["text"] == "Is vegan" and updated["importance"] == 0.9
    assert as_json(run(home, "memories", "history", mid, "--json"))[-1]["reason"] == "changed diet"
    assert as_json(run(home, "memories", "edit", mid, "--pin", "--json"))["pinned"] is True
    clash = run(home, "memories", "edit", mid, "--text", "Lives in Berlin", code=1)
    one_line_error(clash, "already says that")


def test_delete_invalidate_restore_history(home: Path, seeded: dict[str, str]) -> None:
    mid = seeded["Has a cat called Miso"]
    run(home, "memories", "invalidate", mid, "--reason", "the cat moved out")
    assert len(as_json(run(home, "memories", "list", "--user", "alice", "--json"))) == 2
    listed = as_json(run(home, "memories", "list", "--user", "alice", "--all", "--json"))
    assert next(m for m in listed if m["id"] == mid)["invalid_at"] is not None
    run(home, "memories", "restore", mid)
    assert len(as_json(run(home, "memories", "list", "--user", "alice", "--json"))) == 3
    deleted = as_json(run(home, "memories", "delete", mid[:10], "--yes", "--json"))
    assert deleted["event"] == "DELETE"
    one_line_error(run(home, "memories", "show", mid, code=1), "was deleted", "memories history")
    events = as_json(run(home, "memories", "history", mid[:8], "--json"))  # history outlives the memory
    assert [e["event"] for e in events] == ["ADD", "INVALIDATE", "RESTORE", "DELETE"]
    assert events[1]["reason"] == "the cat moved out"
    assert "deleted" in run(home, "memories", "history", mid).stderr


# ---- instructions and rules ------------------------------------------------------------------------------------
def test_instructions_set_show_edit(home: Path, tmp_path: Path) -> None:
    one_line_error(run(home, "instructions", "set", "--user", "alice", code=2), "--about")
    p = as_json(run(home, "instructions", "set", "--user", "alice", "--about", "A nurse in Berlin", "--style",
                    "Be brief", "--json"))
    assert (p["about_user"], p["response_style"], p["version"]) == ("A nurse in Berlin", "Be brief", 1)
    env = {"EDITOR": editor(tmp_path, "Be brief", "Be brief and warm"), "VISUAL": ""}
    run(home, "instructions", "edit", "--user", "alice", env=env)
    p = as_json(run(home, "instructions", "show", "--user", "alice", "--json"))
    assert (p["about_user"], p["response_style"]) == ("A nurse in Berlin", "Be brief and warm")
    # the editor destroys a header: a clear error, nothing changed
    broken = {"EDITOR": editor(tmp_path, r"^\[about_user\]$", "about:", "broken.py"), "VISUAL": ""}
    one_line_error(run(home, "instructions", "edit", "--user", "alice", code=1, env=broken), "header")
    assert as_json(run(home, "instructions", "show", "--user", "alice", "--json"))["version"] == 2
    assert "No changes" in run(home, "instructions", "edit", "--user", "alice",
                               env={"EDITOR": "true", "VISUAL": ""}).stderr
    shown = run(home, "instructions", "show", "--user", "alice").stdout
    assert "About the user" in shown and "Be brief and warm" in shown
    run(home, "instructions", "set", "--user", "alice", "--about", "")
    assert as_json(run(home, "instructions", "show", "--user", "alice", "--json"))["about_user"] == ""


def test_rules_lifecycle(home: Path, mem: Any) -> None:
    added = as_json(run(home, "rules", "add", "--user", "alice", "Never use capital letters", "--json"))
    assert added["checker"] == "lowercase" and added["status"] == "active"
    custom = as_json(run(home, "rules", "add", "--user", "alice", "Keep it short", "--checker", "max_words",
                         "-p", "n=30", "--json"))
    assert custom["params"] == {"n": 30}
    assert "Already a rule" in run(home, "rules", "add", "--user", "alice", "never use capital letters").stdout
    one_line_error(run(home, "rules", "add", "--user", "alice", "x", "--checker", "nope", code=2))
    one_line_error(run(home, "rules", "add", "--user", "alice", "x", "-p", "novalue", code=2), "KEY=VALUE")
    proposal = mem.rules("alice").add("Answer in French", proposed=True, source="extracted", actor="llm")

    rules = as_json(run(home, "rules", "list", "--user", "alice", "--json"))
    assert [r["status"] for r in rules] == ["active", "active", "proposed"]
    assert "Answer in French" in run(home, "rules", "list", "--user", "alice").stdout
    assert as_json(run(home, "rules", "accept", "--user", "alice", proposal.id[:6], "--json"))["status"] == "active"
    run(home, "rules", "disable", "--user", "alice", custom["id"])
    assert not as_json(run(home, "rules", "list", "--user", "alice", "--json"))[1]["enabled"]
    run(home, "rules", "enable", "--user", "alice", custom["id"])
    run(home, "rules", "remove", "--user", "alice", added["id"][:8])
    assert len(as_json(run(home, "rules", "list", "--user", "alice", "--json"))) == 2
    undone = as_json(run(home, "rules", "undo", "--user", "alice", "--json"))
    assert "Never use capital letters" in [r["text"] for r in undone["rules"]]
    versions = as_json(run(home, "rules", "history", "--user", "alice", "--json"))
    assert versions[-1]["reason"].startswith("undo") and versions[-1]["actor"] == "cli"
    assert "undo: restored version" in run(home, "rules", "history", "--user", "alice").stdout
    # a rule of another user is not found under alice
    other = mem.rules("bob").add("Use emoji")
    one_line_error(run(home, "rules", "remove", "--user", "alice", other.id, code=1), "no rule")
    rejected = mem.rules("alice").add("Be sarcastic", proposed=True, source="extracted", actor="llm")
    run(home, "rules", "reject", "--user", "alice", rejected.id)
    assert "Be sarcastic" not in [r["text"] for r in as_json(run(home, "rules", "list", "--user", "alice", "--json"))]


# ---- forget, export, import ---------------------------------------------------------------------------------
def test_forget_asks_first(home: Path, seeded: dict[str, str], mem: Any) -> None:
    mem.set_instructions("alice", about_user="A nurse")
    refused = run(home, "forget", "--user", "alice", code=1, input="n\n")
    assert "3 memories" in refused.stderr and "Delete it for good?" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: nothing deleted")
    assert len(mem.get_all("alice")) == 3
    assert run(home, "forget", "--user", "alice", code=1).exit_code == 1  # no answer (EOF) is no
    done = run(home, "forget", "--user", "alice", input="y\n")
    assert "deleted 3 memories, 3 history events, 1 profile" in done.stdout
    assert mem.get_all("alice") == [] and mem.profile("alice").about_user == ""
    assert len(mem.get_all("bob")) == 1
    assert "Nothing is stored" in run(home, "forget", "--user", "alice", "--yes").stderr
    counts = as_json(run(home, "forget", "--user", "bob", "--yes", "--json"))
    assert counts["memories"] == 1


def test_export_import_roundtrip(home: Path, seeded: dict[str, str], mem: Any, tmp_path: Path) -> None:
    mem.rules("alice").add("Never use capital letters")
    exported = run(home, "export", "--user", "alice")
    data = json.loads(exported.stdout)
    assert data["format"] == "memstore.export" and len(data["memories"]) == 3
    out = tmp_path / "alice.json"
    run(home, "export", "--user", "alice", "-o", str(out))
    assert json.loads(out.read_text())["user_id"] == "alice"
    one_line_error(run(home, "export", "--user", "nobody", code=1), "nothing is stored")

    other = tmp_path / "other"
    counts = as_json(run(other, "import", str(out), "--json"))
    assert counts["memories"] == 3 and counts["rules"] == 1
    again = as_json(run(other, "import", str(out), "--json"))
    assert again["memories"] == 0  # existing records are kept, not duplicated
    hits = as_json(run(other, "memories", "search", "--user", "alice", "what do I eat", "--json"))
    assert hits and hits[0]["text"] == "Is vegetarian"  # imported memories are indexed
    assert "Imported" in run(tmp_path / "third", "import", "-", input=exported.stdout).stdout


def test_corrupted_import_changes_nothing(home: Path, seeded: dict[str, str], mem: Any, tmp_path: Path) -> None:
    data = mem.export("alice")
    good = json.dumps(data)
    before = mem.export("carol")

    truncated = tmp_path / "truncated.json"
    truncated.write_text(good[: len(good) // 2])
    one_line_error(run(home, "import", str(truncated), code=1), "not valid JSON", "nothing was imported")

    # valid JSON, one bad record among good ones: all or nothing
    bad = {**data, "user_id": "carol"}
    bad["memories"] = [{**m, "id": f"new{i}", "user_id": "carol"} for i, m in enumerate(data["memories"])]
    bad["memories"][2]["text"] = 42
    for section in ("events", "profiles", "profile_versions", "rules", "turns", "feedback", "compliance"):
        bad[section] = []
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    one_line_error(run(home, "import", str(path), code=1), "memories[2]", "nothing was imported")
    assert mem.export("carol")["memories"] == before["memories"] == []

    for name, content, needle in (("other.json", '{"format": "something", "version": 1, "user_id": "x"}',
                                   "not a memstore export"),
                                  ("list.json", "[1, 2]", "not a memstore export"),
                                  ("empty.json", "", "empty"),
                                  ("binary.json", "\udcff", "cannot read")):
        f = tmp_path / name
        f.write_bytes(content.encode("utf-8", "surrogateescape"))
        one_line_error(run(home, "import", str(f), code=1), needle)
    one_line_error(run(home, "import", str(tmp_path / "missing.json"), code=1), "no such file")
    assert len(mem.get_all("alice")) == 3


# ---- the outbox, feedback, doctor, reindex -----------------------------------------------------------------
def test_turns_failed_then_retried(home: Path, llm: ScriptedLLM) -> None:
    llm.default_reply = "this is not JSON"
    env = {"MEMSTORE_LLM_MODEL": "openai/scripted", "MEMSTORE_LLM_API_BASE": llm.base_url,
           "MEMSTORE_LLM_API_KEY": "x", "MEMSTORE_LLM_MAX_RETRIES": "0"}
    failed = run(home, "memories", "add", "--user", "alice", "--infer", "I live in Berlin", code=1, env=env)
    one_line_error(failed, "valid JSON")
    turns = as_json(run(home, "turns", "list", "--failed", "--json"))
    assert len(turns) == 1 and turns[0]["status"] == "failed" and "JSON" in turns[0]["error"]
    table = run(home, "turns", "list").stdout
    assert "failed" in table and "I live in" in table
    shown = as_json(run(home, "turns", "show", turns[0]["id"][:8], "--json"))
    assert shown["messages"][0]["content"] == "I live in Berlin"
    assert "error" in run(home, "turns", "show", turns[0]["id"]).stdout

    # still broken: retry says so and exits 1
    still = as_json(run(home, "turns", "retry", "--json", code=1, env=env))
    assert still["retried"] == 1 and still["still_failed"] == [turns[0]["id"]]
    # the offline extractor gets it done
    ok = as_json(run(home, "turns", "retry", turns[0]["id"][:8], "--extractor", "heuristic", "--json"))
    assert ok["retried"] == 1 and ok["still_failed"] == []
    assert [m["text"] for m in as_json(run(home, "memories", "list", "--user", "alice", "--json"))] == \
        ["Lives in Berlin"]
    assert as_json(run(home, "turns", "list", "--failed", "--json")) == []
    assert as_json(run(home, "turns", "list", "--status", "done", "--json"))[0]["attempts"] == 1
    one_line_error(run(home, "turns", "list", "--status", "weird", code=2), "--status")


def test_turns_waiting_in_the_spool_are_listed(home: Path) -> None:
    """A turn recorded while the database was locked waits in a spool file until a worker moves it into the
    outbox: ``turns list`` shows it meanwhile (status spooled), with the user filter and newest first."""
    import sqlite3

    from memstore.memory import Memory
    from memstore.storage.db import short_waits
    from memstore.storage.embed import HashEmbedder

    m = Memory(config=MemoryConfig(home=home), embedder=HashEmbedder())
    m.outbox.record("alice", "default", [{"role": "user", "content": "first, in the outbox"}], "ok")
    lock = sqlite3.connect(home / "memstore.db", timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with short_waits(0.05):
            for user in ("alice", "bob"):
                m.outbox.record(user, "default", [{"role": "user", "content": f"{user}, in the spool"}], "ok",
                                spool=True)
    finally:
        lock.rollback()
        lock.close()
    listed = as_json(run(home, "turns", "list", "--json"))
    assert [(t["user_id"], t["status"]) for t in listed] == [("bob", "spooled"), ("alice", "spooled"),
                                                             ("alice", "pending")]
    assert [t["user_id"] for t in as_json(run(home, "turns", "list", "--status", "spooled", "--user", "alice",
                                              "--json"))] == ["alice"]
    assert [t["status"] for t in as_json(run(home, "turns", "list", "--status", "pending", "--json"))] == ["pending"]
    assert "spooled" in run(home, "turns", "list").stdout and "spool" in run(home, "turns", "list", "--help").stdout
    assert m.outbox.replay_spool() == 2
    assert {t["status"] for t in as_json(run(home, "turns", "list", "--json"))} == {"pending"}


def test_memories_add_infer_with_rules_extractor(home: Path) -> None:
    ops = as_json(run(home, "memories", "add", "--user", "alice", "--infer", "--extractor", "heuristic",
                      "I live in Berlin and I'm vegetarian.", "--json"))
    assert sorted(o["text"] for o in ops) == ["Is vegetarian", "Lives in Berlin"]


def test_feedback_export(home: Path, mem: Any, tmp_path: Path) -> None:
    from memstore.instructions import feedback

    prompt = [{"role": "user", "content": "Write a haiku"}]
    mem.outbox.record("alice", "default", prompt, "Good haiku", response_id="r1", extract=False)
    mem.outbox.record("alice", "default", prompt, "Bad haiku", response_id="r2", extract=False)
    feedback.compare(mem.engine, "r1", "r2", preferred="r1")
    out = tmp_path / "pairs.jsonl"
    result = run(home, "feedback", "export", "--format", "openai-dpo", "--user", "alice", "-o", str(out))
    assert "1 preference pair" in result.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert pairs[0]["preferred_output"][0]["content"] == "Good haiku"
    assert pairs[0]["non_preferred_output"][0]["content"] == "Bad haiku"
    stdout_pairs = run(home, "feedback", "export").stdout.splitlines()
    assert json.loads(stdout_pairs[0])["input"]["messages"] == prompt
    one_line_error(run(home, "feedback", "export", "--format", "csv", code=2), "openai-dpo")


def test_doctor_finds_an_index_out_of_sync_and_reindex_fixes_it(home: Path, seeded: dict[str, str],
                                                                  mem: Any) -> None:
    report = as_json(run(home, "doctor", "--json"))
    assert report["ok"] and report["stats"]["memories"] == 4 and report["versions"]["typer"]
    assert {c["check"]: c["status"] for c in report["checks"]}["index"] == "ok"
    assert "in sync" in run(home, "doctor").stdout
    mem.store.index.delete([seeded["Lives in Berlin"]])  # a vector lost behind SQL's back
    broken = run(home, "doctor", "--json", code=1)
    index = next(c for c in as_json(broken)["checks"] if c["check"] == "index")
    assert index["status"] == "fail" and "memstore reindex" in index["detail"]
    assert as_json(run(home, "reindex", "--json"))["indexed"] == 4
    assert as_json(run(home, "doctor", "--json"))["ok"]
    assert "Reindexed 4 memories" in run(home, "reindex").stdout


# ---- chat and demo -----------------------------------------------------------------------------------------------
def test_chat_repl_shows_what_it_learned(home: Path) -> None:
    from memstore.cli.demo import scripted_reply

    with ScriptedLLM(reply_fn=scripted_reply) as llm:
        lines = "Hi! I live in Berlin and I'm vegetarian.\n/memories\n/help\nPlease never use capital letters.\n"
        result = run(home, "chat", "--user", "alice", "--model", "scripted", "--base-url", llm.base_url,
                     "--api-key", "x", input=lines)
    out = result.stdout
    assert "Nice to meet you!" in out
    assert "+ Lives in Berlin" in out and "+ Is vegetarian" in out and "+ rule: Never use capital letters" in out
    assert "/exit" in out  # the /help text
    recs = as_json(run(home, "memories", "list", "--user", "alice", "--json"))
    assert {r["text"] for r in recs} == {"Lives in Berlin", "Is vegetarian"}


def test_chat_model_errors_keep_the_session(home: Path) -> None:
    from memstore.testing import ScriptedReply

    with ScriptedLLM() as llm:
        llm.enqueue(ScriptedReply(status=400, error="model is sulking"), "fine now")
        result = run(home, "chat", "--user", "alice", "--model", "scripted", "--base-url", llm.base_url,
                     "--api-key", "x", "--extractor", "heuristic", input="hello\nhello again\n/exit\n")
    assert "sulking" in result.stderr and "fine now" in result.stdout


@pytest.mark.slow
def test_demo_offline(home: Path) -> None:
    out = run(home, "demo", "--home", str(home), env={"COLUMNS": "200"}).stdout
    assert "scripted local model" in out and "llm extractor" in out
    assert "- Lives in Berlin" in out and "+ Lives in Lisbon" in out and "+ rule: Never use capital letters" in out
    assert "INVALIDATE" in out and "moved from Berlin to Lisbon" in out
    assert "<memstore_context>" in out and "Lives in Lisbon</memory>" in out
    recs = as_json(run(home, "memories", "list", "--user", "demo", "--all", "--json"))
    berlin = next(r for r in recs if r["text"] == "Lives in Berlin")
    assert berlin["invalid_at"] and berlin["superseded_by"] == next(r["id"] for r in recs if r["text"] ==
                                                                    "Lives in Lisbon")
    one_line_error(run(home, "demo", "--home", str(home), code=1), "already has data")


def test_demo_with_the_rules_extractor(_isolated_home: Path) -> None:
    result = runner.invoke(app, ["demo", "--extractor", "heuristic"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "heuristic extractor" in out and "Lives in Berlin" in out and "the next request" in out
    assert "temporary" in out  # the demo never writes into the user's store
    assert not _isolated_home.exists()


# ---- lazily mounted sub-apps -----------------------------------------------------------------------------------
def test_missing_extensions_say_not_available(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LAZY, "eval", ("memstore.no_such_module", "eval_app", "Benchmarks.", "pip install x"))
    one_line_error(run(home, "eval", "locomo", "--limit", "3", code=1), "memstore eval is not available",
                   "not part of this installation")
    monkeypatch.setitem(LAZY, "serve", ("json", "serve", "Proxy.", "pip install 'memstore[server]'"))
    one_line_error(run(home, "serve", code=1), "memstore serve is not available", "has no 'serve'")


def test_extensions_are_loaded_on_use(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memstore.cli.common import state

    seen: dict[str, Any] = {}
    sub = typer.Typer()

    @sub.command()
    def go(name: str, limit: int = 1) -> None:
        seen.update(name=name, limit=limit, home=state().home)

    @sub.command()
    def boom() -> None:
        raise RuntimeError("kaput")

    def serve(port: int = 8000) -> None:
        seen["port"] = port

    fake = types.ModuleType("fake_ext")
    fake.app, fake.serve = sub, serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_ext", fake)
    monkeypatch.setitem(LAZY, "eval", ("fake_ext", "app", "Benchmarks.", ""))
    monkeypatch.setitem(LAZY, "serve", ("fake_ext", "serve", "Proxy.", ""))
    run(home, "eval", "go", "locomo", "--limit", "3")
    assert seen == {"name": "locomo", "limit": 3, "home": home}
    assert "boom" in run(home, "eval", "--help").stdout
    crashed = runner.invoke(app, ["--home", str(home), "eval", "boom"])
    assert crashed.exit_code == 1 and "Traceback" not in crashed.output
    one_line_error(crashed, "unexpected RuntimeError: kaput", "MEMSTORE_DEBUG")
    run(home, "serve", "--port", "9999")
    assert seen["port"] == 9999
    one_line_error(run(home, "eval", "go", code=2), "Missing argument 'NAME'", "memstore eval go --help")


def test_lazy_imports_keep_help_fast(home: Path) -> None:
    code = ("import sys\nfrom memstore.cli.app import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = ('sqlalchemy', 'numpy', 'torch', 'litellm', 'chromadb', 'sentence_transformers', "
            "'memstore.memory', 'memstore.cli.eval', 'memstore.cli.serve')\n"
            "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    import subprocess

    for args, allowed in ((["--help"], set()), (["memories", "--help"], set()),
                          (["--home", str(home), "users", "list"], {"sqlalchemy", "numpy", "memstore.memory"})):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])
        loaded = set(json.loads(proc.stderr.strip().splitlines()[-1].replace("'", '"')))
        assert loaded <= allowed, (args, loaded)


def test_hosted_model_without_a_key_is_a_clear_error(home: Path) -> None:
    env = {"OPENAI_API_KEY": ""}
    one_line_error(run(home, "demo", "--model", "gpt-4.1-mini", code=1, env=env), "needs an API key",
                   "OPENAI_API_KEY")
    one_line_error(run(home, "chat", "--user", "alice", code=1, env=env), "OPENAI_API_KEY")
    one_line_error(run(home, "demo", "--extractor", "bogus", code=2), "llm or heuristic")
