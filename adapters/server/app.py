"""``memstore serve``: an OpenAI-compatible HTTP proxy that gives any language's OpenAI SDK memory.

Point the SDK's ``base_url`` at ``http://HOST:PORT/v1`` and use a proxy key (``memstore keys create``) as
its API key. ``POST /v1/chat/completions`` and ``POST /v1/responses`` (streaming as server-sent events) run
the very same request path as MemoryClient: the server holds one AsyncMemoryClient configured with the
upstream model settings and calls ``client.chat.completions.create(**body, extra_body={"memory": {...}})``
(or ``client.responses.create``). The upstream provider key stays on the server.

Endpoints: ``/v1/chat/completions``, ``/v1/responses``, ``/v1/models``, the memory API under ``/v1/memory``
(see memory_api.py), ``/healthz`` and ``/metrics`` (Prometheus text); other ``/v1`` paths are passed through
to an OpenAI-compatible upstream or answered with a 404 naming what is served (passthrough.py). Run
``python -m memstore.adapters.server.app --help`` or ``memstore serve --help``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import anyio.lowlevel
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from memstore.adapters.server import passthrough
from memstore.adapters.server.limits import (
    ApiError,
    check_chat_body,
    check_memory_options,
    check_responses_body,
    read_json,
    upstream_error,
)
from memstore.adapters.server.memory_api import router as memory_router
from memstore.adapters.server.state import (
    USER_HEADER,
    ServerSettings,
    ServerState,
    authorize,
    header,
    run,
    state_of,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memstore import metrics
from memstore.errors import ConfigError, InvalidInputError, MemstoreError, NotFoundError, StorageError

log = logging.getLogger("memstore.server")

SERVER_HELP = {
    "memstore_server_auth_failures_total": "Proxy requests refused for a missing, wrong or revoked key.",
    "memstore_server_forbidden_total": "Proxy requests refused for naming a namespace their key is not bound to.",
    "memstore_server_rate_limited_total": "Proxy requests refused by the per-key rate limit.",
    "memstore_server_upstream_errors_total": "Chat and Responses requests whose upstream model call failed.",
    "memstore_server_streams_total": "Streamed chat completions and responses started.",
    "memstore_server_streams_cut_total": "Streams that ended early (client gone or upstream broke).",
}


def _chat_params() -> set[str]:
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    return set(CompletionCreateParamsBase.__annotations__) | {"stream"}


def _responses_params() -> set[str]:
    from openai.types.responses.response_create_params import ResponseCreateParamsBase

    return set(ResponseCreateParamsBase.__annotations__) | {"stream"}


# ---- the app ----------------------------------------------------------------------------------------

class _StatusCounter:
    """ASGI middleware counting responses by status code (for /metrics)."""

    def __init__(self, app: ASGIApp, counts: Counter[str]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counts[str(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app. Its state (Memory, client, keys) is built at startup, so building the app is cheap."""
    settings = settings or ServerSettings()
    statuses: Counter[str] = Counter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(settings.threads, "memstore-server"))
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(settings.threads, 8)
        state = await anyio.to_thread.run_sync(ServerState, settings)
        if settings.warmup:  # in the background: healthy at once, the first request waits only for what is left
            threading.Thread(target=state.warmup, name="memstore-warmup", daemon=True).start()
        app.state.srv = state
        log.info("memstore serve ready: upstream=%s auth=%s", settings.upstream_base_url or "litellm env",
                 settings.auth)
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="memstore proxy", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.statuses = statuses
    app.state.openai_params = _chat_params()
    app.state.chat_params = app.state.openai_params | set(settings.allow_params)
    app.state.responses_openai_params = _responses_params()
    app.state.responses_params = app.state.responses_openai_params | set(settings.allow_params)
    app.add_middleware(_StatusCounter, counts=statuses)
    _install_error_handlers(app)
    app.include_router(memory_router)
    from memstore.adapters.ui import server_router  # the web inspector at /ui

    app.include_router(server_router())
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/responses", responses, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model:path}", get_model, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/metrics", prometheus, methods=["GET"])
    # last: every other /v1 path is passed through to the upstream, or a 404 that says what is served
    app.add_api_route("/v1/{path:path}", other_endpoints, methods=_METHODS, include_in_schema=False)
    return app


