"""Parity: MemoryClient / AsyncMemoryClient fail exactly as openai.OpenAI / openai.AsyncOpenAI do.

One small fault server (standard library only, in this file) answers every request with the fault under test;
the real openai SDK and memstore's clients are pointed at it side by side, sync and async, plain and streaming.
Each case asserts the same exception class, the same ``status_code`` and the same number of requests the
server received (the SDK's retries), so ``except openai.APIConnectionError:`` written for the SDK keeps
working with memstore.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from memstore import AsyncMemoryClient, MemoryClient
from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder

# ---- the fault server ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What the server answers: an HTTP ``status`` with ``body`` (bytes) and ``content_type``, or ``cut``:
    a stream that stops after two chunks without ``[DONE]``, or ``delay`` seconds of silence first."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    cut: bool = False
    delay: float = 0.0


def error_body(status: int) -> bytes:
    return json.dumps({"error": {"message": f"scripted {status}", "type": "scripted_error", "param": None,
                                 "code": f"e{status}"}}).encode()


def chunk(text: str, finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-parity", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (timeouts) break the pipe: expected here


class FaultServer:
    """Answers every POST with ``self.fault`` and counts the requests it received."""

    def __init__(self) -> None:
        self.fault = Fault()
        self.count = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.count += 1
                f = owner.fault
                if f.delay:
                    time.sleep(f.delay)
                if f.cut:  # a crashed upstream: chunked, and the connection drops before the last chunk
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream" if body.get("stream") else f.content_type)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    part = chunk("alpha ") + chunk("beta ") if body.get("stream") else b'{"id": "chatcmpl-x", "cho'
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(f.status)
                self.send_header("content-type", f.content_type)
                self.send_header("content-length", str(len(f.body)))
                self.send_header("retry-after-ms", "5")  # keeps the SDK's retries fast
                self.end_headers()
                self.wfile.write(f.body)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def set(self, fault: Fault) -> None:
        with self._lock:
            self.fault, self.count = fault, 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """A base URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- the two clients, side by side ----------------------------------------------------------------------------

STATUSES = (400, 401, 403, 404, 409, 422, 429, 500, 502, 503)
NULL_CHOICES = json.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": None}).encode()
FAULTS: dict[str, Fault | None] = {
    **{str(code): Fault(status=code, body=error_body(code)) for code in STATUSES},
    "refused": None,
    "timeout": Fault(delay=0.8, body=b"{}"),
    "html": Fault(body=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    "empty": Fault(body=b""),
    "empty-object": Fault(body=b"{}"),
    "choices-null": Fault(body=NULL_CHOICES),
    "cut": Fault(cut=True),
}
MODES = ("sync", "sync-stream", "async", "async-stream")


@dataclass
class Outcome:
    """What a call ended with: the exception class and status, or the shape of what it returned."""

    error: type[BaseException] | None
    status: int | None
    body: Any
    result: Any
    requests: int


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    srv = FaultServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Memory:
    home = tmp_path_factory.mktemp("parity")
    return Memory(config=MemoryConfig(home=home, extractor="heuristic"), embedder=HashEmbedder())


def shape(result: Any) -> Any:
    """What a caller could look at: the text of a non-JSON body, the choices of a completion, the chunks."""
    if isinstance(result, list):
        return ("chunks", [c.choices[0].delta.content if c.choices else None for c in result])
    if isinstance(result, str):
        return ("text", result)
    return ("completion", getattr(result, "id", None), getattr(result, "choices", None))


def call(make: Callable[..., Any], mode: str, base_url: str, model: str) -> Outcome | tuple[Any, Any]:
    stream = mode.endswith("stream")
    client = make(base_url=base_url, api_key="k", max_retries=1, timeout=0.4)
    messages = [{"role": "user", "content": "hi"}]

    async def run_async() -> Any:
        resp = await client.chat.completions.create(model=model, messages=messages, stream=stream, user="alice")
        return [c async for c in resp] if stream else resp

    def run() -> Any:
        if mode.startswith("async"):
            return asyncio.run(run_async())
        resp = client.chat.completions.create(model=model, messages=messages, stream=stream, user="alice")
        return list(resp) if stream else resp

    try:
        return run(), None
    except Exception as exc:  # the outcome under test
        return None, exc


def outcome(server: FaultServer, fault: Fault | None, make: Callable[..., Any], mode: str,
            model: str = "m") -> Outcome:
    if fault is None:
        server.set(Fault())
        base_url = refused_url()
    else:
        server.set(fault)
        base_url = server.base_url
    result, exc = call(make, mode, base_url, model)
    return Outcome(type(exc) if exc is not None else None, getattr(exc, "status_code", None),
                   getattr(exc, "body", None), shape(result) if exc is None else None, server.count)


def openai_client(mode: str) -> Callable[..., Any]:
    return openai.AsyncOpenAI if mode.startswith("async") else openai.OpenAI


def memstore_client(mode: str, memory: Memory) -> Callable[..., Any]:
    cls = AsyncMemoryClient if mode.startswith("async") else MemoryClient
    return lambda **kw: cls(memory=memory, start_worker=False, **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_memory_client_fails_exactly_like_the_openai_sdk(server: FaultServer, memory: Memory, fault: str,
                                                           mode: str) -> None:
    expected = outcome(server, FAULTS[fault], openai_client(mode), mode)
    got = outcome(server, FAULTS[fault], memstore_client(mode, memory), mode)
    assert got == expected
    if fault.isdigit():
        assert expected.status == int(fault)
    if fault in ("refused", "timeout", "cut"):
        assert expected.error is not None and issubclass(expected.error, openai.APIConnectionError)


@pytest.mark.parametrize("mode", ("sync", "sync-stream"))
@pytest.mark.parametrize("fault", [str(s) for s in STATUSES] + ["refused", "timeout", "cut"])
def test_models_litellm_routes_raise_the_same_openai_classes(server: FaultServer, memory: Memory, fault: str,
                                                             mode: str) -> None:
    """A provider-prefixed model goes through litellm: its exceptions become the SDK's, status and retries kept."""
    expected = outcome(server, FAULTS[fault], openai_client(mode), mode)
    got = outcome(server, FAULTS[fault], memstore_client(mode, memory), mode, model="openai/m")
    assert (got.error, got.status, got.body, got.requests) == \
        (expected.error, expected.status, expected.body, expected.requests)


def test_except_clauses_written_for_openai_keep_working(memory: Memory) -> None:
    with MemoryClient(memory=memory, base_url=refused_url(), api_key="k", max_retries=0,
                      start_worker=False) as client:
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        except openai.APIConnectionError as exc:
            assert not type(exc).__module__.startswith("litellm")
        else:
            pytest.fail("no error")


@pytest.mark.parametrize("fault", ["400", "401", "404", "429", "503", "refused"])
def test_the_responses_api_raises_the_same_openai_classes(server: FaultServer, memory: Memory, fault: str) -> None:
    """``client.responses.create`` goes through litellm: its failures are the SDK's classes too."""

    def run(make: Callable[..., Any]) -> tuple[type[BaseException] | None, int | None]:
        f = FAULTS[fault]
        server.set(f or Fault())
        client = make(base_url=server.base_url if f else refused_url(), api_key="k", max_retries=1, timeout=0.4)
        try:
            client.responses.create(model="m", input="hi", user="alice")
        except Exception as exc:  # the outcome under test
            return type(exc), getattr(exc, "status_code", None)
        return None, None

    assert run(memstore_client("sync", memory)) == run(openai.OpenAI)
