"""What ``memstore serve`` does with the rest of the OpenAI API: endpoints memory has nothing to do with
(embeddings, moderations, audio, images, stored responses, conversations ...) are passed through to an
OpenAI-compatible upstream (``--upstream-base-url``), with the server's upstream key: the client's proxy key is
never forwarded. Anything else gets OpenAI's 404 shape, naming what this server serves.

Which paths are passed is ``ServerSettings.passthrough`` (``memstore serve --passthrough``): prefixes under
``/v1`` (``"audio"`` covers ``/v1/audio/speech``), ``"*"`` for everything. Only stateless model endpoints are
passed by default. Whatever the upstream stores lives in the operator's one upstream account, out of reach of
memstore's namespaces: stored responses (``/v1/responses/{id}``), conversations, files, batches, fine-tuning,
vector stores. Passing them would let any key holder read or delete another namespace's objects by id, so they
are opt-in, for a server whose keys all belong to one tenant.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
from memstore.adapters.server.limits import ApiError, read_body
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from memstore.adapters.server.state import ServerState

log = logging.getLogger("memstore.server")

DEFAULT_PASSTHROUGH = ("embeddings", "moderations", "completions", "audio", "images")
"""Passed through by default: stateless model endpoints. What the Responses API keeps upstream
(``GET/DELETE /v1/responses/{id}``, ``input_items``, ``cancel``, ``/v1/conversations``) is opt-in: add
``responses`` and ``conversations`` (see the module docstring)."""

SERVED = ("POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models", "GET /v1/models/{model}",
          "/v1/memory/... (the memory API)", "GET /healthz", "GET /metrics")

# what a client may send on to the upstream; its credentials (authorization, x-api-key, api-key), memstore's
# own headers and hop-by-hop headers stay here
_REQUEST_HEADERS = ("content-type", "accept", "openai-beta", "idempotency-key", "user-agent")
_DROPPED_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                             "set-cookie", "proxy-authenticate", "www-authenticate", "upgrade", "trailer", "te"}


def passes(path: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    """True when ``path`` (without ``/v1/``) is passed through: it is one of ``prefixes`` or under one.
    memstore's own memory API is never passed."""
    path = path.strip("/")
    if not path or path == "memory" or path.startswith("memory/"):
        return False
    return any(p == "*" or path == p.strip("/") or path.startswith(p.strip("/") + "/") for p in prefixes)


def supported(state: ServerState) -> str:
    """The sentence a 404 ends with: what this server serves, and what it passes through."""
    text = "This server serves " + ", ".join(SERVED)
    prefixes = list(state.settings.passthrough)
    if not state.settings.upstream_base_url:
        return text + "; nothing else is passed through (no OpenAI-compatible --upstream-base-url is configured)."
    if not prefixes:
        return text + "; nothing else is passed through."
    if "*" in prefixes:
        return text + "; every other /v1 path is passed through to the upstream."
    shown = ", ".join(f"/v1/{p.strip('/')}" for p in prefixes)
    return text + f"; and passes {shown} (and the paths under them) through to the upstream."


def not_found(state: ServerState, method: str, path: str) -> ApiError:
    return ApiError(404, f"Unknown request URL: {method} {path}. {supported(state)}", code="unknown_url")


async def forward(request: Request, state: ServerState, path: str) -> Response:
    """Sends the request on to the upstream as it came (method, query, body), with the server's key, and streams
    the answer back (status, body and the upstream's headers). An upstream that refuses the server's key is a 502
    (the client's proxy key is fine); one that cannot be reached a 502, one that times out a 504."""
    base = str(state.settings.upstream_base_url).rstrip("/")
    body = await read_body(request, state.settings.max_body_bytes)
    headers = {k: v for k, v in request.headers.items() if k.lower() in _REQUEST_HEADERS}
    if state.settings.upstream_api_key:
        headers["authorization"] = f"Bearer {state.settings.upstream_api_key}"
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "namespace"]
    http = state.http_client()
    upstream = http.build_request(request.method, f"{base}/{path.strip('/')}", params=query, headers=headers,
                                  content=body)
    try:
        resp = await http.send(upstream, stream=True)
    except httpx.TimeoutException:
        raise ApiError(504, f"upstream timed out: {request.method} /v1/{path}", type="upstream_error",
                       code="upstream_error") from None
    except httpx.HTTPError as exc:
        raise ApiError(502, f"upstream unreachable: {type(exc).__name__}: {exc}", type="upstream_error",
                       code="upstream_error") from None
    if resp.status_code in (401, 403):
        await resp.aclose()
        raise ApiError(502, f"the upstream refused the server's API key (HTTP {resp.status_code}; check "
                            "--upstream-api-key)", type="upstream_error", code="upstream_auth_error")
    out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_RESPONSE_HEADERS}
    log.debug("passed through %s /v1/%s: %d", request.method, path, resp.status_code)
    return StreamingResponse(resp.aiter_bytes(), status_code=resp.status_code, headers=out_headers,
                             background=BackgroundTask(resp.aclose))
