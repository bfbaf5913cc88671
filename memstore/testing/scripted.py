"""Public test fakes: a scripted, OpenAI-compatible HTTP server.

:class:`ScriptedLLM` runs a real HTTP server on ``127.0.0.1`` (standard library only) that speaks
OpenAI's wire format for ``/v1/chat/completions``, ``/v1/responses``, ``/v1/models`` and
``/v1/embeddings``, so the real ``openai`` SDK, litellm, or any other OpenAI-compatible client can
talk to it. Replies are scripted::

    from memstore.testing import ScriptedLLM, ScriptedReply

    with ScriptedLLM() as llm:
        llm.enqueue("Hello!", ScriptedReply(status=429, error="slow down"))
        client = openai.OpenAI(base_url=llm.base_url, api_key="x")
        ...
        assert llm.last_request.last_user_text == "hi"

Reply selection, per chat/responses request: the next queued reply (FIFO), else ``reply_fn(request)``,
else ``default_reply``. Every request (any path) is recorded before its reply is computed.

Upstreams differ from OpenAI in what they send back; a reply can say exactly what goes on the wire:
``ScriptedReply(body=...)`` answers a raw body, and ``ScriptedReply("hi", edit=fn)`` passes every payload
the server builds (the completion or response, each stream chunk or event) through ``fn`` first, to drop,
add or null fields::

    def no_cache_writes(payload):
        usage = payload.get("usage") or (payload.get("response") or {}).get("usage")
        if usage:
            usage["input_tokens_details"].pop("cache_write_tokens", None)
        return payload

Responses are kept (unless the request says ``"store": false``) so that ``previous_response_id`` works as
OpenAI's does: an unknown or unstored id is a 404, a known one gives the request its earlier conversation
(``ScriptedRequest.history``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ReplyFn", "ScriptedLLM", "ScriptedReply", "ScriptedRequest"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}
_DEFAULT_MODEL = "scripted-model"


@dataclass
class ScriptedReply:
    """One scripted answer.

    Attributes:
        content: assistant text (``None`` with tool calls means no text).
        tool_calls: ``[{"name": ..., "arguments": str | dict, "id": optional}]`` or OpenAI's own
            ``{"id", "type": "function", "function": {"name", "arguments"}}`` shape.
        status: HTTP status; anything but 200 returns OpenAI's error JSON (429 adds Retry-After).
        error: error message; setting it with ``status=200`` answers 500.
        delay: seconds to sleep before answering (to exercise client timeouts).
        truncate_stream_after: for streaming requests, drop the connection after this many events,
            without ``[DONE]`` or a final chunk (a crashed upstream).
        finish_reason: defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
        usage: token-count overrides, e.g. ``{"prompt_tokens": 7, "completion_tokens": 3}``
            (``input_tokens``/``output_tokens``/``cached_tokens``/``reasoning_tokens`` also work).
        headers: extra HTTP response headers.
        retry_after: seconds advertised on 429 replies (``retry-after-ms`` and ``Retry-After``).
        chunk_delay: seconds to sleep between streamed events.
        body: a raw answer to a non-streaming request, sent as it is instead of the one the server would
            build (a dict or list is sent as JSON, a str or bytes as they are, with ``status``).
        edit: called with every JSON payload the server builds for this reply (the completion or response
            body, each stream chunk or event) and returns the payload to send: the same dict changed, a new
            one, a str sent as it is, or None to leave that payload (a stream event) out.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    status: int = 200
    error: str | None = None
    delay: float = 0.0
    truncate_stream_after: int | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.05
    chunk_delay: float = 0.0
    body: Any = None
    edit: Callable[[dict[str, Any]], Any] | None = None

    def normalized_tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls in OpenAI's chat shape, with ids and string arguments filled in."""
        calls = []
        for call in self.tool_calls or []:
            fn = call.get("function", call)
            args = fn.get("arguments", "{}")
            calls.append({"id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": fn["name"],
                                       "arguments": args if isinstance(args, str) else json.dumps(args)}})
        return calls


