"""memstore serve under bad input, broken upstreams, a failing memory layer and failing extraction (issue 18).

In-process (starlette's TestClient, a HashEmbedder) for the request checks and the upstream answers that are
no completion; a real server process for what only shows in its log: a keyless start, client disconnects and
extraction failures."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from memstore.adapters.server.app import create_app
from memstore.adapters.server.keys import open_keys
from memstore.adapters.server.state import ServerSettings
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from memstore.storage.embed import HashEmbedder
from memstore.testing import ScriptedLLM
from memstore.testing.server_process import ServerProcess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HI = [{"role": "user", "content": "hi"}]


def _app(home: Path, upstream: str, **kwargs: Any) -> Any:
    settings = ServerSettings(home=str(home), upstream_base_url=upstream, upstream_max_retries=0, auth=False,
                              embedder=HashEmbedder(), extractor="heuristic", worker=False, warmup=False, **kwargs)
    return create_app(settings)


@pytest.fixture
def app(tmp_path: Path, llm: ScriptedLLM) -> Iterator[TestClient]:
    with TestClient(_app(tmp_path / "store", llm.base_url), raise_server_exceptions=False) as tc:
        yield tc


def sdk(tc: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=tc, max_retries=0)


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err  # type: ignore[no-any-return]


# ---- bad requests: 400, the client's fault, in OpenAI's shape -------------------------------------------
def _msgs(*messages: Any) -> dict[str, Any]:
    return {"model": "scripted-model", "messages": list(messages), "user": "ann"}


@pytest.mark.parametrize(("body", "param", "code"), [
    (_msgs({"role": "user", "content": 123}), "messages[0].content", "invalid_type"),
    (_msgs({"role": "user", "content": {"text": "hi"}}), "messages[0].content", "invalid_type"),
    (_msgs({"role": "user", "content": ["hi"]}), "messages[0].content[0]", "invalid_type"),
    (_msgs({"role": "user", "content": [{"text": "no type"}]}), "messages[0].content[0]", "invalid_type"),
    (_msgs({"role": "user"}), "messages[0].content", "missing_required_parameter"),
    (_msgs({"role": "wizard", "content": "hi"}), "messages[0].role", "invalid_value"),
    (_msgs({"role": 7, "content": "hi"}), "messages[0].role", "invalid_type"),
    (_msgs({"content": "hi"}), "messages[0].role", "missing_required_parameter"),
    (_msgs("hi"), "messages[0]", "invalid_type"),
    (_msgs({"role": "user", "content": "ok"}, None), "messages[1]", "invalid_type"),
    ({"model": "scripted-model", "messages": {"role": "user"}}, "messages", "invalid_value"),
    ({**_msgs(*HI), "memory": {"token_budget": "lots"}}, "memory.token_budget", "invalid_type"),
    ({**_msgs(*HI), "memory": {"token_budget": -5}}, "memory.token_budget", "invalid_value"),
    ({**_msgs(*HI), "memory": {"token_budget": 0}}, "memory.token_budget", "invalid_value"),
    ({**_msgs(*HI), "memory": {"token_budget": True}}, "memory.token_budget", "invalid_type"),
    ({**_msgs(*HI), "memory": {"enabled": "yes"}}, "memory.enabled", "invalid_type"),
    ({**_msgs(*HI), "memory": {"extract": 1}}, "memory.extract", "invalid_type"),
    ({**_msgs(*HI), "memory": {"user_id": 5}}, "memory.user_id", "invalid_type"),
    ({**_msgs(*HI), "memory": {"user_id": " "}}, "memory.user_id", "invalid_value"),
    ({**_msgs(*HI), "memory": {"namespace": ["a"]}}, "memory.namespace", "invalid_type"),
    ({**_msgs(*HI), "memory": {"budget": 5}}, "memory.budget", "unknown_parameter"),
    ({**_msgs(*HI), "memory": "on"}, "memory", "invalid_type"),
])
def test_malformed_chat_fields_are_the_clients_400(app: TestClient, llm: ScriptedLLM, body: dict[str, Any],
                                                   param: str, code: str) -> None:
    err = _error(app.post("/v1/chat/completions", json=body), 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["code"] == code, err
    assert llm.requests == []  # refused before the model (or the memory layer) saw it


def test_valid_messages_of_every_role_pass(app: TestClient, llm: ScriptedLLM) -> None:
    messages = [{"role": "developer", "content": "be brief"}, {"role": "system", "content": [{"type": "text",
                                                                                             "text": "hi"}]},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    resp = app.post("/v1/chat/completions", json={"model": "scripted-model", "messages": messages, "user": "ann",
                                                  "memory": {"token_budget": 50, "enabled": True, "extract": None}})
    assert resp.status_code == 200, resp.text
    assert len(llm.requests) == 1


def test_a_deeply_nested_body_is_400_not_a_recursion_error(app: TestClient) -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert len(deep) > 20_000
    err = _error(app.post("/v1/chat/completions", content=deep, headers={"Content-Type": "application/json"}), 400)
    assert err["code"] == "invalid_json" and "nested deeper than 64" in err["message"]
    memory_api = app.post("/v1/memory/users/ann/memories", content=b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                          headers={"Content-Type": "application/json"})
    assert _error(memory_api, 400)["code"] == "invalid_json"
    fine = {"model": "scripted-model", "messages": HI, "user": "ann", "metadata": {"a": "[[[[{{{{" * 100}}
    assert app.post("/v1/chat/completions", json=fine).status_code == 200  # brackets inside strings do not count


# ---- upstream answers that are no completion: 502 ------------------------------------------------------------
class _RawUpstream:
    """An 'OpenAI-compatible' server that answers every POST with the bytes it is told to."""

    def __init__(self) -> None:
        self.body, self.content_type = b"", "application/json"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def raw_upstream() -> Iterator[_RawUpstream]:
    up = _RawUpstream()
    yield up
    up.close()


@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    (b"{}", "application/json"),
    (b"", "application/json"),
    (b'{"choices": null}', "application/json"),
    (b'{"id": "x", "object": "chat.completion", "choices": "no"}', "application/json"),
])
def test_upstream_garbage_is_502(tmp_path: Path, raw_upstream: _RawUpstream, body: bytes,
                                 content_type: str) -> None:
    raw_upstream.body, raw_upstream.content_type = body, content_type
    with TestClient(_app(tmp_path / "store", raw_upstream.base_url), raise_server_exceptions=False) as tc:
        err = _error(tc.post("/v1/chat/completions", json=_msgs(*HI)), 502)
        assert err["type"] == "upstream_error" and err["message"].startswith("upstream model error")
        assert "litellm." not in err["message"]
        with pytest.raises(openai.InternalServerError) as raised:  # what the SDK makes of it (and retries)
            sdk(tc).chat.completions.create(model="scripted-model", messages=HI)  # type: ignore[arg-type]
        assert raised.value.status_code == 502


@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    (b"{}", "application/json"),
    (b"", "text/event-stream"),
])
def test_a_stream_request_answered_with_no_stream_is_502_and_records_nothing(
        tmp_path: Path, raw_upstream: _RawUpstream, body: bytes, content_type: str) -> None:
    """Not a 200 with only ``[DONE]`` (an empty answer the client cannot tell from a real one)."""
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    raw_upstream.body, raw_upstream.content_type = body, content_type
    with TestClient(_app(tmp_path / "store", raw_upstream.base_url), raise_server_exceptions=False) as tc:
        err = _error(tc.post("/v1/chat/completions", json={**_msgs(*HI), "stream": True}), 502)
        assert err["type"] == "upstream_error" and "stream ended before its first event" in err["message"]
        with pytest.raises(openai.InternalServerError):
            next(iter(sdk(tc).chat.completions.create(model="scripted-model", messages=HI, stream=True)))
    mem = Memory(config=MemoryConfig(home=tmp_path / "store"), embedder=HashEmbedder())
    assert mem.outbox.list() == [] and mem.outbox.spooled() == []


def test_upstream_refusing_the_servers_key_is_502_not_the_clients_401(app: TestClient, llm: ScriptedLLM) -> None:
    from memstore.testing import ScriptedReply

    llm.enqueue(ScriptedReply(status=401, error="Incorrect API key provided: sk-up***"))
    with pytest.raises(openai.InternalServerError) as raised:  # not AuthenticationError: the client's key is fine
        sdk(app).chat.completions.create(model="scripted-model", messages=HI)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    body = raised.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_auth_error" and "--upstream-api-key" in body["message"]


# ---- a failing memory layer: a reason code in the header, never SQL -----------------------------------------
def _locked(statement: str) -> OperationalError:
    return OperationalError(statement, {"user_id": "ann"}, sqlite3.OperationalError("database is locked"))


def test_failed_open_header_is_a_reason_code_never_sql(app: TestClient, llm: ScriptedLLM,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    state = app.app.state.srv  # type: ignore[attr-defined]
    secret_sql = "SELECT memories.text FROM memories WHERE memories.user_id = 'ann' AND secret_column"

    def busy(*_a: Any, **_k: Any) -> Any:
        raise _locked(secret_sql)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError(f"disk I/O error while running {secret_sql}")

    for target, fn, expected in (("context", busy, "retrieval-db-busy"), ("context", broken, "retrieval-failed")):
        saved = getattr(state.memory, target)
        setattr(state.memory, target, fn)
        try:
            resp = app.post("/v1/chat/completions", json=_msgs(*HI))
        finally:
            setattr(state.memory, target, saved)
        assert resp.status_code == 200 and resp.headers["x-memstore-failed-open"] == expected
        assert all("SELECT" not in v and "secret" not in v for v in resp.headers.values()), resp.headers

    saved_record = state.memory.outbox.record
    state.memory.outbox.record = busy
    try:
        resp = app.post("/v1/chat/completions", json=_msgs(*HI))
    finally:
        state.memory.outbox.record = saved_record
    assert resp.status_code == 200 and resp.headers["x-memstore-failed-open"] == "recording-db-busy"
    assert "x-memstore-turn-id" not in resp.headers
    assert any("secret_column" in r.getMessage() for r in caplog.records)  # the detail is in the server log


def test_strict_memory_errors_do_not_leak_sql(tmp_path: Path, llm: ScriptedLLM) -> None:
    with TestClient(_app(tmp_path / "store", llm.base_url, strict=True), raise_server_exceptions=False) as tc:
        def busy(*_a: Any, **_k: Any) -> Any:
            raise _locked("SELECT secret_column FROM memories")

        tc.app.state.srv.memory.context = busy  # type: ignore[attr-defined]
        resp = tc.post("/v1/chat/completions", json=_msgs(*HI))
        assert resp.status_code >= 500 and "secret_column" not in resp.text and "SELECT" not in resp.text
        assert resp.json()["error"]["code"] == "memory_error"


def test_no_keys_401_says_how_to_create_one(tmp_path: Path, llm: ScriptedLLM) -> None:
    settings = ServerSettings(home=str(tmp_path / "store"), upstream_base_url=llm.base_url, embedder=HashEmbedder(),
                              extractor="heuristic", worker=False, warmup=False)
    with TestClient(create_app(settings)) as tc:
        for headers in ({}, {"Authorization": "Bearer msk_000000000000_" + "x" * 30}):
            err = _error(tc.post("/v1/chat/completions", json=_msgs(*HI), headers=headers), 401)
            assert f"memstore --home {tmp_path / 'store'} keys create --name NAME" in err["message"], err
        _row, key = open_keys(home=str(tmp_path / "store")).create("app")
        err = _error(tc.post("/v1/chat/completions", json=_msgs(*HI), headers={"Authorization": "Bearer msk_x"}), 401)
        assert "keys create" not in err["message"]  # keys exist: the caller's key is just wrong
        ok = tc.post("/v1/chat/completions", json=_msgs(*HI), headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200


# ---- a real server process: what its log says ------------------------------------------------------------------
def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server started with no keys, whose extraction model (MEMSTORE_LLM_API_BASE) is unreachable while its
    chat upstream works."""
    home = tmp_path_factory.mktemp("faults-home")
    dead = _dead_url()
    env = {"MEMSTORE_LLM_API_BASE": dead, "MEMSTORE_LLM_MODEL": "openai/extractor", "MEMSTORE_LLM_API_KEY": "k",
           "MEMSTORE_LLM_MAX_RETRIES": "0", "MEMSTORE_LLM_TIMEOUT": "5", "MEMSTORE_EXTRACTOR": "llm"}
    with ScriptedLLM() as upstream:
        srv = ServerProcess(home, ["--upstream-base-url", upstream.base_url, "--upstream-max-retries", "0",
                                   "--rate-limit", "0"], env=env)
        with srv:
            refused = httpx.post(f"{srv.base_url}/chat/completions", json=_msgs(*HI), timeout=30)
            _row, key = open_keys(home=str(home)).create("faults")
            yield {"server": srv, "key": key, "dead": dead, "refused": refused, "home": home}


