"""MemoryClient / AsyncMemoryClient: drop-ins for openai.OpenAI / openai.AsyncOpenAI.

Chat and the Responses API to OpenAI or to an OpenAI-compatible ``base_url`` are made by the real openai SDK
(its retries, timeouts, lenient parsing and exception classes, exactly); provider-prefixed models go through
litellm, their errors raised as the SDK's classes (errors.py) and their results built as leniently as the SDK
builds an API answer (streams.construct). Background extraction goes to the client's own
endpoint with its key unless ``MemoryConfig.llm_api_base`` names another; ``close()`` and interpreter exit
wait (``close_timeout``) for the turns this client recorded.

``client.chat.completions.create`` (and ``client.responses.create``) get the user's memory; every other
resource (embeddings, models, files, audio, images ...) is delegated to a real ``openai.OpenAI`` built with
the same arguments. Any model litellm reaches works: "gpt-4.1-mini", "anthropic/claude-...",
"ollama/llama3.2", or any name with ``base_url`` pointing at an OpenAI-compatible server.

The twins share everything but I/O: the request steps (steps.py), the stream collector (streams.py) and the
construction and litellm arguments (``_Base``). Each ``create`` only calls the model (directly or awaited) and
runs the synchronous steps (directly or in a thread).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, overload

import openai
from memstore.adapters.openai.errors import as_openai_error, bad_request
from memstore.adapters.openai.lifecycle import ExitDrain, at_exit
from memstore.adapters.openai.responses import AsyncResponses, Responses
from memstore.adapters.openai.steps import (
    Exchange,
    MemoryInfo,
    Options,
    check_messages,
    prepare,
    resolve_options,
    rule_retry,
)
from memstore.adapters.openai.streams import AsyncMemoryStream, MemoryStream, construct, reply_text
from openai import NotGiven
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import PrivateAttr

from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError
from memstore.instructions import feedback as fb
from memstore.llm import LLM, litellm, provider_of
from memstore.memory import Memory
from memstore.records import Feedback
from memstore.storage.embed import preload
from memstore.worker import Worker

if TYPE_CHECKING:
    import httpx2
    from openai import DataResidency, Timeout
    from openai import resources as sdk
    from openai._provider import _Provider
    from openai.auth import WorkloadIdentity, X509WorkloadIdentity

__all__ = ["AsyncMemoryClient", "AsyncMemoryStream", "MemoryChatCompletion", "MemoryClient", "MemoryStream"]

log = logging.getLogger("memstore")
_NOT_PASSED = {"extra_query"}  # openai-only transport options litellm has no equivalent for


@functools.cache
def _sdk_params() -> frozenset[str]:
    """The request-body parameters of the installed openai SDK's chat.completions.create."""
    params = inspect.signature(openai.resources.chat.completions.Completions.create).parameters
    return frozenset(params) - {"self", "messages", "model", "stream", "extra_headers", "extra_query",
                                "extra_body", "timeout"}


class MemoryChatCompletion(ChatCompletion):
    """An ``openai.types.chat.ChatCompletion`` that also says what memstore injected (``.memstore``)."""

    _memstore: MemoryInfo | None = PrivateAttr(default=None)

    @property
    def memstore(self) -> MemoryInfo | None:
        return self._memstore


def to_chat_completion(resp: Any, info: MemoryInfo) -> MemoryChatCompletion:
    """The model's answer as a MemoryChatCompletion. The SDK's own ChatCompletion is taken field by field, as
    the SDK parsed it (``{}`` or ``choices: null`` included); litellm's is built the way the SDK builds an API
    answer, without validation (missing, extra and null fields kept as they are; streams.construct)."""
    if isinstance(resp, ChatCompletion):
        out = MemoryChatCompletion.model_construct(**dict(resp))
        object.__setattr__(out, "__pydantic_fields_set__", set(resp.model_fields_set))  # what the body had
    else:
        out = construct(MemoryChatCompletion, resp)
    out._memstore = info
    return out


