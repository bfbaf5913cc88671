"""The CLI does what its help and docs/cli.md say, for the cases issue 18 found it did not: the global --home
reaches `serve` and `keys`, usage errors exit 2, a bad MEMSTORE_* variable is named, `memories delete` asks
like `forget`, `keys` speaks JSON with ISO 8601 times, help shows meaningful placeholders at 80 columns, and
`memstore chat` says when memstore could not learn from a turn."""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from memstore.cli.app import LAZY, app, load_lazy
from memstore.config import MemoryConfig
from memstore.testing import ScriptedLLM

runner = CliRunner()


def run(*args: str, code: int = 0, input: str | None = None, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, list(args), input=input, env=env)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.output
    return result


def one_line_error(result: Any, *needles: str) -> str:
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store for --home; HOME moves too, so a command that ignored --home would write where we can see it."""
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("MEMSTORE_HOME", raising=False)
    return tmp_path / "store"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`memstore serve` up to the point it would start uvicorn: the settings it would serve with."""
    import memstore.adapters.server.app as server_app

    calls: list[Any] = []
    monkeypatch.setattr(server_app, "run_server", lambda settings, **kw: calls.append((settings, kw)))
    return calls


# ---- --home -----------------------------------------------------------------------------------------------
def test_global_home_reaches_keys_and_serve(home: Path, tmp_path: Path, served: list[Any]) -> None:
    from memstore.adapters.server.keys import open_keys

    key = run("--home", str(home), "keys", "create", "--name", "app").stdout.strip()
    assert key.startswith("msk_")
    assert [k.name for k in open_keys(home=str(home)).list()] == ["app"]
    listed = json.loads(run("--home", str(home), "keys", "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["app"]
    run("--home", str(home), "serve", "--port", "9")
    assert served[0][0].home == str(home)
    assert not (tmp_path / "user-home" / ".memstore").exists()  # nothing went to ~/.memstore
    own = tmp_path / "own"
    run("--home", str(home), "serve", "--home", str(own))  # the command's own --home wins
    assert served[1][0].home == str(own)


# ---- exit codes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("serve", "--extractor", "bogus"),
    ("serve", "--log-level", "loud"),
    ("serve", "--rate-burst", "0.5"),
    ("serve", "--namespace", " "),
    ("serve", "--port", "0"),
    ("serve", "--threads", "0"),
    ("memories", "list", "--user", "alice", "--kind", "bogus"),
    ("memories", "add", "--user", "alice", "--kind", "bogus", "I like tea"),
    ("memories", "list", "--user", ""),
    ("memories", "list", "--user", "alice", "--namespace", " "),
    ("forget", "--user", "alice", "--namespace", ""),
    ("rules", "add", "--user", "alice", "--checker", "nonsense", "be brief"),
    ("rules", "add", "--user", "alice", "--checker", "max_words", "--param", "n=lots", "be brief"),
    ("keys", "create", "--name", " "),
])
def test_usage_errors_exit_2(home: Path, served: list[Any], args: tuple[str, ...]) -> None:
    result = run("--home", str(home), *args, code=2)
    one_line_error(result)
    assert served == []