def _log(live: dict[str, Any]) -> str:
    return str(live["server"].log_path.read_text(errors="replace"))


def test_keyless_start_warns_with_the_exact_command(live: dict[str, Any]) -> None:
    command = f"memstore --home {live['home']} keys create --name NAME"
    assert command in _log(live)
    err = _error(live["refused"], 401)
    assert command in err["message"]


def test_client_disconnect_mid_upload_is_one_log_line(live: dict[str, Any]) -> None:
    srv = live["server"]
    before = _log(live)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + live["key"].encode() + b"\r\nContent-Length: 100000\r\n\r\n"
                      b'{"model": "scripted-model", "messages": [')
            time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _log(live)[len(before):].count("disconnected before sending") < 3:
        time.sleep(0.1)
    new = _log(live)[len(before):]
    assert new.count("disconnected before sending the whole request") == 3, new
    assert "Traceback" not in new and "Exception in ASGI application" not in new, new
    assert srv.healthy()


def test_extraction_failures_are_logged_once_counted_and_reported(live: dict[str, Any]) -> None:
    srv = live["server"]
    client = openai.OpenAI(base_url=srv.base_url, api_key=live["key"], max_retries=0)
    for text in ("I live in Porto.", "I am vegetarian.", "My daughter is called Ana."):
        reply = client.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": text}],
                                               user="zoe")
        assert reply.choices[0].message.content == "ok"  # chat works; only extraction is broken

    def extraction() -> dict[str, Any]:
        return httpx.get(f"{srv.url}/healthz", timeout=10).json()["extraction"]  # type: ignore[no-any-return]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (extraction()["failed_turns"] or 0) < 3:
        time.sleep(0.2)
    health = extraction()
    assert health["failed_turns"] >= 3 and health["by_reason"].get("unreachable", 0) >= 3, health
    assert f"unreachable at {live['dead']}" in health["last_error"] and "MEMSTORE_LLM_API_BASE" in health["last_error"]

    metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
    series = [line for line in metrics.splitlines() if line.startswith("memstore_extraction_failures_total{")]
    assert any('reason="unreachable"' in line and float(line.split()[-1]) >= 3 for line in series), metrics
    assert metrics.count("# TYPE memstore_extraction_failures_total counter") == 1

    log_lines = [line for line in _log(live).splitlines() if "memstore extraction failing" in line]
    assert len(log_lines) == 1, log_lines  # once per cause, not once per turn
    assert f"unreachable at {live['dead']}" in log_lines[0] and "--upstream-base-url" in log_lines[0]
    body = json.dumps(health)
    assert "Traceback" not in body
