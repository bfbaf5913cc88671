"""MemoryClient / AsyncMemoryClient: drop-ins for openai.OpenAI / openai.AsyncOpenAI.

``client.chat.completions.create`` (and ``client.responses.create``) get the user's memory; every other
resource (embeddings, models, files, audio, images ...) is delegated to a real ``openai.OpenAI`` built with
the same arguments. Any model litellm reaches works: "gpt-4.1-mini", "anthropic/claude-...",
"ollama/llama3.2", or any name with ``base_url`` pointing at an OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from memstore.adapters.openai.steps import (
    MemoryInfo,
    Options,
    check_rules,
    correction_messages,
    finish,
    prepare,
    resolve_options,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import PrivateAttr

from memstore.config import MemoryConfig
from memstore.errors import InvalidInputError
from memstore.instructions import feedback as fb
from memstore.llm import litellm
from memstore.memory import Memory
from memstore.records import Feedback
from memstore.worker import Worker

log = logging.getLogger("memstore")
_NOT_PASSED = {"extra_query"}  # openai-only transport options litellm has no equivalent for


@functools.cache
def _sdk_params() -> frozenset[str]:
    """The request-body parameters of the installed openai SDK's chat.completions.create."""
    import inspect

    import openai

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


def reply_text(completion: Any) -> str:
    """The text of the first choice; tool calls are rendered so the turn still shows what happened."""
    if not completion.choices:
        return ""
    msg = completion.choices[0].message
    text = msg.content or ""
    calls = getattr(msg, "tool_calls", None) or []
    if calls:
        text += "".join(f"\n[tool call {c.function.name}({c.function.arguments})]" for c in calls if c.function)
    return text.strip()


class _Base:
    """Shared construction of both clients."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        default_headers: dict[str, str] | None = None,
        default_query: dict[str, object] | None = None,
        http_client: Any = None,
        memory: Memory | MemoryConfig | str | None = None,
        user_id: str | None = None,
        namespace: str = "default",
        strict: bool | None = None,
        enforce_rules: bool = False,
        start_worker: bool = True,
        **openai_kwargs: Any,
    ) -> None:
        if isinstance(memory, Memory):
            self.memory = memory
        elif isinstance(memory, MemoryConfig):
            self.memory = Memory(config=memory)
        else:
            self.memory = Memory(path=memory)
        self.user_id = user_id
        self.namespace = namespace
        self.strict = self.memory.config.strict if strict is None else strict
        self.enforce_rules = enforce_rules
        self.api_key, self.base_url = api_key, base_url
        self.timeout, self.max_retries = timeout, max_retries
        self.default_headers = dict(default_headers or {})
        self._openai_args = {k: v for k, v in {
            "api_key": api_key, "organization": organization, "project": project, "base_url": base_url,
            "timeout": timeout, "max_retries": max_retries, "default_headers": default_headers,
            "default_query": default_query, "http_client": http_client, **openai_kwargs,
        }.items() if v is not None}
        self._delegate: Any = None
        self.worker = Worker(self.memory.extraction)
        if start_worker:
            self.worker.start()

    # -- what litellm gets ------------------------------------------------------------------------
    def _call_kwargs(self, model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in kwargs.items() if k not in _NOT_PASSED and v is not None}
        out["model"] = model
        if self.api_key and "api_key" not in out:
            out["api_key"] = self.api_key
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

    def _options(self, kwargs: dict[str, Any]) -> Options:
        return resolve_options(kwargs, self.user_id, self.namespace)

    def _openai_class(self) -> Any:
        import openai

        return openai.OpenAI

    def __getattr__(self, name: str) -> Any:
        """Every resource memory has nothing to do with: the real openai client's."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._delegate is None:
            self._delegate = self._openai_class()(**self._openai_args)
        return getattr(self._delegate, name)

    # -- memory housekeeping ----------------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Waits until background extraction has caught up. True if everything was processed in time."""
        return self.worker.flush(timeout)

    def feedback(self, response_id: str, rating: int, comment: str | None = None) -> Feedback:
        """Records a person's +1 / -1 for a response this client returned."""
        return fb.rate(self.memory.engine, response_id, rating, comment)

    def compare(self, response_id_a: str, response_id_b: str, preferred: str, comment: str | None = None) -> Feedback:
        """Records which of two responses to the same prompt the person preferred."""
        return fb.compare(self.memory.engine, response_id_a, response_id_b, preferred, comment)

    def close(self) -> None:
        self.worker.stop()
        if self._delegate is not None and hasattr(self._delegate, "close"):
            result = self._delegate.close()
            if asyncio.iscoroutine(result):
                result.close()