@dataclass
class ScriptedRequest:
    """A request as the server received it (``headers`` keys are lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    """Responses API: the conversation of the ``previous_response_id`` chain (its inputs and replies, as
    messages, oldest first), as the server kept it; empty otherwise."""

    @property
    def model(self) -> str:
        """The requested model, or ``"scripted-model"``."""
        return str(self.body.get("model") or _DEFAULT_MODEL)

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed answer."""
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat ``messages``, or Responses ``instructions`` + ``input`` normalized to messages."""
        if "messages" in self.body:
            return list(self.body.get("messages") or [])
        messages: list[dict[str, Any]] = []
        if self.body.get("instructions"):
            messages.append({"role": "system", "content": self.body["instructions"]})
        items = self.body.get("input")
        if isinstance(items, str):
            return [*messages, {"role": "user", "content": items}]
        for item in items or []:
            if isinstance(item, dict) and "role" in item:
                messages.append({"role": item["role"], "content": item.get("content")})
            elif isinstance(item, dict) and item.get("type") == "function_call_output":
                messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                                 "content": item.get("output")})
        return messages

    @property
    def system_text(self) -> str:
        """All system and developer message text, joined by blank lines."""
        return "\n\n".join(_text_of(m.get("content")) for m in self.messages
                           if m.get("role") in ("system", "developer"))

    @property
    def last_user_text(self) -> str:
        """Text of the latest user message, or ``""``."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return _text_of(users[-1].get("content")) if users else ""


ReplyFn = Callable[[ScriptedRequest], str | ScriptedReply]