def _version() -> str:
    from memstore import __version__

    return __version__


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_r: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(InvalidInputError)
    async def _invalid(_r: Request, exc: InvalidInputError) -> Response:
        return ApiError(400, str(exc), code="invalid_value").response()

    @app.exception_handler(NotFoundError)
    async def _missing(_r: Request, exc: NotFoundError) -> Response:
        return ApiError(404, str(exc), code="not_found").response()

    @app.exception_handler(MemstoreError)
    async def _memstore(_r: Request, exc: MemstoreError) -> Response:
        status = 503 if isinstance(exc, ConfigError | StorageError) else 500
        busy = "locked" in str(exc).lower() or "busy" in str(exc).lower()
        log.warning("memory layer error (%d): %s", status, exc)  # the detail (SQL ...) stays in the server log
        return ApiError(status, f"memory layer error ({'database busy' if busy else type(exc).__name__}); "
                                "the server log has the details", type="server_error", code="memory_error").response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return ApiError(400, f"invalid parameter {param}: {first.get('msg', 'invalid request')}", param=param,
                        code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, exc: StarletteHTTPException) -> Response:
        srv = getattr(r.app.state, "srv", None)
        if exc.status_code == 404 and exc.detail == "Not Found" and srv is not None:
            return passthrough.not_found(srv, r.method, r.url.path).response()
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(ClientDisconnect)
    async def _gone(r: Request, _exc: ClientDisconnect) -> Response:
        log.info("client %s disconnected before sending the whole request (%s %s)",
                 r.client.host if r.client else "?", r.method, r.url.path)
        return Response(status_code=499)  # nobody reads it (nginx's "client closed request")

    @app.exception_handler(Exception)
    async def _crash(_r: Request, exc: Exception) -> Response:
        log.exception("memstore serve: unhandled error")
        return ApiError(500, f"internal server error: {type(exc).__name__}", type="server_error").response()


# ---- chat completions and responses -----------------------------------------------------------------

@dataclass(frozen=True)
class _Api:
    """What differs between the two memory endpoints; everything else is one request path (``_proxy``)."""

    name: str                       # for messages and logs
    params: str                     # app.state attribute: the body parameters accepted
    openai_params: str              # app.state attribute: those of OpenAI's own API (the rest are vendor ones)
    check: Callable[[dict[str, Any], int], None]
    create: Callable[[Any], Any]    # the client's create method
    is_result: Callable[[Any], bool]
    not_result: str                 # what a body that is none lacks
    events: bool                    # the Responses stream format: ``event:`` lines, no [DONE]


def _is_chat(result: Any) -> bool:
    return isinstance(getattr(result, "choices", None), list)


def _is_response(result: Any) -> bool:
    return isinstance(getattr(result, "output", None), list)


CHAT = _Api("chat completion", "chat_params", "openai_params", check_chat_body,
            lambda client: client.chat.completions.create, _is_chat, "no 'choices' list", events=False)
RESPONSES = _Api("Responses API response", "responses_params", "responses_openai_params", check_responses_body,
                 lambda client: client.responses.create, _is_response, "no 'output' list", events=True)


async def chat_completions(request: Request) -> Response:
    return await _proxy(request, CHAT)


async def responses(request: Request) -> Response:
    """``POST /v1/responses``: the Responses API with memory (the block in ``instructions``, every turn);
    ``previous_response_id``, ``conversation``, ``store`` and the rest go to the upstream as given."""
    return await _proxy(request, RESPONSES)


