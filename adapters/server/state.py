"""What one proxy-server process holds (settings, the Memory, the one AsyncMemoryClient, keys, limits),
and how a request is authorised and scoped to a namespace."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import memstore.adapters.server.keys  # noqa: F401  (registers proxy_keys on SQLModel.metadata before any engine exists)
from memstore.adapters.server.keys import KeyStore, ProxyKey
from memstore.adapters.server.limits import ApiError, RateLimiter
from memstore.adapters.server.passthrough import DEFAULT_PASSTHROUGH
from starlette.requests import Request

from memstore import metrics
from memstore.errors import InvalidInputError
from memstore.validate import check_scope

if TYPE_CHECKING:
    import httpx

    from memstore.storage.embed import Embedder

log = logging.getLogger("memstore.server")
T = TypeVar("T")

USER_HEADER = "x-memstore-user"
NAMESPACE_HEADER = "x-memstore-namespace"


@dataclass
class ServerSettings:
    """Everything ``memstore serve`` can be told. Unset memory settings come from MEMSTORE_* env vars."""

    home: str | None = None
    database_url: str | None = None
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout: float = 600.0
    upstream_max_retries: int = 2
    namespace: str = "default"            # for requests that name none (and keys bound to none)
    auth: bool = True                     # False: no proxy keys needed (local development only)
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 1000
    rate_limit: float = 20.0              # requests per second per key; 0 turns rate limiting off
    rate_burst: float | None = None       # default: 2 x rate_limit
    worker: bool = True                   # run background extraction in this process
    extractor: str | None = None          # "llm" | "rules" (default: MEMSTORE_EXTRACTOR or llm)
    extract_model: str | None = None      # default: MEMSTORE_LLM_MODEL
    enforce_rules: bool = False
    strict: bool = False
    models: list[str] = field(default_factory=list)        # if set: the only models clients may use
    allow_params: list[str] = field(default_factory=list)  # extra body params passed upstream
    # /v1 paths (prefixes) passed through to an OpenAI-compatible upstream as they are; "*": all (passthrough.py)
    passthrough: list[str] = field(default_factory=lambda: list(DEFAULT_PASSTHROUGH))
    embedder: Embedder | None = None      # None: the default (the bundled MiniLM); tests pass a HashEmbedder
    threads: int = 16
    warmup: bool = True


class ServerState:
    """Built once at startup (in a thread: it loads the embedding model), closed at shutdown."""

    def __init__(self, settings: ServerSettings) -> None:
        from memstore.adapters.openai.client import AsyncMemoryClient

        from memstore.config import MemoryConfig
        from memstore.memory import Memory

        self.settings = settings
        self.started = time.time()
        overrides: dict[str, Any] = {}
        if settings.home:
            overrides["home"] = settings.home
        if settings.database_url:
            overrides["database_url"] = settings.database_url
        if settings.extractor:
            overrides["extractor"] = settings.extractor
        if settings.extract_model:
            overrides["llm_model"] = settings.extract_model
        if settings.strict:
            overrides["strict"] = True
        cfg = MemoryConfig(**overrides)
        if settings.upstream_base_url and not cfg.llm_api_base:
            # extraction goes to the same upstream as chat unless configured otherwise
            model = cfg.llm_model if "/" in cfg.llm_model else f"openai/{cfg.llm_model}"
            cfg = cfg.model_copy(update={"llm_api_base": settings.upstream_base_url, "llm_model": model,
                                         "llm_api_key": cfg.llm_api_key or settings.upstream_api_key})
        self.memory = Memory(config=cfg, embedder=settings.embedder)
        self.keys = KeyStore(self.memory.engine)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        # an OpenAI-compatible upstream that needs no key (ollama, vLLM ...) still gets one: the SDK insists
        upstream_key = settings.upstream_api_key or ("no-key" if settings.upstream_base_url else None)
        self.client = AsyncMemoryClient(
            memory=self.memory, base_url=settings.upstream_base_url, api_key=upstream_key,
            timeout=settings.upstream_timeout, max_retries=settings.upstream_max_retries,
            namespace=settings.namespace, strict=settings.strict, enforce_rules=settings.enforce_rules,
            start_worker=settings.worker,
        )
        self._http: httpx.AsyncClient | None = None
        if settings.auth and self.keys.count_active() == 0:
            log.warning("memstore serve: no proxy keys exist, so every request will get 401 until one is created "
                        "with `%s` (or run with --no-auth for local development)", keys_create_hint(settings))

    def warmup(self) -> None:
        """Loads what the first request would otherwise wait for: the embedder (queued first, on its own
        thread), the index, litellm. Runs in the background; a failure is logged, requests then pay for it."""
        from memstore.llm import litellm
        from memstore.storage.embed import preload

        try:
            preload(self.memory.store.embedder)
            self.memory.store.ensure_repaired()
            litellm()
        except Exception as exc:
            log.warning("memstore serve: warm-up failed (the first requests load what is missing): %s", exc)

    def http_client(self) -> httpx.AsyncClient:
        """The HTTP client of pass-through requests to the upstream (made on first use, in the server's loop)."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=self.settings.upstream_timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.client.close()



@dataclass
class Scope:
    """Who is calling and which namespace the request may touch."""

    key: ProxyKey | None
    namespace: str
    caller: str

    @property
    def bound(self) -> bool:
        return self.key is not None and self.key.namespace is not None

    def narrow(self, namespace: str | None) -> None:
        """Applies a namespace the request asks for; a key bound to another namespace gets 403."""
        if namespace is None:
            return
        try:
            _u, namespace = check_scope("user", namespace)
        except InvalidInputError as exc:
            raise ApiError(400, f"invalid namespace: {exc}", param="namespace") from None
        if self.bound and namespace != self.namespace:
            metrics.inc("memstore_server_forbidden_total")
            raise ApiError(403, f"this key is bound to namespace {self.namespace!r} and cannot use {namespace!r}",
                           param="namespace", code="namespace_forbidden")
        self.namespace = namespace


def keys_create_hint(settings: ServerSettings) -> str:
    """The exact command that creates a proxy key in this server's database."""
    import shlex

    if settings.database_url:
        return "MEMSTORE_DATABASE_URL=... memstore keys create --name NAME"
    where = f"--home {shlex.quote(settings.home)} " if settings.home else ""
    return f"memstore {where}keys create --name NAME"


async def _no_keys_hint(st: ServerState) -> str:
    """Said in a 401 while the server has no active key at all: nobody can get in until one is created."""
    try:
        active = await run(st.keys.count_active)
    except Exception:
        return ""
    if active:
        return ""
    return (f" This server has no proxy keys yet: its operator must create one with "
            f"`{keys_create_hint(st.settings)}` and give it to you as the API key.")


def state_of(request: Request) -> ServerState:
    return request.app.state.srv  # type: ignore[no-any-return]


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking call (SQL, embedding) in the thread pool."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def header(request: Request, name: str) -> str | None:
    """A header value as UTF-8 text (HTTP headers arrive as latin-1); None if absent or blank."""
    raw = request.headers.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return raw.encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        return raw.strip()


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key") or request.headers.get("api-key")


async def authorize(request: Request) -> Scope:
    """Checks the proxy key and the rate limit; resolves the namespace (header, then query, then the
    key's binding, then the server default). Raises ApiError 401 / 403 / 429 / 400."""
    st = state_of(request)
    key: ProxyKey | None = None
    if st.settings.auth:
        presented = presented_key(request)
        if not presented:
            metrics.inc("memstore_server_auth_failures_total")
            raise ApiError(401, "You didn't provide an API key. Send a memstore proxy key as "
                                "'Authorization: Bearer msk_...'." + await _no_keys_hint(st),
                           code="invalid_api_key")
        key = await run(st.keys.verify, presented)
        if key is None:
            metrics.inc("memstore_server_auth_failures_total")
            raise ApiError(401, "Incorrect or revoked API key provided." + await _no_keys_hint(st),
                           code="invalid_api_key")
        caller = f"key:{key.id}"
    else:
        caller = f"addr:{request.client.host if request.client else '?'}"
    try:
        st.limiter.check(caller)
    except ApiError:
        metrics.inc("memstore_server_rate_limited_total")
        raise
    if key is not None and st.keys.touch_due(key):
        await run(st.keys.touch, key)
    scope = Scope(key=key, namespace=(key.namespace if key and key.namespace else st.settings.namespace),
                  caller=caller)
    scope.narrow(header(request, NAMESPACE_HEADER))
    scope.narrow(request.query_params.get("namespace") or None)
    return scope
