"""MemoryClient behaves like openai.OpenAI where an application would notice: where extraction goes, bad input,
a locked database, and a script that exits right after its request."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from memstore import MemoryClient
from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError, MemstoreError
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder
from memstore.testing import ScriptedLLM

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def learns(req: Any) -> str:
    """Chat replies "ok"; the extraction call (its system prompt talks of long-term memory) learns the diet."""
    if "long-term memory" in req.system_text:
        ops = [{"op": "ADD", "text": "Is vegetarian", "kind": "preference", "turn": 0}] \
            if "vegetarian" in req.last_user_text else []
        return json.dumps({"operations": ops, "instructions": []})
    return "ok"


def extraction_calls(llm: ScriptedLLM) -> list[Any]:
    return [r for r in llm.requests if "long-term memory" in r.system_text]


# ---- 1. extraction goes where the application's chat goes -----------------------------------------------------

def test_extraction_uses_the_clients_own_server_key_and_model(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with ScriptedLLM(reply_fn=learns) as chat, ScriptedLLM(reply_fn=learns) as other:
        mem = Memory(config=MemoryConfig(home=tmp_path / "a"), embedder=HashEmbedder())
        with MemoryClient(memory=mem, base_url=chat.base_url, api_key="app-key") as client:
            client.chat.completions.create(model="llama3.2", user="alice",
                                           messages=[{"role": "user", "content": "I am vegetarian, by the way."}])
            assert client.flush(20)
        (call,) = extraction_calls(chat)
        assert call.headers["authorization"] == "Bearer app-key" and call.model == "llama3.2"
        assert other.requests == []
        assert [m.text for m in mem.get_all("alice")] == ["Is vegetarian"]

        # llm_api_base (MEMSTORE_LLM_API_BASE) names another endpoint: extraction goes there, chat does not
        chat.clear()
        cfg = MemoryConfig(home=tmp_path / "b", llm_api_base=other.base_url, llm_model="openai/extractor",
                           llm_api_key="extract-key")
        mem = Memory(config=cfg, embedder=HashEmbedder())
        with MemoryClient(memory=mem, base_url=chat.base_url, api_key="app-key") as client:
            client.chat.completions.create(model="llama3.2", user="alice",
                                           messages=[{"role": "user", "content": "I am vegetarian, by the way."}])
            assert client.flush(20)
        assert extraction_calls(chat) == [] and len(chat.requests) == 1
        (call,) = extraction_calls(other)
        assert call.headers["authorization"] == "Bearer extract-key" and call.model == "extractor"


def test_a_configured_extraction_model_is_kept_at_the_clients_server(tmp_path: Path) -> None:
    with ScriptedLLM(reply_fn=learns) as chat:
        mem = Memory(config=MemoryConfig(home=tmp_path / "s", llm_model="small-extractor"), embedder=HashEmbedder())
        with MemoryClient(memory=mem, base_url=chat.base_url, api_key="app-key") as client:
            client.chat.completions.create(model="big-chat", user="alice",
                                           messages=[{"role": "user", "content": "I am vegetarian, by the way."}])
            assert client.flush(20)
        (call,) = extraction_calls(chat)
        assert call.model == "small-extractor"


# ---- 3. bad input is refused before any model call -----------------------------------------------------------

BAD_MESSAGES = {
    "a string": "hello",
    "None": None,
    "an int": 5,
    "a dict": {"role": "user", "content": "hi"},
    "empty": [],
    "a string item": ["hi"],
    "no role": [{"content": "hi"}],
    "unknown role": [{"role": "wizard", "content": "hi"}],
    "int content": [{"role": "user", "content": 123}],
    "int parts": [{"role": "user", "content": [1, 2]}],
    "null user content": [{"role": "user", "content": None}],
}


@pytest.mark.parametrize("messages", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
def test_bad_messages_raise_openais_bad_request_before_any_model_call(tmp_path: Path, llm: ScriptedLLM,
                                                                      messages: Any) -> None:
    mem = Memory(config=MemoryConfig(home=tmp_path / "s", extractor="heuristic"), embedder=HashEmbedder())
    with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", user="alice", messages=messages)
        err = info.value
        assert isinstance(err, InvalidInputError) and isinstance(err, MemstoreError)
        assert err.status_code == 400 and err.body["type"] == "invalid_request_error"  # type: ignore[index]
        assert llm.requests == [] and mem.outbox.counts() == {}


@pytest.mark.parametrize("bad", [{"model": None}, {"model": ""}, {"extra_body": {"memory": {"colour": 1}}}],
                         ids=["model None", "model empty", "unknown memory option"])
def test_bad_arguments_raise_bad_request_too(tmp_path: Path, llm: ScriptedLLM, bad: dict[str, Any]) -> None:
    mem = Memory(config=MemoryConfig(home=tmp_path / "s", extractor="heuristic"), embedder=HashEmbedder())
    with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as client:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(**{"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                              **bad})
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="m", input=5)  # type: ignore[arg-type]
        assert llm.requests == []


# ---- 5. a locked database does not stall the request path ----------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def test_a_locked_database_costs_a_request_at_most_a_short_wait_and_the_turn_is_kept(tmp_path: Path,
                                                                                     llm: ScriptedLLM) -> None:
    cfg = MemoryConfig(home=tmp_path / "s", extractor="heuristic", request_db_wait=0.5)
    mem = Memory(config=cfg, embedder=HashEmbedder())
    mem.add("I like green tea", user_id="alice", infer=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cfg.resolved_home() / "memstore.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False) as client:
            started = time.monotonic()
            resp = client.chat.completions.create(model="m", user="alice",
                                                  messages=[{"role": "user", "content": "what do I drink?"}])
            assert time.monotonic() - started < 10  # not the 30 s busy timeout
            assert resp.choices[0].message.content == "ok"
            turn_id = resp.memstore.turn_id
            assert turn_id and resp.memstore.failed_open is None
            assert mem.outbox.pending({turn_id}) == 1  # waiting in the spool, counted as pending
            assert mem.outbox.replay_spool() == 0  # still locked: it stays in the spool
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert mem.outbox.claim("test-worker")[0].id == turn_id  # the worker's next claim brings it in
    assert mem.outbox.get(turn_id).messages[-1]["content"] == "what do I drink?"
    assert mem.outbox.spooled() == []


def test_strict_still_raises_when_the_database_is_down(tmp_path: Path, llm: ScriptedLLM) -> None:
    mem = Memory(config=MemoryConfig(home=tmp_path / "s", extractor="heuristic"), embedder=HashEmbedder())
    with sqlite3.connect(mem.config.resolved_home() / "memstore.db") as db:
        db.execute("DROP TABLE turns")
    with MemoryClient(memory=mem, base_url=llm.base_url, api_key="k", start_worker=False, strict=True) as client, \
            pytest.raises(MemstoreError):
        client.chat.completions.create(model="m", user="alice", messages=[{"role": "user", "content": "hi"}])


# ---- 8. a script that exits right after its request -----------------------------------------------------------

SCRIPT = """
import sys
from memstore import MemoryClient
from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder

mem = Memory(config=MemoryConfig(home=sys.argv[1]), embedder=HashEmbedder())
client = MemoryClient(memory=mem, base_url=sys.argv[2], api_key="k")
resp = client.chat.completions.create(model="m", user="alice",
                                      messages=[{"role": "user", "content": "I am vegetarian, by the way."}])
print(resp.memstore.turn_id, flush=True)
"""


def test_a_script_that_exits_right_after_a_request_leaves_its_turn_done(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with ScriptedLLM(reply_fn=learns) as llm:
        # the extraction call is slow, so the script reaches its end while the turn is still being extracted
        llm.reply_fn = lambda req: (time.sleep(0.5), learns(req))[1]
        env = {**os.environ, "MEMSTORE_CLOSE_TIMEOUT": "60"}  # generous: a loaded CI box imports litellm slowly
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(home), llm.base_url],
                             capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert out.returncode == 0, out.stderr
        turn_id = out.stdout.strip().splitlines()[-1]
    mem = Memory(config=MemoryConfig(home=home), embedder=HashEmbedder())
    assert mem.outbox.get(turn_id).status == "done"
    assert [m.text for m in mem.get_all("alice")] == ["Is vegetarian"]