async def _proxy(request: Request, api: _Api) -> Response:
    st = state_of(request)
    scope = await authorize(request)
    body = await read_json(request, st.settings.max_body_bytes)
    api.check(body, st.settings.max_messages)
    mem_opts = check_memory_options(body.pop("memory", None))
    unknown = sorted(set(body) - getattr(request.app.state, api.params))
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0],
                       code="unknown_parameter")
    if st.settings.models and body["model"] not in st.settings.models:
        raise ApiError(404, f"The model {body['model']!r} is not served here; available: {st.settings.models}",
                       param="model", code="model_not_found")
    scope.narrow(mem_opts.pop("namespace", None))
    user = mem_opts.pop("user_id", None) or header(request, USER_HEADER) or body.get("user")
    mem_opts = {**mem_opts, "namespace": scope.namespace}
    if user:
        mem_opts["user_id"] = user
    stream = bool(body.pop("stream", False))
    # vendor parameters allowed with --allow-param travel in the request body, not as SDK arguments
    openai_params = getattr(request.app.state, api.openai_params)
    vendor = {k: body.pop(k) for k in list(body) if k not in openai_params}
    try:
        result = await api.create(st.client)(stream=stream, extra_body={**vendor, "memory": mem_opts}, **body)
    except MemstoreError:
        raise
    except Exception as exc:
        metrics.inc("memstore_server_upstream_errors_total")
        err = upstream_error(exc)
        log.warning("upstream error %d for model %s: %s", err.status, body.get("model"), err.message)
        raise err from None
    if not stream:
        if not api.is_result(result):  # HTML, {}, choices: null ... from upstream
            metrics.inc("memstore_server_upstream_errors_total")
            log.warning("upstream answered model %s with something that is no %s: %.200r", body.get("model"),
                        api.name, result)
            raise ApiError(502, f"upstream model error: the upstream answered with something that is not a "
                                f"{api.name} ({api.not_result})", type="upstream_error", code="upstream_error")
        info = getattr(result, "memstore", None)
        return Response(_dump(result), media_type="application/json", headers=_info_headers(info))
    return await _stream_response(result, api.events)


def _dump(item: Any) -> str:
    """An SDK object as JSON the way the SDK writes it (``to_json``): API field names, and the fields the
    upstream sent (a missing one stays missing, an extra one is kept) rather than every field the installed
    SDK declares."""
    return item.model_dump_json(by_alias=True, exclude_unset=True, warnings=False)  # type: ignore[no-any-return]


def _sse(item: Any, events: bool) -> str:
    if not events:
        return f"data: {_dump(item)}\n\n"
    kind = getattr(item, "type", None)
    return (f"event: {kind}\n" if isinstance(kind, str) else "") + f"data: {_dump(item)}\n\n"


def _sse_error(err: ApiError, events: bool, seq: int) -> str:
    """An upstream that broke mid-stream, told the client the way its API does: chat streams carry OpenAI's
    error body, Responses streams an ``error`` event."""
    if not events:
        return f"data: {_json(err.body())}\n\n"
    event = {"type": "error", "code": err.code, "message": err.message, "param": err.param, "sequence_number": seq}
    return f"event: error\ndata: {_json(event)}\n\n"


