"""The proxy server's guard rails: OpenAI-shaped errors, body and message limits, per-key rate limits.

Every refusal is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, the shape every
OpenAI SDK already parses into its own exception classes (401 -> AuthenticationError, 429 -> RateLimitError
...). Imports only the standard library and starlette, so it is cheap to import and to unit-test.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 408: "timeout_error",
               409: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(Exception):
    """An error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ---- request bodies ---------------------------------------------------------------------------------

async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw request body; 413 past ``max_bytes`` (checked on Content-Length first, then while reading, so a
    chunked upload cannot exceed it either)."""
    too_big = ApiError(413, f"Request body is larger than the server's limit of {max_bytes} bytes.",
                       code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > max_bytes:
                raise too_big
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header.", code="invalid_request") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object. 413 past ``max_bytes`` (``read_body``); 400 for anything but a JSON
    object."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    check_depth(raw)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {type(data).__name__}.",
                       code="invalid_json")
    return data


MAX_JSON_DEPTH = 64
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def check_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """400 for JSON nested deeper than ``limit`` (json.loads would recurse until RecursionError). Strings are
    skipped whole by the regular expression, so brackets inside them do not count."""
    depth = 0
    for m in _JSON_TOKENS.finditer(raw):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ApiError(400, f"The request body is nested deeper than {limit} levels.", code="invalid_json")
        elif tok in (b"]", b"}"):
            depth -= 1


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MEMORY_OPTIONS = {"user_id": str, "namespace": str, "enabled": bool, "extract": bool, "token_budget": int,
                  "episodes": bool}


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def check_message(i: int, m: Any) -> None:
    """One chat message as OpenAI checks it: an object, a known role, string or parts content."""
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(f"Invalid type for '{where}': expected an object, but got {_type_name(m)} instead.", where,
                   "invalid_type")
    role = m.get("role")
    if not isinstance(role, str):
        raise _bad(f"Missing required parameter: '{where}.role'." if role is None else
                   f"Invalid type for '{where}.role': expected a string, but got {_type_name(role)} instead.",
                   f"{where}.role", "missing_required_parameter" if role is None else "invalid_type")
    if role not in ROLES:
        raise _bad(f"Invalid value: '{role}'. Supported values are: {', '.join(repr(r) for r in ROLES)}.",
                   f"{where}.role")
    content = m.get("content")
    if content is None:
        if role in ("assistant", "function"):
            return  # an assistant turn may carry only tool_calls / function_call / refusal
        raise _bad(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                   "missing_required_parameter")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{where}.content': expected one of a string or array of objects, but got "
                   f"{_type_name(content)} instead.", f"{where}.content", "invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"Invalid type for '{where}.content[{j}]': expected an object with a 'type', but got "
                       f"{_type_name(part)} instead.", f"{where}.content[{j}]", "invalid_type")


def check_memory_options(opts: Any) -> dict[str, Any]:
    """The body's ``memory`` object (memstore's options): known keys of the right types, a positive budget."""
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise _bad(f"Invalid type for 'memory': expected an object, but got {_type_name(opts)} instead.", "memory",
                   "invalid_type")
    for key, value in opts.items():
        want = MEMORY_OPTIONS.get(key)
        param = f"memory.{key}"
        if want is None:
            raise _bad(f"Unrecognized memory option: '{key}'. Known: {', '.join(sorted(MEMORY_OPTIONS))}.", param,
                       "unknown_parameter")
        if value is None:
            continue
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise _bad(f"Invalid type for '{param}': expected {_type_name(want())}, but got {_type_name(value)} "
                       "instead.", param, "invalid_type")
        if key == "token_budget" and value <= 0:
            raise _bad(f"Invalid '{param}': {value}; it must be a positive integer.", param)
        if want is str and not value.strip():
            raise _bad(f"Invalid '{param}': it must not be empty.", param)
    return {k: v for k, v in opts.items() if v is not None}


def check_chat_body(body: dict[str, Any], max_messages: int) -> None:
    """The checks OpenAI itself makes before a model sees the request, plus the message-count limit."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array of message objects", param="messages",
                       code="invalid_value")
    if len(messages) > max_messages:
        raise ApiError(400, f"'messages' has {len(messages)} items; this server accepts at most {max_messages}.",
                       param="messages", code="too_many_messages")
    for i, m in enumerate(messages):
        check_message(i, m)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream", code="invalid_type")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "'user' must be a string", param="user", code="invalid_type")


INPUT_ROLES = ("user", "assistant", "system", "developer")