def is_completion(resp: Any) -> bool:
    """A chat completion with a list of choices: something to check the rules of and record. The SDK answers
    a body that is none (HTML, ``{}``, ``choices: null``) with its text or an empty object, and so do we."""
    return isinstance(resp, ChatCompletion) and isinstance(resp.choices, list)


def _stream_arg(stream: bool | None) -> dict[str, Any]:
    return {} if stream is None else {"stream": stream}


class _Base:
    """What both clients share: the memory, the request defaults, what litellm gets, and every other resource
    delegated to the real openai client."""

    _openai_class: ClassVar[type[openai.OpenAI] | type[openai.AsyncOpenAI]]

    def __init__(
        self,
        openai_args: dict[str, Any],
        *,
        memory: Memory | MemoryConfig | str | Path | None,
        user_id: str | None,
        namespace: str,
        strict: bool | None,
        enforce_rules: bool,
        start_worker: bool,
    ) -> None:
        if isinstance(memory, Memory):
            self.memory = memory
        elif isinstance(memory, MemoryConfig):
            self.memory = Memory(config=memory)
        else:
            self.memory = Memory(path=memory)
        # the embedder loads (or makes its ONNX export) in the background: the first request waits only for
        # what is left of it
        preload(self.memory.store.embedder)
        self.user_id = user_id
        self.namespace = namespace
        self.strict: bool = self.memory.config.strict if strict is None else strict
        self.enforce_rules = enforce_rules
        # what the caller gave (None and NOT_GIVEN mean "the SDK's default"): the real openai client gets it all
        self._openai_args = {k: v for k, v in openai_args.items() if v is not None and not isinstance(v, NotGiven)}
        self.api_key: str | Callable[[], Any] | None = self._openai_args.get("api_key")
        self.base_url: Any = self._openai_args.get("base_url")
        self.timeout: Any = self._openai_args.get("timeout")
        self.max_retries: int = openai_args["max_retries"]
        self.default_headers: dict[str, str] = dict(self._openai_args.get("default_headers") or {})
        self._delegate: Any = None
        self._extraction_llm = self._route_extraction()
        self.worker = Worker(self.memory.extraction)
        self._exit_drain = ExitDrain(self.worker, self.memory.config.close_timeout)
        self._warm = start_worker and self.memory.config.extractor == "llm"
        if start_worker:
            self.worker.start()
            at_exit(self._exit_drain)

    # -- where the model calls go -------------------------------------------------------------------
    def _direct(self, model: str) -> bool:
        """True when chat goes to OpenAI or to the OpenAI-compatible server at ``base_url``: the real openai SDK
        then makes the call (its retries, timeouts, parsing and exceptions, exactly). Models with a provider
        prefix ("anthropic/...", "ollama/...", "openai/...") and ones litellm routes elsewhere go through
        litellm."""
        if "/" in model:
            return False
        return bool(self.base_url) or provider_of(model) == "openai"

    def _sdk(self) -> Any:
        """The real openai client, built from the caller's arguments on first use."""
        if self._delegate is None:
            self._delegate = self._openai_class(**self._openai_args)
        return self._delegate

    def _sdk_resource(self, kwargs: dict[str, Any]) -> Any:
        """``chat.completions`` of the real client (``_sdk_client``)."""
        return self._sdk_client(kwargs).chat.completions

    def _sdk_client(self, kwargs: dict[str, Any]) -> Any:
        """The real client for one request: ``max_retries`` / ``api_key`` / ``api_base`` given per request
        (litellm's spelling, accepted before) become the SDK's per-request options."""
        options: dict[str, Any] = {k: kwargs.pop(k) for k in ("max_retries", "api_key") if k in kwargs}
        if "api_base" in kwargs:
            options["base_url"] = kwargs.pop("api_base")
        sdk = self._sdk()
        return sdk.with_options(**options) if options else sdk

    def _route_extraction(self) -> LLM | None:
        """Background extraction talks to the endpoint the application named, with its key: the client's
        ``base_url`` and ``api_key``, unless ``llm_api_base`` (MEMSTORE_LLM_API_BASE) names another endpoint
        or the Memory was given its own model. Returns the extraction model when it follows the client."""
        mem, cfg = self.memory, self.memory.config
        if mem.llm_given or cfg.llm_api_base:
            return None
        base = str(self.base_url) if self.base_url else None
        model = cfg.llm_model
        if base and "/" not in model:
            model = f"openai/{model}"
        llm = LLM(model, base, cfg.llm_api_key or self.api_key, cfg.llm_timeout, cfg.llm_max_retries)
        mem.llm = llm
        return llm

    def _note_model(self, model: str) -> None:
        """Without a configured ``llm_model``, extraction uses the model the application last used, unless that
        model is OpenAI's own (then the cheaper default, gpt-4.1-mini, at the same endpoint)."""
        llm = self._extraction_llm
        if llm is None or "llm_model" in self.memory.config.model_fields_set:
            return
        if self.base_url:
            llm.model = model if "/" in model else f"openai/{model}"
        else:
            llm.model = self.memory.config.llm_model if self._direct(model) else model

    # -- what litellm gets ------------------------------------------------------------------------
    def _call_kwargs(self, model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in kwargs.items() if k not in _NOT_PASSED and v is not None}
        out["model"] = model
        if self.api_key and "api_key" not in out:
            # a callable key is asked each request, as the SDK does (the async client awaits the answer)
            out["api_key"] = self.api_key() if callable(self.api_key) else self.api_key
        if self.base_url and "api_base" not in out:
            out["api_base"] = str(self.base_url)
            if "/" not in model:
                out["custom_llm_provider"] = "openai"
        if "metadata" in out:
            # OpenAI's `metadata` (stored completions) is not litellm's logging `metadata`: send it on the wire
            # as the caller gave it (and a copy, since litellm writes into the dict it gets)
            out["extra_body"] = {**(out.get("extra_body") or {}), "metadata": dict(out.pop("metadata"))}
        if out.get("custom_llm_provider") == "openai" or model.startswith("openai/"):
            # an OpenAI-compatible server decides for itself which parameters it takes: litellm must not
            # drop or refuse the ones it does not know this model to support
            allowed = [k for k in kwargs if k in _sdk_params() and k != "metadata"]
            if allowed:
                out["allowed_openai_params"] = allowed
        if self.timeout is not None and "timeout" not in out:
            out["timeout"] = self.timeout
        out.setdefault("max_retries", self.max_retries)
        if self.default_headers:
            out["extra_headers"] = {**self.default_headers, **(out.get("extra_headers") or {})}
        return out

    def _begin(self, model: Any, kwargs: dict[str, Any], chat: bool = False) -> tuple[str, Options, dict[str, Any]]:
        """The pure start of every request: the model checked, memstore's options popped out of ``kwargs``,
        the arguments for litellm (none for a chat request the openai SDK makes)."""
        if not isinstance(model, str) or not model:
            raise bad_request("you must provide a model parameter (a non-empty string)", "model")
        try:
            opts = resolve_options(kwargs, self.user_id, self.namespace)
        except InvalidInputError as exc:
            raise bad_request(str(exc), "extra_body") from None
        self._note_model(model)
        return model, opts, {} if chat and self._direct(model) else self._call_kwargs(model, kwargs)

    def _send(self, model: str, kwargs: dict[str, Any], call: dict[str, Any], messages: Any,
              stream: bool | None) -> Any:
        """One chat call: through the real openai SDK, or litellm with its errors as the SDK's."""
        if self._direct(model):
            return self._sdk_resource(dict(kwargs)).create(messages=messages, model=model, **_stream_arg(stream),
                                                           **_without(kwargs))
        try:
            return litellm().completion(messages=messages, **_stream_arg(stream), **call)
        except Exception as exc:
            mapped = as_openai_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _exchange(self, opts: Options, info: MemoryInfo, messages: Any, model: str) -> Exchange:
        return Exchange(self.memory, opts, info, messages, model, self.strict, self.worker, self._recorded)

    def _recorded(self, turn_id: str) -> None:
        self._exit_drain.turns.append(turn_id)
        if self._warm:
            # extraction calls go through litellm, which takes seconds to import: start now, in the background,
            # so a script that exits right after its request does not spend its close_timeout importing it
            self._warm = False
            threading.Thread(target=litellm, name="memstore-litellm-import", daemon=True).start()

    def _drain(self) -> bool:
        """close() and interpreter exit: waits up to ``MemoryConfig.close_timeout`` for the turns this client
        recorded to be extracted by its worker. True when none is left."""
        return self._exit_drain.close()

    def __getattr__(self, name: str) -> Any:
        """Every resource memory has nothing to do with: the real openai client's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._sdk(), name)

    # -- memory housekeeping ----------------------------------------------------------------------
    def feedback(self, response_id: str, rating: int, comment: str | None = None) -> Feedback:
        """Records a person's +1 / -1 for a response this client returned."""
        return fb.rate(self.memory.engine, response_id, rating, comment)

    def compare(self, response_id_a: str, response_id_b: str, preferred: str, comment: str | None = None) -> Feedback:
        """Records which of two responses to the same prompt the person preferred."""
        return fb.compare(self.memory.engine, response_id_a, response_id_b, preferred, comment)