def test_bad_environment_variable_is_named(home: Path, served: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from memstore.errors import ConfigError

    env = {"MEMSTORE_TOKEN_BUDGET": "lots"}
    for args in (("users", "list"), ("serve",)):
        result = run("--home", str(home), *args, code=1, env=env)
        one_line_error(result, "MEMSTORE_TOKEN_BUDGET='lots': must be an integer")
    assert served == []
    monkeypatch.setenv("MEMSTORE_EXTRACTION_BATCH_SIZE", "-2")
    with pytest.raises(ConfigError, match="MEMSTORE_EXTRACTION_BATCH_SIZE='-2': must be a positive integer"):
        MemoryConfig(home=home)
    with pytest.raises(ConfigError, match=r"token_budget='lots': must be an integer"):  # an argument is named too
        MemoryConfig(home=home, token_budget="lots")


# ---- memories delete asks -----------------------------------------------------------------------------
def test_memories_delete_asks_like_forget(home: Path) -> None:
    from memstore.memory import Memory

    mem = Memory(config=MemoryConfig(home=home))
    ids = [mem.add(t, "alice", infer=False)[0].id for t in ("Lives in Berlin", "Has a cat", "Plays chess")]
    base = ("--home", str(home), "memories", "delete")
    refused = run(*base, ids[0], code=1, input="n\n")
    assert "Delete it?" in refused.stderr and "Lives in Berlin" in refused.stderr
    assert refused.stderr.strip().endswith("error: nothing deleted (answer y, or pass --yes)")
    no_answer = run(*base, ids[0], code=1)  # stdin is not a terminal and says nothing
    assert no_answer.stderr.strip().splitlines()[-1] == (
        "error: nothing deleted: stdin is not a terminal, so nobody could answer; pass --yes to go ahead")
    assert len(mem.get_all("alice")) == 3
    run(*base, ids[0], input="y\n")
    run(*base, ids[1], "--yes")
    assert json.loads(run(*base, ids[2], "-y", "--json").stdout)["event"] == "DELETE"
    assert mem.get_all("alice") == []


# ---- keys JSON ----------------------------------------------------------------------------------------
def test_keys_json_has_iso_timestamps_and_revoke_speaks_json(home: Path) -> None:
    made = json.loads(run("--home", str(home), "keys", "create", "--name", "svc", "--json").stdout)
    revoked = json.loads(run("--home", str(home), "keys", "revoke", made["prefix"], "--json").stdout)
    assert revoked["id"] == made["id"] and revoked["revoked_at"] is not None and "key" not in revoked
    listed = json.loads(run("--home", str(home), "keys", "list", "--json").stdout)
    for row in (made, revoked, *listed):
        for field in ("created_at", "revoked_at", "last_used_at"):
            if row.get(field) is not None:
                assert "T" in row[field] and datetime.fromisoformat(row[field]).tzinfo is not None, row[field]
    assert listed[0]["revoked_at"] == revoked["revoked_at"]
    gone = run("--home", str(home), "keys", "revoke", "nope", "--json", code=1)
    one_line_error(gone, "no proxy key 'nope'")


# ---- help -----------------------------------------------------------------------------------------------
def _commands() -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk([*path, name], sub)

    root = typer.main.get_command(app)
    for name in root.list_commands(None):  # type: ignore[arg-type]
        if name in LAZY:
            try:
                walk([name], load_lazy(name))
            except Exception:  # an extension that is not installed here
                continue
        else:
            walk([name], root.commands[name])  # type: ignore[attr-defined]
    return out


def test_help_shows_meaningful_placeholders_and_whole_option_names() -> None:
    env = {"COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    checked = 0
    for path, cmd in _commands():
        result = runner.invoke(app, [*path, "--help"], env=env)
        assert result.exit_code == 0, (path, result.output)
        text = result.stdout
        assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", text), (path, text)
        assert "…" not in "".join(line for line in text.splitlines() if line.lstrip("│ ").startswith("-")), text
        for p in getattr(cmd, "params", []):
            if getattr(p, "param_type_name", "") == "option" and not p.hidden:
                for opt in [*p.opts, *p.secondary_opts]:
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (path, opt, text)
                if getattr(p, "is_flag", False):
                    assert p.metavar == "", (path, p.name)
                else:
                    assert p.metavar and (p.metavar.upper() == p.metavar or "|" in p.metavar), (path, p.name)
        checked += 1
    assert checked > 30


# ---- chat -------------------------------------------------------------------------------------------------
def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chat_warns_when_memstore_could_not_learn(home: Path) -> None:
    dead = f"http://127.0.0.1:{_dead_port()}/v1"
    env = {"MEMSTORE_LLM_MODEL": "openai/extractor", "MEMSTORE_LLM_API_BASE": dead, "MEMSTORE_LLM_API_KEY": "k",
           "MEMSTORE_LLM_MAX_RETRIES": "0", "MEMSTORE_LLM_TIMEOUT": "5"}
    with ScriptedLLM() as llm:
        result = run("--home", str(home), "chat", "--user", "alice", "--model", "scripted", "--base-url",
                     llm.base_url, "--api-key", "x", input="I live in Porto and I am vegetarian.\n/exit\n", env=env)
    warnings = [line for line in result.stderr.splitlines() if "could not learn" in line]
    assert len(warnings) == 1, result.stderr
    assert f"unreachable at {dead}" in warnings[0] and "MEMSTORE_LLM_API_BASE" in warnings[0]
    assert "memstore turns retry --user alice" in warnings[0]
    with ScriptedLLM() as llm:  # a working extraction model: no warning
        fine = run("--home", str(home), "chat", "--user", "bob", "--model", "scripted", "--base-url", llm.base_url,
                   "--api-key", "x", "--extractor", "heuristic", input="I live in Porto.\n/exit\n")
    assert "could not learn" not in fine.stderr
