"""``client.responses``: the Responses API with memory, through litellm's responses support (its bridge
covers providers without a native Responses API). The memory block goes into ``instructions`` after the
caller's own; instructions are not carried across ``previous_response_id``, so the block is never
duplicated turn after turn. Every other method of the resource is the real openai client's.

Retrieval, recording and streaming are the chat path's own (steps.py, streams.py): the metrics, the log and
the partial-reply recording are the same for both APIs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, overload

from memstore.adapters.openai.errors import as_openai_error, bad_request
from memstore.adapters.openai.steps import MemoryInfo, prepare_instructions
from memstore.adapters.openai.streams import AsyncResponseStream, ResponseStream, output_text, to_event
from openai.types.responses import Response, ResponseInputParam
from pydantic import PrivateAttr

from memstore.errors import InvalidInputError
from memstore.llm import litellm
from memstore.messages import content_text

if TYPE_CHECKING:
    from memstore.adapters.openai.client import AsyncMemoryClient, MemoryClient

__all__ = ["AsyncResponseStream", "AsyncResponses", "MemoryResponse", "ResponseStream", "Responses", "output_text",
           "to_event"]


class MemoryResponse(Response):
    """An ``openai.types.responses.Response`` that also says what memstore injected (``.memstore``)."""

    _memstore: MemoryInfo | None = PrivateAttr(default=None)

    @property
    def memstore(self) -> MemoryInfo | None:
        return self._memstore


def input_messages(input: Any) -> list[dict[str, Any]]:
    """Responses ``input`` (a string or a list of items) as plain chat messages."""
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    if not isinstance(input, list):
        raise InvalidInputError("input must be a string or a list of input items")
    out = []
    for item in input:
        if hasattr(item, "model_dump"):
            item = item.model_dump(exclude_none=True)
        if isinstance(item, dict) and item.get("role") in ("user", "assistant", "system", "developer"):
            out.append({"role": item["role"], "content": content_text(item.get("content"))})
    return out or [{"role": "user", "content": ""}]


def to_response(raw: Any, info: MemoryInfo) -> MemoryResponse:
    data = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
    out = MemoryResponse.model_validate(data)
    out._memstore = info
    return out


def _checked_input(input: Any) -> list[dict[str, Any]]:
    try:
        return input_messages(input)
    except InvalidInputError as exc:
        raise bad_request(str(exc), "input") from None


def _mapped(fn: Any, **kwargs: Any) -> Any:
    """A litellm call whose failure is raised as the openai SDK's exception."""
    try:
        return fn(**kwargs)
    except Exception as exc:
        mapped = as_openai_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


async def _amapped(fn: Any, **kwargs: Any) -> Any:
    try:
        return await fn(**kwargs)
    except Exception as exc:
        mapped = as_openai_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def _with_instructions(call: dict[str, Any], instructions: str | None) -> dict[str, Any]:
    if instructions:
        call["instructions"] = instructions
    return call


class Responses:
    """``client.responses`` of MemoryClient."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    @overload
    def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
               instructions: str | None = None, stream: Literal[False] | None = None,
               **kwargs: Any) -> MemoryResponse: ...

    @overload
    def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
               instructions: str | None = None, stream: Literal[True], **kwargs: Any) -> ResponseStream: ...

    @overload
    def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
               instructions: str | None = None, stream: bool | None = None,
               **kwargs: Any) -> MemoryResponse | ResponseStream: ...

    def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
               instructions: str | None = None, stream: bool | None = None,
               **kwargs: Any) -> MemoryResponse | ResponseStream:
        c = self._client
        model, opts, call = c._begin(model, {**kwargs, "input": input})
        msgs = _checked_input(input)
        merged, info = prepare_instructions(c.memory, opts, instructions, msgs, c.strict)
        call = _with_instructions(call, merged)
        exchange = c._exchange(opts, info, msgs, model)
        lm = litellm()
        if stream:
            return ResponseStream(_mapped(lm.responses, stream=True, **call), info, exchange.record_stream)
        resp = to_response(_mapped(lm.responses, **call), info)
        exchange.record(output_text(resp), resp.id)
        return resp

    def __getattr__(self, name: str) -> Any:  # retrieve, delete, cancel, input_items ...
        return getattr(self._client.__getattr__("responses"), name)


class AsyncResponses:
    """``client.responses`` of AsyncMemoryClient."""

    def __init__(self, client: AsyncMemoryClient) -> None:
        self._client = client

    @overload
    async def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
                     instructions: str | None = None, stream: Literal[False] | None = None,
                     **kwargs: Any) -> MemoryResponse: ...

    @overload
    async def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
                     instructions: str | None = None, stream: Literal[True], **kwargs: Any) -> AsyncResponseStream: ...

    @overload
    async def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
                     instructions: str | None = None, stream: bool | None = None,
                     **kwargs: Any) -> MemoryResponse | AsyncResponseStream: ...

    async def create(self, *, model: str | None = None, input: str | ResponseInputParam | None = None,
                     instructions: str | None = None, stream: bool | None = None,
                     **kwargs: Any) -> MemoryResponse | AsyncResponseStream:
        c = self._client
        model, opts, call = await c._abegin(model, {**kwargs, "input": input})
        msgs = _checked_input(input)
        merged, info = await asyncio.to_thread(prepare_instructions, c.memory, opts, instructions, msgs, c.strict)
        call = _with_instructions(call, merged)
        exchange = c._exchange(opts, info, msgs, model)
        lm = litellm()
        if stream:
            source = await _amapped(lm.aresponses, stream=True, **call)
            return AsyncResponseStream(source, info, exchange.record_stream)
        resp = to_response(await _amapped(lm.aresponses, **call), info)
        await asyncio.to_thread(exchange.record, output_text(resp), resp.id)
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.__getattr__("responses"), name)
