"""MemoryClient / AsyncMemoryClient: drop-ins for openai.OpenAI / openai.AsyncOpenAI.

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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, overload

import openai
from memstore.adapters.openai.responses import AsyncResponses, Responses
from memstore.adapters.openai.steps import Exchange, MemoryInfo, Options, prepare, resolve_options, rule_retry
from memstore.adapters.openai.streams import AsyncMemoryStream, MemoryStream, reply_text
from openai import NotGiven
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import PrivateAttr

from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError
from memstore.instructions import feedback as fb
from memstore.llm import litellm
from memstore.memory import Memory
from memstore.records import Feedback
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
    data = resp.model_dump() if hasattr(resp, "model_dump") else dict(resp)
    out = MemoryChatCompletion.model_validate(data)
    out._memstore = info
    return out


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
        self.worker = Worker(self.memory.extraction)
        if start_worker:
            self.worker.start()

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

    def _begin(self, model: Any, kwargs: dict[str, Any]) -> tuple[str, Options, dict[str, Any]]:
        """The pure start of every request: the model checked, memstore's options popped out of ``kwargs``,
        the arguments for litellm."""
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty string")
        opts = resolve_options(kwargs, self.user_id, self.namespace)
        return model, opts, self._call_kwargs(model, kwargs)

    def _exchange(self, opts: Options, info: MemoryInfo, messages: Any, model: str) -> Exchange:
        return Exchange(self.memory, opts, info, messages, model, self.strict, self.worker)

    def __getattr__(self, name: str) -> Any:
        """Every resource memory has nothing to do with: the real openai client's."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._delegate is None:
            self._delegate = self._openai_class(**self._openai_args)
        return getattr(self._delegate, name)

    # -- memory housekeeping ----------------------------------------------------------------------
    def feedback(self, response_id: str, rating: int, comment: str | None = None) -> Feedback:
        """Records a person's +1 / -1 for a response this client returned."""
        return fb.rate(self.memory.engine, response_id, rating, comment)

    def compare(self, response_id_a: str, response_id_b: str, preferred: str, comment: str | None = None) -> Feedback:
        """Records which of two responses to the same prompt the person preferred."""
        return fb.compare(self.memory.engine, response_id_a, response_id_b, preferred, comment)


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
        model, opts, call = c._begin(model, kwargs)
        sent, info = prepare(c.memory, opts, messages, c.strict)
        exchange = c._exchange(opts, info, messages, model)
        lm = litellm()
        if stream:
            return MemoryStream(lm.completion(messages=sent, stream=True, **call), info, exchange.record_stream)
        resp = to_chat_completion(lm.completion(messages=sent, **call), info)
        if c.enforce_rules and (retry := rule_retry(info, sent, reply_text(resp))):
            second = to_chat_completion(lm.completion(messages=retry.messages, **call), info)
            if retry.keep_retry(info, reply_text(second)):
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
        model, opts, call = await c._abegin(model, kwargs)
        sent, info = await asyncio.to_thread(prepare, c.memory, opts, messages, c.strict)
        exchange = c._exchange(opts, info, messages, model)
        lm = litellm()
        if stream:
            source = await lm.acompletion(messages=sent, stream=True, **call)
            return AsyncMemoryStream(source, info, exchange.record_stream)
        resp = to_chat_completion(await lm.acompletion(messages=sent, **call), info)
        if c.enforce_rules and (retry := rule_retry(info, sent, reply_text(resp))):
            second = to_chat_completion(await lm.acompletion(messages=retry.messages, **call), info)
            if retry.keep_retry(info, reply_text(second)):
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

    async def _abegin(self, model: Any, kwargs: dict[str, Any]) -> tuple[str, Options, dict[str, Any]]:
        """``_begin``, with a callable ``api_key``'s answer awaited."""
        model, opts, call = self._begin(model, kwargs)
        if inspect.isawaitable(call.get("api_key")):
            call["api_key"] = await call["api_key"]
        return model, opts, call

    async def flush(self, timeout: float | None = 30.0) -> bool:
        """Waits until background extraction has caught up. True if everything was processed in time."""
        return await asyncio.to_thread(self.worker.flush, timeout)

    async def close(self) -> None:
        self.worker.stop()
        if self._delegate is not None:
            await self._delegate.close()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