class MemoryStream(Iterator[ChatCompletionChunk]):
    """The stream=True result: ChatCompletionChunk objects as they arrive; records the reply at the end
    (or what arrived, marked partial, if the caller stops early or the stream breaks)."""

    def __init__(self, source: Any, info: MemoryInfo, on_done: Callable[[str, bool, str | None], None]) -> None:
        self._src = iter(source)
        self._source = source
        self.memstore = info
        self._on_done = on_done
        self._parts: list[str] = []
        self._id: str | None = None
        self._done = False

    def __iter__(self) -> MemoryStream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        try:
            raw = next(self._src)
        except StopIteration:
            self._finish(partial=False)
            raise
        except BaseException:
            self._finish(partial=True)
            raise
        chunk = ChatCompletionChunk.model_validate(raw.model_dump() if hasattr(raw, "model_dump") else raw)
        self._id = self._id or chunk.id
        for choice in chunk.choices:
            if choice.index == 0 and choice.delta and choice.delta.content:
                self._parts.append(choice.delta.content)
        return chunk

    def _finish(self, partial: bool) -> None:
        if not self._done:
            self._done = True
            self._on_done("".join(self._parts), partial, self._id)

    def close(self) -> None:
        self._finish(partial=True)
        closer = getattr(self._source, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> MemoryStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            with contextlib.suppress(Exception):
                self._finish(partial=True)


class AsyncMemoryStream(AsyncIterator[ChatCompletionChunk]):
    """The async twin of MemoryStream."""

    def __init__(self, source: Any, info: MemoryInfo, on_done: Callable[[str, bool, str | None], Any]) -> None:
        self._source = source
        self._src = source.__aiter__()
        self.memstore = info
        self._on_done = on_done
        self._parts: list[str] = []
        self._id: str | None = None
        self._done = False

    def __aiter__(self) -> AsyncMemoryStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        try:
            raw = await self._src.__anext__()
        except StopAsyncIteration:
            await self._finish(partial=False)
            raise
        except BaseException:
            await self._finish(partial=True)
            raise
        chunk = ChatCompletionChunk.model_validate(raw.model_dump() if hasattr(raw, "model_dump") else raw)
        self._id = self._id or chunk.id
        for choice in chunk.choices:
            if choice.index == 0 and choice.delta and choice.delta.content:
                self._parts.append(choice.delta.content)
        return chunk

    async def _finish(self, partial: bool) -> None:
        if not self._done:
            self._done = True
            # shielded: a caller that hangs up (task cancelled) must not cancel the recording of the turn
            await asyncio.shield(asyncio.to_thread(self._on_done, "".join(self._parts), partial, self._id))

    async def aclose(self) -> None:
        await self._finish(partial=True)
        closer = getattr(self._source, "aclose", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                await closer()

    async def __aenter__(self) -> AsyncMemoryStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Completions:
    """``client.chat.completions``: ``create`` with memory, same signature as the openai SDK's."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    def create(self, *, messages: Any, model: str, stream: bool | None = None, **kwargs: Any) -> Any:
        c = self._client
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty string")
        opts = c._options(kwargs)
        sent, info = prepare(c.memory, opts, messages, c.strict)
        call = c._call_kwargs(model, kwargs)
        lm = litellm()
        if stream:
            source = lm.completion(messages=sent, stream=True, **call)

            def done(reply: str, partial: bool, rid: str | None) -> None:
                finish(c.memory, opts, info, messages, reply, response_id=rid, model=model, strict=False,
                       partial=partial, worker=c.worker)

            return MemoryStream(source, info, done)
        resp = to_chat_completion(lm.completion(messages=sent, **call), info)
        if c.enforce_rules and info.context is not None and info.context.rules:
            resp = self._enforce(resp, sent, call, info)
        finish(c.memory, opts, info, messages, reply_text(resp), response_id=resp.id, model=model,
               strict=c.strict, worker=c.worker)
        return resp

    def _enforce(self, resp: MemoryChatCompletion, sent: Any, call: dict[str, Any],
                 info: MemoryInfo) -> MemoryChatCompletion:
        assert info.context is not None
        first = check_rules(info.context.rules, reply_text(resp))
        failed = [r for r in first if not r[1]]
        if not failed:
            return resp
        from memstore import metrics

        metrics.inc("memstore_rule_retries_total")
        retry = to_chat_completion(litellm().completion(
            messages=correction_messages(list(sent), reply_text(resp), failed), **call), info)
        second = check_rules(info.context.rules, reply_text(retry))
        info.retried = True
        return retry if sum(ok for _r, ok, _d in second) >= sum(ok for _r, ok, _d in first) else resp


class AsyncCompletions:
    def __init__(self, client: AsyncMemoryClient) -> None:
        self._client = client

    async def create(self, *, messages: Any, model: str, stream: bool | None = None, **kwargs: Any) -> Any:
        c = self._client
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty string")
        opts = c._options(kwargs)
        sent, info = await asyncio.to_thread(prepare, c.memory, opts, messages, c.strict)
        call = c._call_kwargs(model, kwargs)
        lm = litellm()
        if stream:
            source = await lm.acompletion(messages=sent, stream=True, **call)

            def done(reply: str, partial: bool, rid: str | None) -> None:
                finish(c.memory, opts, info, messages, reply, response_id=rid, model=model, strict=False,
                       partial=partial, worker=c.worker)

            return AsyncMemoryStream(source, info, done)
        resp = to_chat_completion(await lm.acompletion(messages=sent, **call), info)
        if c.enforce_rules and info.context is not None and info.context.rules:
            first = check_rules(info.context.rules, reply_text(resp))
            failed = [r for r in first if not r[1]]
            if failed:
                retry = to_chat_completion(await lm.acompletion(
                    messages=correction_messages(list(sent), reply_text(resp), failed), **call), info)
                second = check_rules(info.context.rules, reply_text(retry))
                info.retried = True
                if sum(ok for _r, ok, _d in second) >= sum(ok for _r, ok, _d in first):
                    resp = retry
        await asyncio.to_thread(finish, c.memory, opts, info, messages, reply_text(resp), response_id=resp.id,
                                model=model, strict=c.strict, worker=c.worker)
        return resp


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class MemoryClient(_Base):
    """``openai.OpenAI`` with memory. Extra arguments: ``memory`` (a Memory, a MemoryConfig or a path),
    ``user_id`` (the default user), ``namespace``, ``strict`` (raise instead of failing open),
    ``enforce_rules`` (one corrective retry when a reply breaks a checkable rule)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chat = _Chat(Completions(self))
        from memstore.adapters.openai.responses import Responses

        self.responses = Responses(self)

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMemoryClient(_Base):
    """``openai.AsyncOpenAI`` with memory; the same extra arguments as MemoryClient."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chat = _Chat(AsyncCompletions(self))
        from memstore.adapters.openai.responses import AsyncResponses

        self.responses = AsyncResponses(self)

    def _openai_class(self) -> Any:
        import openai

        return openai.AsyncOpenAI

    async def flush(self, timeout: float | None = 30.0) -> bool:  # type: ignore[override]
        return await asyncio.to_thread(self.worker.flush, timeout)

    async def close(self) -> None:  # type: ignore[override]
        self.worker.stop()
        if self._delegate is not None:
            await self._delegate.close()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