def _text_of(content: Any) -> str:
    """Flatten string or content-part-list message content to text."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _pieces(text: str) -> list[str]:
    """Split text into small word-sized deltas whose concatenation is exactly ``text``."""
    return [p for p in re.findall(r"\S*\s*", text) if p]


def _halves(text: str) -> list[str]:
    mid = len(text) // 2
    return [p for p in (text[:mid], text[mid:]) if p]


def _fake_embedding(value: Any, dim: int) -> list[float]:
    """A deterministic unit vector derived from a hash of the input."""
    seed = json.dumps(value, sort_keys=True).encode()
    stream = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(dim // 32 + 1))
    vec = [(b - 127.5) / 127.5 for b in stream[:dim]]
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


class ScriptedLLM:
    """A scripted OpenAI-compatible server on 127.0.0.1; see the module docstring."""

    def __init__(self, reply_fn: ReplyFn | None = None, *, default_reply: str | ScriptedReply = "ok",
                 host: str = "127.0.0.1", port: int = 0, embedding_dim: int = 8) -> None:
        """Configure the server; call :meth:`start` (or use ``with``) to listen."""
        self.reply_fn: ReplyFn | None = reply_fn
        self.default_reply: str | ScriptedReply = default_reply
        self.host = host
        self.port = port
        self.embedding_dim = embedding_dim
        self._queue: deque[str | ScriptedReply] = deque()
        self._requests: list[ScriptedRequest] = []
        self._models: list[str] = [_DEFAULT_MODEL]
        self._stored: dict[str, list[dict[str, Any]]] = {}  # response id -> its conversation (as messages)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> ScriptedLLM:
        """Bind and serve in a daemon thread (idempotent); returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _make_handler(self))
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"ScriptedLLM:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); sleeping ``delay`` replies are cut short."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)`` or litellm's ``api_base``."""
        if self._server is None:
            raise RuntimeError("ScriptedLLM is not running; call start() first")
        return f"http://{self.host}:{self.port}/v1"

    # scripting
    def enqueue(self, *replies: str | ScriptedReply) -> None:
        """Queue replies, consumed in order by chat-completions and responses requests."""
        with self._cond:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """How many queued replies have not been consumed yet."""
        with self._cond:
            return len(self._queue)

    @property
    def requests(self) -> list[ScriptedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> ScriptedRequest | None:
        """The most recent request, or ``None``."""
        with self._cond:
            return self._requests[-1] if self._requests else None

    def clear(self) -> None:
        """Forget recorded requests, stored responses and queued replies (``reply_fn``/``default_reply`` stay)."""
        with self._cond:
            self._requests.clear()
            self._queue.clear()
            self._stored.clear()

    def stored_response(self, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation a stored Responses-API response ended (as messages, its reply last), or None."""
        with self._cond:
            found = self._stored.get(response_id)
            return list(found) if found is not None else None

    def wait_for_requests(self, count: int, timeout: float = 5.0, path: str | None = None
                          ) -> list[ScriptedRequest]:
        """Block until at least ``count`` requests (to ``path``, if given) arrived; raise on timeout."""
        def matching() -> list[ScriptedRequest]:
            return [r for r in self._requests if path is None or r.path == path]
        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"got {len(matching())} of {count} requests within {timeout}s")
            return matching()

    # internals used by the handler
    def _record(self, request: ScriptedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            model = request.body.get("model")
            if isinstance(model, str) and model not in self._models:
                self._models.append(model)
            self._cond.notify_all()

    def _next_reply(self, request: ScriptedRequest) -> ScriptedReply:
        with self._cond:
            queued = self._queue.popleft() if self._queue else None
        if queued is None:
            queued = self.reply_fn(request) if self.reply_fn is not None else self.default_reply
        return ScriptedReply(content=queued) if isinstance(queued, str) else queued

    def _model_ids(self) -> list[str]:
        with self._cond:
            return list(self._models)

    def _store(self, request: ScriptedRequest, response: dict[str, Any]) -> None:
        """Keeps a finished response for ``previous_response_id`` (OpenAI stores unless ``store`` is false)."""
        rid = response.get("id") if isinstance(response, dict) else None
        if not isinstance(rid, str) or request.body.get("store") is False:
            return
        reply = "".join(c.get("text", "") for item in response.get("output") or [] if isinstance(item, dict)
                        for c in item.get("content") or [] if isinstance(c, dict))
        turn = [m for m in request.messages if m.get("role") not in ("system", "developer")]
        with self._cond:
            self._stored[rid] = [*request.history, *turn, {"role": "assistant", "content": reply}]


# --- wire format builders ----------------------------------------------------------------------

def _usage(reply: ScriptedReply, request: ScriptedRequest) -> dict[str, int]:
    """Chat-style usage, estimated at ~4 characters per token unless overridden."""
    prompt = _tokens("".join(_text_of(m.get("content")) for m in request.messages))
    out_text = (reply.content or "") + "".join(
        c["function"]["name"] + c["function"]["arguments"] for c in reply.normalized_tool_calls())
    o = reply.usage or {}
    p = o.get("prompt_tokens", o.get("input_tokens", prompt))
    c = o.get("completion_tokens", o.get("output_tokens", _tokens(out_text)))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": o.get("total_tokens", p + c),
            "cached_tokens": o.get("cached_tokens", 0), "reasoning_tokens": o.get("reasoning_tokens", 0)}


def _chat_usage(u: dict[str, int]) -> dict[str, Any]:
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"],
            "prompt_tokens_details": {"cached_tokens": u["cached_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": u["reasoning_tokens"], "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _finish(reply: ScriptedReply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _chat_completion(reply: ScriptedReply, request: ScriptedRequest) -> dict[str, Any]:
    calls = reply.normalized_tool_calls()
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    n = int(request.body.get("n") or 1)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": request.model, "system_fingerprint": "fp_scripted",
            "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
                        for i in range(n)],
            "usage": _chat_usage(_usage(reply, request))}


def _chat_chunks(reply: ScriptedReply, request: ScriptedRequest) -> Iterator[dict[str, Any]]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": request.model, "system_fingerprint": "fp_scripted"}
    include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    calls = reply.normalized_tool_calls()
    n = int(request.body.get("n") or 1)
    for i in range(n):
        yield chunk(i, {"role": "assistant", "content": "" if reply.content is not None else None,
                        "refusal": None})
        for piece in _pieces(reply.content or ""):
            yield chunk(i, {"content": piece})
        for k, call in enumerate(calls):
            fn = call["function"]
            yield chunk(i, {"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                            "function": {"name": fn["name"], "arguments": ""}}]})
            for piece in _halves(fn["arguments"]):
                yield chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
    for i in range(n):
        yield chunk(i, {}, _finish(reply))
    if include_usage:
        yield {**base, "choices": [], "usage": _chat_usage(_usage(reply, request))}


def _response_items(reply: ScriptedReply) -> list[dict[str, Any]]:
    """Completed Responses-API output items: one message (if any text) then function calls."""
    items: list[dict[str, Any]] = []
    if reply.content is not None or not reply.tool_calls:
        items.append({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "assistant",
                      "status": "completed",
                      "content": [{"type": "output_text", "text": reply.content or "",
                                   "annotations": [], "logprobs": []}]})
    for call in reply.normalized_tool_calls():
        items.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call["id"],
                      "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                      "status": "completed"})
    return items


def _response(reply: ScriptedReply, request: ScriptedRequest, output: list[dict[str, Any]],
              status: str, rid: str, created: int) -> dict[str, Any]:
    body = request.body
    u = _usage(reply, request)
    return {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "metadata": body.get("metadata") or {},
        "model": request.model, "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "conversation": _conversation(body.get("conversation")),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default", "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
        "usage": None if status != "completed" else {
            "input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"],
            "input_tokens_details": {"cached_tokens": u["cached_tokens"], "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]}},
    }


def _conversation(value: Any) -> dict[str, Any] | None:
    """``conversation`` as a response shows it: ``{"id": ...}`` whether the request gave an id or an object."""
    if isinstance(value, str):
        return {"id": value}
    return {"id": value.get("id")} if isinstance(value, dict) else None


def _response_events(reply: ScriptedReply, request: ScriptedRequest) -> Iterator[dict[str, Any]]:
    """Responses-API stream events in the official order (``sequence_number`` added by the caller)."""
    rid, created = f"resp_{uuid.uuid4().hex}", int(time.time())
    yield {"type": "response.created",
           "response": _response(reply, request, [], "in_progress", rid, created)}
    yield {"type": "response.in_progress",
           "response": _response(reply, request, [], "in_progress", rid, created)}
    items = _response_items(reply)
    for idx, item in enumerate(items):
        where = {"item_id": item["id"], "output_index": idx}
        if item["type"] == "message":
            part = item["content"][0]
            text = part["text"]
            yield {"type": "response.output_item.added", "output_index": idx,
                   "item": {**item, "status": "in_progress", "content": []}}
            yield {"type": "response.content_part.added", **where, "content_index": 0,
                   "part": {**part, "text": ""}}
            for piece in _pieces(text):
                yield {"type": "response.output_text.delta", **where, "content_index": 0,
                       "delta": piece, "logprobs": []}
            yield {"type": "response.output_text.done", **where, "content_index": 0, "text": text,
                   "logprobs": []}
            yield {"type": "response.content_part.done", **where, "content_index": 0, "part": part}
        else:
            yield {"type": "response.output_item.added", "output_index": idx,
                   "item": {**item, "status": "in_progress", "arguments": ""}}
            for piece in _halves(item["arguments"]):
                yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            yield {"type": "response.function_call_arguments.done", **where, "name": item["name"],
                   "arguments": item["arguments"]}
        yield {"type": "response.output_item.done", "output_index": idx, "item": item}
    yield {"type": "response.completed",
           "response": _response(reply, request, items, "completed", rid, created)}


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"),
                      "param": None, "code": "rate_limit_exceeded" if status == 429 else None}}


def _edited(reply: ScriptedReply, payload: dict[str, Any]) -> Any:
    """The payload as ``reply.edit`` makes it (None: leave it out)."""
    return payload if reply.edit is None else reply.edit(payload)


def _wire(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)


def _chat_sse(reply: ScriptedReply, request: ScriptedRequest) -> Iterator[str]:
    for chunk in _chat_chunks(reply, request):
        edited = _edited(reply, chunk)
        if edited is not None:
            yield f"data: {_wire(edited)}\n\n"
    yield "data: [DONE]\n\n"


def _response_sse(reply: ScriptedReply, request: ScriptedRequest, llm: ScriptedLLM | None = None) -> Iterator[str]:
    for seq, event in enumerate(_response_events(reply, request)):
        event["sequence_number"] = seq
        kind = event["type"]
        if kind == "response.completed" and llm is not None:
            llm._store(request, event["response"])
        edited = _edited(reply, event)
        if edited is not None:
            yield f"event: {kind}\ndata: {_wire(edited)}\n\n"


def _complete_response(reply: ScriptedReply, request: ScriptedRequest) -> dict[str, Any]:
    return _response(reply, request, _response_items(reply), "completed", f"resp_{uuid.uuid4().hex}",
                     int(time.time()))


def _embeddings(request: ScriptedRequest, default_dim: int) -> dict[str, Any]:
    """OpenAI embeddings list; floats, or little-endian float32 base64 (the SDK's default request)."""
    inputs = request.body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise ValueError("'input' must be a string or a non-empty list")
    dim = int(request.body.get("dimensions") or default_dim)
    data = []
    for i, value in enumerate(inputs):
        vec: Any = _fake_embedding(value, dim)
        if request.body.get("encoding_format") == "base64":
            vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(_tokens(v if isinstance(v, str) else json.dumps(v)) for v in inputs)
    return {"object": "list", "data": data, "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "scripted"}


# --- HTTP handler ------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent clients (background workers) must not stall


class _Truncated(Exception):
    """Raised to abandon a stream mid-way."""


def _make_handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked streams, so a truncated one is a visible error
        server_version = "ScriptedLLM/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet."""

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            path = path if path.startswith("/v1") else "/v1" + path
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length)) if length else {}
            except ValueError:
                body = None
            request = ScriptedRequest(method, path, {k.lower(): v for k, v in self.headers.items()},
                                      body if isinstance(body, dict) else {})
            llm._record(request)
            try:
                if not isinstance(body, dict):
                    self._send_error(ScriptedReply(status=400, error="Request body is not a JSON object"))
                elif method == "POST" and path == "/v1/chat/completions":
                    self._answer(request, _chat_completion, _chat_sse)
                elif method == "POST" and path == "/v1/responses":
                    previous = body.get("previous_response_id")
                    if previous is not None:
                        history = llm.stored_response(str(previous))
                        if history is None:
                            self._send(404, {"error": {
                                "message": f"Previous response with id '{previous}' not found.",
                                "type": "invalid_request_error", "param": "previous_response_id",
                                "code": "previous_response_not_found"}})
                            return
                        request.history = history
                    self._answer(request, _complete_response, functools.partial(_response_sse, llm=llm))
                elif method == "POST" and path == "/v1/embeddings":
                    try:
                        self._send(200, _embeddings(request, llm.embedding_dim))
                    except ValueError as exc:
                        self._send_error(ScriptedReply(status=400, error=str(exc)))
                elif method == "GET" and path == "/v1/models":
                    self._send(200, {"object": "list", "data": [_model(m) for m in llm._model_ids()]})
                elif method == "GET" and path.startswith("/v1/models/"):
                    self._send(200, _model(path.removeprefix("/v1/models/")))
                else:
                    self._send_error(ScriptedReply(status=404, error=f"Unknown route {method} {path}"))
            except (BrokenPipeError, ConnectionResetError, _Truncated):
                pass  # the client went away, or we dropped it on purpose

        def _answer(self, request: ScriptedRequest,
                    complete: Callable[[ScriptedReply, ScriptedRequest], dict[str, Any]],
                    sse: Callable[[ScriptedReply, ScriptedRequest], Iterator[str]]) -> None:
            try:
                reply = llm._next_reply(request)
            except Exception as exc:  # a broken reply_fn becomes a visible 500
                self._send_error(ScriptedReply(status=500, error=f"reply_fn failed: {exc!r}"))
                return
            if reply.delay and llm._stopping.wait(reply.delay):
                return
            if reply.body is not None and not request.stream:
                self._send_raw(reply.status, reply.body, reply.headers)
            elif reply.status != 200 or reply.error is not None:
                self._send_error(reply)
            elif not request.stream:
                payload = _edited(reply, complete(reply, request))
                if request.path == "/v1/responses":
                    llm._store(request, payload)
                self._send_raw(200, payload, reply.headers)
            else:
                self._send(200, None, reply.headers)
                for sent, event in enumerate(sse(reply, request)):
                    if reply.truncate_stream_after is not None and sent >= reply.truncate_stream_after:
                        raise _Truncated  # no terminating chunk: the client sees a broken body
                    if sent and reply.chunk_delay and llm._stopping.wait(reply.chunk_delay):
                        raise _Truncated
                    self._chunk(event.encode())
                self._chunk(b"")

        def _send(self, status: int, payload: dict[str, Any] | list[Any] | None,
                  headers: dict[str, str] | None = None) -> None:
            """Send headers and a JSON body, or (``payload=None``) start a chunked SSE stream."""
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            if payload is None:
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if data:
                self.wfile.write(data)

        def _send_raw(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            """A body as it is: JSON for a dict or list, else the text or bytes given."""
            if isinstance(payload, dict | list) or payload is None:
                self._send(status, payload if payload is not None else {}, headers)
                return
            data = payload if isinstance(payload, bytes) else str(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, reply: ScriptedReply) -> None:
            status = 500 if reply.status == 200 else reply.status
            headers = dict(reply.headers)
            if status == 429:
                headers.setdefault("retry-after-ms", str(int(reply.retry_after * 1000)))
                headers.setdefault("Retry-After", str(max(1, math.ceil(reply.retry_after))))
            self._send(status, _error_body(status, reply.error or f"Scripted error (HTTP {status})"),
                       headers)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    return Handler