def _without(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request's arguments for the SDK: those ``_sdk_resource`` turned into per-request options removed."""
    return {k: v for k, v in kwargs.items() if k not in ("max_retries", "api_key", "api_base")}


class Completions:
    """``client.chat.completions``: ``create`` with memory, same signature as the openai SDK's."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    @overload
    def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
               stream: Literal[False] | None = None, **kwargs: Any) -> MemoryChatCompletion: ...

    @overload
    def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
               stream: Literal[True], **kwargs: Any) -> MemoryStream: ...

    @overload
    def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
               stream: bool | None = None, **kwargs: Any) -> MemoryChatCompletion | MemoryStream: ...

    def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str, stream: bool | None = None,
               **kwargs: Any) -> MemoryChatCompletion | MemoryStream:
        c = self._client
        model, opts, call = c._begin(model, kwargs, chat=True)
        messages = check_messages(messages)
        sent, info = prepare(c.memory, opts, messages, c.strict)
        exchange = c._exchange(opts, info, messages, model)
        if stream:
            return MemoryStream(c._send(model, kwargs, call, sent, True), info, exchange.record_stream)
        raw = c._send(model, kwargs, call, sent, stream)
        if not isinstance(raw, ChatCompletion) and c._direct(model):
            return raw  # type: ignore[no-any-return]  # the SDK's text of a body that is no JSON: as the SDK
        resp = to_chat_completion(raw, info)
        if not is_completion(resp):
            return resp
        if c.enforce_rules and (retry := rule_retry(info, sent, reply_text(resp))):
            second = to_chat_completion(c._send(model, kwargs, call, retry.messages, stream), info)
            if is_completion(second) and retry.keep_retry(info, reply_text(second)):
                resp = second
        exchange.record(reply_text(resp), resp.id)
        return resp


class AsyncCompletions:
    """``client.chat.completions`` of AsyncMemoryClient."""

    def __init__(self, client: AsyncMemoryClient) -> None:
        self._client = client

    @overload
    async def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
                     stream: Literal[False] | None = None, **kwargs: Any) -> MemoryChatCompletion: ...

    @overload
    async def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
                     stream: Literal[True], **kwargs: Any) -> AsyncMemoryStream: ...

    @overload
    async def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
                     stream: bool | None = None, **kwargs: Any) -> MemoryChatCompletion | AsyncMemoryStream: ...

    async def create(self, *, messages: Iterable[ChatCompletionMessageParam], model: str,
                     stream: bool | None = None, **kwargs: Any) -> MemoryChatCompletion | AsyncMemoryStream:
        c = self._client
        model, opts, call = await c._abegin(model, kwargs, chat=True)
        messages = check_messages(messages)
        sent, info = await asyncio.to_thread(prepare, c.memory, opts, messages, c.strict)
        exchange = c._exchange(opts, info, messages, model)
        if stream:
            return AsyncMemoryStream(await c._asend(model, kwargs, call, sent, True), info, exchange.record_stream)
        raw = await c._asend(model, kwargs, call, sent, stream)
        if not isinstance(raw, ChatCompletion) and c._direct(model):
            return raw  # type: ignore[no-any-return]  # the SDK's text of a body that is no JSON: as the SDK
        resp = to_chat_completion(raw, info)
        if not is_completion(resp):
            return resp
        if c.enforce_rules and (retry := rule_retry(info, sent, reply_text(resp))):
            second = to_chat_completion(await c._asend(model, kwargs, call, retry.messages, stream), info)
            if is_completion(second) and retry.keep_retry(info, reply_text(second)):
                resp = second
        await asyncio.to_thread(exchange.record, reply_text(resp), resp.id)
        return resp


_CompletionsT = TypeVar("_CompletionsT", Completions, AsyncCompletions)


class Chat(Generic[_CompletionsT]):
    """``client.chat``."""

    def __init__(self, completions: _CompletionsT) -> None:
        self.completions: _CompletionsT = completions


class MemoryClient(_Base):
    """``openai.OpenAI`` with memory: the SDK's own arguments, plus ``memory`` (a Memory, a MemoryConfig or a
    path), ``user_id`` (the default user), ``namespace``, ``strict`` (raise instead of failing open),
    ``enforce_rules`` (one corrective retry when a reply breaks a checkable rule) and ``start_worker`` (run
    background extraction in this process)."""

    _openai_class = openai.OpenAI
    # every other resource is the real openai client's (``__getattr__``), typed as the SDK types it
    completions: sdk.Completions
    embeddings: sdk.Embeddings
    files: sdk.Files
    images: sdk.Images
    audio: sdk.Audio
    moderations: sdk.Moderations
    models: sdk.Models
    fine_tuning: sdk.FineTuning
    vector_stores: sdk.VectorStores
    beta: sdk.Beta
    batches: sdk.Batches
    uploads: sdk.Uploads

    def __init__(
        self,
        *,
        api_key: str | Callable[[], str] | None = None,
        admin_api_key: str | None = None,
        workload_identity: WorkloadIdentity | X509WorkloadIdentity | None = None,
        organization: str | None = None,
        project: str | None = None,
        webhook_secret: str | None = None,
        provider: _Provider | None = None,
        base_url: str | httpx2.URL | NotGiven | None = None,
        data_residency: DataResidency | None = None,
        websocket_base_url: str | httpx2.URL | None = None,
        timeout: float | Timeout | NotGiven | None = None,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx2.Client | None = None,
        _strict_response_validation: bool | None = None,
        _enforce_credentials: bool | None = None,
        memory: Memory | MemoryConfig | str | Path | None = None,
        user_id: str | None = None,
        namespace: str = "default",
        strict: bool | None = None,
        enforce_rules: bool = False,
        start_worker: bool = True,
    ) -> None:
        super().__init__(
            dict(api_key=api_key, admin_api_key=admin_api_key, workload_identity=workload_identity,
                 organization=organization, project=project, webhook_secret=webhook_secret, provider=provider,
                 base_url=base_url, data_residency=data_residency, websocket_base_url=websocket_base_url,
                 timeout=timeout, max_retries=max_retries, default_headers=default_headers,
                 default_query=default_query, http_client=http_client,
                 _strict_response_validation=_strict_response_validation, _enforce_credentials=_enforce_credentials),
            memory=memory, user_id=user_id, namespace=namespace, strict=strict, enforce_rules=enforce_rules,
            start_worker=start_worker)
        self.chat: Chat[Completions] = Chat(Completions(self))
        self.responses = Responses(self)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Waits until background extraction has caught up. True if everything was processed in time."""
        return self.worker.flush(timeout)

    def close(self) -> None:
        """Waits (up to ``MemoryConfig.close_timeout``, default 10 s) for this client's turns to be extracted,
        then stops the worker and closes the HTTP client. Also runs at interpreter exit."""
        self._drain()
        self.worker.stop()
        if self._delegate is not None:
            self._delegate.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMemoryClient(_Base):
    """``openai.AsyncOpenAI`` with memory; the same extra arguments as MemoryClient."""

    _openai_class = openai.AsyncOpenAI
    completions: sdk.AsyncCompletions
    embeddings: sdk.AsyncEmbeddings
    files: sdk.AsyncFiles
    images: sdk.AsyncImages
    audio: sdk.AsyncAudio
    moderations: sdk.AsyncModerations
    models: sdk.AsyncModels
    fine_tuning: sdk.AsyncFineTuning
    vector_stores: sdk.AsyncVectorStores
    beta: sdk.AsyncBeta
    batches: sdk.AsyncBatches
    uploads: sdk.AsyncUploads

    def __init__(
        self,
        *,
        api_key: str | Callable[[], Awaitable[str]] | None = None,
        admin_api_key: str | None = None,
        workload_identity: WorkloadIdentity | X509WorkloadIdentity | None = None,
        organization: str | None = None,
        project: str | None = None,
        webhook_secret: str | None = None,
        provider: _Provider | None = None,
        base_url: str | httpx2.URL | NotGiven | None = None,
        data_residency: DataResidency | None = None,
        websocket_base_url: str | httpx2.URL | None = None,
        timeout: float | Timeout | NotGiven | None = None,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx2.AsyncClient | None = None,
        _strict_response_validation: bool | None = None,
        _enforce_credentials: bool | None = None,
        memory: Memory | MemoryConfig | str | Path | None = None,
        user_id: str | None = None,
        namespace: str = "default",
        strict: bool | None = None,
        enforce_rules: bool = False,
        start_worker: bool = True,
    ) -> None:
        super().__init__(
            dict(api_key=api_key, admin_api_key=admin_api_key, workload_identity=workload_identity,
                 organization=organization, project=project, webhook_secret=webhook_secret, provider=provider,
                 base_url=base_url, data_residency=data_residency, websocket_base_url=websocket_base_url,
                 timeout=timeout, max_retries=max_retries, default_headers=default_headers,
                 default_query=default_query, http_client=http_client,
                 _strict_response_validation=_strict_response_validation, _enforce_credentials=_enforce_credentials),
            memory=memory, user_id=user_id, namespace=namespace, strict=strict, enforce_rules=enforce_rules,
            start_worker=start_worker)
        self.chat: Chat[AsyncCompletions] = Chat(AsyncCompletions(self))
        self.responses = AsyncResponses(self)

    async def _abegin(self, model: Any, kwargs: dict[str, Any],
                      chat: bool = False) -> tuple[str, Options, dict[str, Any]]:
        """``_begin``, with a callable ``api_key``'s answer awaited."""
        model, opts, call = self._begin(model, kwargs, chat)
        if inspect.isawaitable(call.get("api_key")):
            call["api_key"] = await call["api_key"]
        return model, opts, call

    async def _asend(self, model: str, kwargs: dict[str, Any], call: dict[str, Any], messages: Any,
                     stream: bool | None) -> Any:
        """``_send``, awaited."""
        if self._direct(model):
            resource = self._sdk_resource(dict(kwargs))
            return await resource.create(messages=messages, model=model, **_stream_arg(stream), **_without(kwargs))
        try:
            return await litellm().acompletion(messages=messages, **_stream_arg(stream), **call)
        except Exception as exc:
            mapped = as_openai_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def flush(self, timeout: float | None = 30.0) -> bool:
        """Waits until background extraction has caught up. True if everything was processed in time."""
        return await asyncio.to_thread(self.worker.flush, timeout)

    async def close(self) -> None:
        """Waits (up to ``MemoryConfig.close_timeout``, default 10 s) for this client's turns to be extracted,
        then stops the worker and closes the HTTP client. Also runs at interpreter exit."""
        await asyncio.to_thread(self._drain)
        await asyncio.to_thread(self.worker.stop)
        if self._delegate is not None:
            await self._delegate.close()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