def check_responses_body(body: dict[str, Any], max_items: int) -> None:
    """The checks OpenAI makes on a Responses request before a model sees it, plus the item-count limit:
    a model; ``input`` a string or an array of input items (messages with a known role and string or parts
    content, or typed items such as ``function_call_output``); ``instructions`` a string."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    items = body.get("input")
    if items is None:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if isinstance(items, list):
        if len(items) > max_items:
            raise ApiError(400, f"'input' has {len(items)} items; this server accepts at most {max_items}.",
                           param="input", code="too_many_messages")
        for i, item in enumerate(items):
            check_input_item(i, item)
    elif not isinstance(items, str):
        raise _bad(f"Invalid type for 'input': expected a string or an array of input items, but got "
                   f"{_type_name(items)} instead.", "input", "invalid_type")
    for name in ("instructions", "previous_response_id", "user", "safety_identifier"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise _bad(f"Invalid type for '{name}': expected a string, but got {_type_name(value)} instead.", name,
                       "invalid_type")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream", code="invalid_type")


def check_input_item(i: int, item: Any) -> None:
    """One Responses input item: an object; a message (``role``) as a chat message is checked, with
    ``input_text`` / ``output_text`` parts; anything else must say its ``type``."""
    where = f"input[{i}]"
    if not isinstance(item, dict):
        raise _bad(f"Invalid type for '{where}': expected an object, but got {_type_name(item)} instead.", where,
                   "invalid_type")
    role = item.get("role")
    if role is None:
        if not isinstance(item.get("type"), str):
            raise _bad(f"Missing required parameter: '{where}.type' (an input item without a 'role' must say its "
                       "type).", f"{where}.type", "missing_required_parameter")
        return
    if role not in INPUT_ROLES:
        raise _bad(f"Invalid value: {role!r}. Supported values are: {', '.join(repr(r) for r in INPUT_ROLES)}.",
                   f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{where}.content': expected one of a string or array of objects, but got "
                   f"{_type_name(content)} instead.", f"{where}.content",
                   "missing_required_parameter" if content is None else "invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"Invalid type for '{where}.content[{j}]': expected an object with a 'type', but got "
                       f"{_type_name(part)} instead.", f"{where}.content[{j}]", "invalid_type")


# ---- rate limits ------------------------------------------------------------------------------------

@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each request takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one will be available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per caller (proxy key id, or client address without auth). ``rate <= 0``: off."""

    def __init__(self, rate: float, burst: float | None = None, max_buckets: int = 100_000) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * rate))
        if self.burst < 1:
            raise ValueError("rate burst must be at least 1")
        self.max_buckets = max_buckets
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, caller: str) -> None:
        """Raises a 429 ApiError (with Retry-After) when ``caller`` is over its limit."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                if len(self._buckets) >= self.max_buckets:  # forget the idle ones (full buckets)
                    self._buckets = {k: b for k, b in self._buckets.items()
                                     if b.tokens + (now - b.updated) * self.rate < self.burst}
                bucket = self._buckets[caller] = TokenBucket(self.rate, self.burst, self.burst, now)
            wait = bucket.take(now)
        if wait > 0:
            raise ApiError(429, f"Rate limit reached for this key: {self.rate:g} requests per second "
                                f"(burst {self.burst:g}). Try again in {wait:.2f}s.",
                           code="rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, math.ceil(wait))),
                                    "retry-after-ms": str(max(1, math.ceil(wait * 1000)))})


# ---- upstream errors --------------------------------------------------------------------------------

def upstream_error(exc: BaseException) -> ApiError:
    """A litellm / provider exception as the provider's status in OpenAI's error shape.

    Connection failures, an upstream 500 and answers that are no completion (HTML, ``{}``, an empty body,
    ``choices: null``) are 502; timeouts 504; errors without a status 502 as well (the proxy itself is fine,
    the upstream is not). So is an upstream 401/403: it refused the *server's* upstream key, and passing it on
    would tell the client its own (proxy) key is wrong. Other statuses (400, 404, 429, 503 ...) pass through."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None)
    message = re.sub(r"litellm\.\w+: (\w+: )?(\w+Exception - )?", "", str(getattr(exc, "message", None) or exc))
    if "Timeout" in name:
        status = 504
    elif ("APIConnectionError" in name or not isinstance(status, int) or status < 400 or status == 500
          or "Connection error" in message):
        status = 502  # 500 too: it is the upstream's failure (or a body it sent that is no completion)
    elif status in (401, 403):
        status, code = 502, "upstream_auth_error"
        message = f"the upstream refused the server's API key (check --upstream-api-key): {message}"
    headers: dict[str, str] = {}
    response = getattr(exc, "response", None)
    retry = None
    try:
        retry = response.headers.get("retry-after") if response is not None else None
    except Exception:  # a response stub without headers
        retry = None
    if status == 429:
        headers["Retry-After"] = str(retry or 1)
    kind = ERROR_TYPES.get(status, "upstream_error" if status >= 500 else "invalid_request_error")
    return ApiError(status, f"upstream model error: {message}", type=kind, headers=headers,
                    code=code if isinstance(code, str) else "upstream_error")
