"""The openai SDK's own exception classes, for every failure a caller of MemoryClient sees.

Requests to OpenAI or an OpenAI-compatible server (``base_url``), chat and Responses alike, go through the real
openai SDK, so its exceptions, status codes and retries are the SDK's by construction. Requests litellm routes to
another provider (``"anthropic/..."``, ``"ollama/..."``) raise litellm's exceptions; ``as_openai_error``
turns each into the openai class the SDK raises for the same situation (same ``status_code``, response and
body where litellm kept them), so ``except openai.APIConnectionError:`` works whatever the model.

Bad input is refused before any model call with ``InvalidRequestError``: both ``openai.BadRequestError``
(what the SDK raises when the API refuses a malformed request) and ``memstore.errors.InvalidInputError``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai

from memstore.errors import InvalidInputError, MemstoreError

__all__ = ["InvalidRequestError", "as_openai_error", "bad_request"]

_URL = "http://memstore.invalid/v1/chat/completions"  # requests refused before they were sent have no URL

_BY_STATUS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
    404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


class InvalidRequestError(InvalidInputError, openai.BadRequestError):
    """A request memstore refused before calling the model (status 400, OpenAI's error body):
    catch it as ``openai.BadRequestError`` or as ``memstore.errors.InvalidInputError``."""

    def __init__(self, message: str, *, param: str | None = None, url: str = _URL) -> None:
        body = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
        response = httpx2.Response(400, json={"error": body}, request=httpx2.Request("POST", url))
        openai.BadRequestError.__init__(self, message, response=response, body=body)

    def __str__(self) -> str:
        return self.message


def bad_request(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _status_class(status: int) -> type[openai.APIStatusError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return openai.InternalServerError if status >= 500 else openai.APIStatusError


def _request(exc: Any) -> httpx2.Request:
    for holder in (getattr(exc, "response", None), exc):
        try:
            req = getattr(holder, "request", None)
            if req is not None:
                return httpx2.Request(str(req.method), str(req.url))
        except Exception:  # an httpx response built without a request raises on .request
            continue
    return httpx2.Request("POST", _URL)


def _response(exc: Any, status: int, request: httpx2.Request) -> tuple[httpx2.Response, object | None]:
    """The provider's response (status, headers, body) as the openai SDK's response type, and its JSON body."""
    raw = getattr(exc, "response", None)
    headers: dict[str, str] = {}
    content = b""
    try:
        if raw is not None:
            headers = {k: v for k, v in raw.headers.items() if k.lower() not in ("content-length", "content-encoding",
                                                                                 "transfer-encoding")}
            content = raw.content or b""
    except Exception:  # a stream that was never read, or a stub
        content = b""
    body: object | None = getattr(exc, "body", None)
    if body is None and content:
        try:
            parsed = json.loads(content)
            body = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        except ValueError:
            body = content.decode("utf-8", "replace")
    return httpx2.Response(status, headers=headers, content=content, request=request), body


def _message(exc: BaseException) -> str:
    """litellm's message without its decoration: "litellm.RateLimitError: RateLimitError: OpenAIException - x"."""
    text = str(getattr(exc, "message", None) or exc)
    return text.split("Exception - ", 1)[-1] if "Exception - " in text else text


def as_openai_error(exc: BaseException) -> BaseException:
    """The openai SDK's exception for a failed model call; anything already the SDK's (or memstore's own, or
    no model error at all) is returned unchanged."""
    if not isinstance(exc, Exception) or isinstance(exc, MemstoreError):
        return exc
    module = type(exc).__module__
    if not module.startswith("litellm"):
        return exc
    name = type(exc).__name__
    message = _message(exc)
    request = _request(exc)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APITimeoutError) or name == "Timeout":
        out: Exception = openai.APITimeoutError(request=request)
    elif (isinstance(exc, openai.APIConnectionError) or name == "MidStreamFallbackError"
          or "Connection error" in message or ("connection" in message.lower() and status in (None, 500))):
        out = openai.APIConnectionError(message=message or "Connection error.", request=request)
    elif isinstance(status, int) and status >= 400:
        response, body = _response(exc, status, request)
        out = _status_class(status)(f"Error code: {status} - {message}", response=response, body=body)
    else:
        out = openai.APIError(message, request, body=None)
    out.__cause__ = exc
    return out