async def _stream_response(stream: Any, events: bool = False) -> Response:
    """Pulls the first chunk before answering, so an upstream refusal is still a proper error status."""
    info = stream.memstore
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        metrics.inc("memstore_server_upstream_errors_total")
        raise upstream_error(exc) from None
    if first is None:  # not even a first chunk: what came back was no stream (an HTML page, ``{}``, nothing)
        metrics.inc("memstore_server_upstream_errors_total")
        raise ApiError(502, "upstream model error: the upstream's stream ended before its first event (is it an "
                       "OpenAI-compatible endpoint?)", type="upstream_error", code="upstream_error")
    metrics.inc("memstore_server_streams_total")

    async def body() -> AsyncIterator[str]:
        complete = False
        sent = 0
        try:
            yield _sse(first, events)
            sent += 1
            while True:
                # shielded: a client hanging up must not cancel the stream's own bookkeeping half-way
                # (its end-of-stream recording runs inside __anext__); it is noticed at the checkpoint
                with anyio.CancelScope(shield=True):
                    try:
                        chunk = await stream.__anext__()
                    except StopAsyncIteration:
                        chunk = None
                await anyio.lowlevel.checkpoint()  # where a pending cancellation (client gone) lands
                if chunk is None:
                    break
                yield _sse(chunk, events)
                sent += 1
            complete = True
            if not events:
                yield "data: [DONE]\n\n"
        except Exception as exc:  # the upstream broke mid-stream: tell the client the OpenAI way
            metrics.inc("memstore_server_upstream_errors_total")
            yield _sse_error(upstream_error(exc), events, sent)
        finally:
            if not complete:
                metrics.inc("memstore_server_streams_cut_total")
            with anyio.CancelScope(shield=True):  # record the (partial) turn even if the client left
                await stream.aclose()

    headers = {**_info_headers(info), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return _ClosingStreamingResponse(body(), media_type="text/event-stream", headers=headers)


# ---- everything else under /v1 ----------------------------------------------------------------------

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def other_endpoints(request: Request, path: str) -> Response:
    """Every /v1 path the routes above do not serve: a method one of them does not take is a 405; a path
    passed through (``ServerSettings.passthrough``) goes to the OpenAI-compatible upstream with the server's
    key; anything else is a 404 that lists what this server serves."""
    from starlette.routing import Match

    for route in request.app.router.routes:
        if getattr(route, "endpoint", None) is other_endpoints:
            continue
        match, _child = route.matches(request.scope)
        if match == Match.PARTIAL:
            raise ApiError(405, "Method Not Allowed", code="method_not_allowed")
    st = state_of(request)
    await authorize(request)
    if st.settings.upstream_base_url and passthrough.passes(path, st.settings.passthrough):
        return await passthrough.forward(request, st, path)
    raise passthrough.not_found(st, request.method, request.url.path)


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however streaming ends. Starlette leaves a generator whose client went
    away to the garbage collector; closing it here runs its ``finally`` (which records the partial turn)
    at once."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True):
                    await closer()


def _json(data: Any) -> str:
    import json

    return json.dumps(data, separators=(",", ":"))


def _info_headers(info: Any) -> dict[str, str]:
    """What memstore did, for clients that want to know (every SDK ignores unknown headers)."""
    if info is None:
        return {}
    out = {"x-memstore-namespace": quote(info.namespace or "", safe=""),
           "x-memstore-memories": str(len(info.memory_ids)), "x-memstore-rules": str(len(info.rule_ids)),
           "x-memstore-injected-tokens": str(info.tokens)}
    if info.user_id:
        out["x-memstore-user"] = quote(info.user_id, safe="")
    if info.memory_ids:
        out["x-memstore-memory-ids"] = ",".join(info.memory_ids[:50])
    if info.context is not None:
        out["x-memstore-retrieval-ms"] = f"{info.context.latency_ms:.1f}"
    if info.turn_id:
        out["x-memstore-turn-id"] = info.turn_id
    if info.failed_open:
        out["x-memstore-failed-open"] = failed_open_reason(info.failed_open)
    return out


_FAILED_STEPS = ("retrieval", "recording", "compliance")


def failed_open_reason(detail: str) -> str:
    """A short reason code for the ``x-memstore-failed-open`` header (``retrieval-db-busy``,
    ``recording-failed`` ...). The detail (SQL, exception text) stays in the server log: it can name tables,
    statements or stored text, and the API client only needs to know what was skipped and roughly why."""
    step = detail.split(":", 1)[0].strip()
    step = step if step in _FAILED_STEPS else "memory"
    low = detail.lower()
    if "database is locked" in low or "database is busy" in low or "lock timeout" in low or "busy" in low:
        kind = "db-busy"
    elif "timeout" in low or "timed out" in low:
        kind = "timeout"
    elif "operationalerror" in low or "storageerror" in low or "database" in low:
        kind = "db-error"
    else:
        kind = "failed"
    return f"{step}-{kind}"


# ---- models -----------------------------------------------------------------------------------------

async def _upstream_models(request: Request) -> list[dict[str, Any]] | None:
    st = state_of(request)
    if st.settings.models:
        return [{"id": m, "object": "model", "created": 0, "owned_by": "memstore"} for m in st.settings.models]
    if not st.settings.upstream_base_url:
        return None
    import httpx

    headers = {"Authorization": f"Bearer {st.settings.upstream_api_key}"} if st.settings.upstream_api_key else {}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(st.settings.upstream_base_url.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        raise ApiError(502, f"upstream model list failed: {exc}", type="upstream_error") from None
    if resp.status_code != 200:
        raise ApiError(resp.status_code if resp.status_code >= 400 else 502,
                       f"upstream model list failed: HTTP {resp.status_code}", type="upstream_error")
    data = resp.json().get("data")
    return data if isinstance(data, list) else []


async def list_models(request: Request) -> Response:
    await authorize(request)
    models = await _upstream_models(request)
    return JSONResponse({"object": "list", "data": models or []})


async def get_model(request: Request, model: str) -> Response:
    await authorize(request)
    models = await _upstream_models(request)
    for m in models or []:
        if isinstance(m, dict) and m.get("id") == model:
            return JSONResponse(m)
    if models is None:  # no list to consult: litellm decides at request time
        return JSONResponse({"id": model, "object": "model", "created": 0, "owned_by": "memstore"})
    raise ApiError(404, f"The model {model!r} does not exist", param="model", code="model_not_found")


# ---- health and metrics -----------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    st = state_of(request)
    from sqlalchemy import text

    def db_ok() -> bool:
        with st.memory.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    try:
        await run(db_ok)
    except Exception as exc:
        log.warning("healthz: database check failed: %s", exc)
        return JSONResponse({"status": "error", "error": f"database unavailable ({type(exc).__name__})"},
                            status_code=503)
    return JSONResponse({"status": "ok", "version": _version(), "uptime_s": round(time.time() - st.started, 1),
                         "worker": st.client.worker.running, "pid": os.getpid(),
                         "extraction": await _extraction_health(st)})


async def _extraction_health(st: ServerState) -> dict[str, Any]:
    """Failed turns in the outbox (all processes) and what this process's worker saw fail last."""
    seen = st.client.worker.health.as_dict()

    def from_outbox() -> tuple[int, str | None]:
        failed = st.memory.outbox.counts().get("failed", 0)
        latest = st.memory.outbox.list(status="failed", limit=1) if failed and not seen["last_error"] else []
        return failed, (latest[0].error if latest else None)

    try:
        failed, latest = await run(from_outbox)
    except Exception:  # the health answer must not fail on a busy database
        failed, latest = None, None
    return {"failed_turns": failed, "failures_seen": seen["failed_turns"], "by_reason": seen["by_reason"],
            "last_error": seen["last_error"] or (" ".join(latest.split())[:300] if latest else None)}


async def prometheus(request: Request) -> Response:

    st = state_of(request)
    counters = metrics.snapshot()
    series: dict[str, list[str]] = {}  # base name -> its series (labelled counters have several)
    for key in sorted(counters):
        series.setdefault(metrics.base_name(key), []).append(key)
    lines: list[str] = []
    for name, help_text in {**metrics.HELP, **SERVER_HELP}.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        keys = series.get(name) or [name]
        lines += [f"{key} {_num(counters.get(key, 0))}" for key in keys]
    known = set(metrics.HELP) | set(SERVER_HELP)
    for name in sorted(set(series) - known):
        lines += [f"# TYPE {name} counter", *(f"{key} {_num(counters[key])}" for key in series[name])]
    lines += ["# HELP memstore_http_responses_total HTTP responses of the proxy by status code.",
              "# TYPE memstore_http_responses_total counter"]
    for code, n in sorted(request.app.state.statuses.items()):
        lines.append(f'memstore_http_responses_total{{code="{code}"}} {n}')
    try:
        depth = await run(st.memory.outbox.pending)
    except Exception:  # the gauge goes missing rather than /metrics failing
        depth = None
    if depth is not None:
        lines += ["# HELP memstore_extraction_queue_depth Turns waiting in the outbox or being extracted.",
                  "# TYPE memstore_extraction_queue_depth gauge", f"memstore_extraction_queue_depth {depth}"]
    checks = counters.get("memstore_rule_checks_total", 0)
    if checks:
        ratio = 1 - counters.get("memstore_rule_violations_total", 0) / checks
        lines += ["# HELP memstore_rule_compliance_ratio Share of checked replies that obeyed the rule.",
                  "# TYPE memstore_rule_compliance_ratio gauge", f"memstore_rule_compliance_ratio {ratio:.6f}"]
    worker = st.client.worker
    lines += ["# HELP memstore_worker_processed_total Turns the extraction worker handled.",
              "# TYPE memstore_worker_processed_total counter", f"memstore_worker_processed_total {worker.processed}",
              "# HELP memstore_worker_errors_total Errors of the extraction worker loop.",
              "# TYPE memstore_worker_errors_total counter", f"memstore_worker_errors_total {worker.errors}",
              "# HELP memstore_server_start_time_seconds Unix time the server started.",
              "# TYPE memstore_server_start_time_seconds gauge", f"memstore_server_start_time_seconds {st.started:.3f}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# ---- running it -------------------------------------------------------------------------------------

def run_server(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Serves until interrupted (one process: rate limits and the worker live in it)."""
    import uvicorn

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpx2", "httpcore", "chromadb"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if not settings.auth and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("memstore serve: --no-auth on %s: anyone who can reach this port can read every memory", host)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":  # what memstore.testing.server_process runs: `memstore serve` without the CLI around it
    import sys

    import typer

    from memstore.cli.app import run_guarded
    from memstore.cli.serve import serve

    _cli = typer.Typer(add_completion=False)
    _cli.command()(serve)
    sys.exit(run_guarded(lambda: typer.main.get_command(_cli).main(standalone_mode=False)))
