"""``client.responses``: the Responses API with memory. The memory block goes into ``instructions`` after the
caller's own (instructions are not carried across ``previous_response_id``, so it is never duplicated turn
after turn); with the "split" placement (``MemoryConfig.injection``) only its stable part does, and the memories
recalled for this request are an input item just before the last user item (steps.prepare_responses).
Every other method of the resource is the real openai client's.

Like chat, a request to OpenAI or to the OpenAI-compatible server at ``base_url`` is made by the real openai
SDK (its retries, timeouts, parsing and exceptions; the upstream's ids and events exactly as it sent them;
``previous_response_id``, ``conversation``, ``store`` and every other argument as given). Provider-prefixed
models go through litellm's responses support (its bridge covers providers without a native Responses API),
their errors raised as the SDK's classes and their results built as the SDK builds an API answer.

Retrieval, recording and streaming are the chat path's own (steps.py, streams.py): the metrics, the log and
the partial-reply recording are the same for both APIs."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any, Literal, overload

from memstore.adapters.openai.errors import as_openai_error, bad_request
from memstore.adapters.openai.steps import MemoryInfo, prepare_responses
from memstore.adapters.openai.streams import (
    AsyncResponseStream,
    ResponseStream,
    construct,
    output_text,
    to_event,
)
from openai.types.responses import Response, ResponseInputParam
from pydantic import PrivateAttr

from memstore.errors import InvalidInputError
from memstore.llm import litellm
from memstore.messages import content_text

if TYPE_CHECKING:
    from memstore.adapters.openai.client import AsyncMemoryClient, MemoryClient, _Base

__all__ = ["AsyncResponseStream", "AsyncResponses", "MemoryResponse", "ResponseStream", "Responses", "is_response",
           "output_text", "to_event", "to_response"]


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
        if not isinstance(item, dict):
            continue
        if item.get("role") in ("user", "assistant", "system", "developer"):
            out.append({"role": item["role"], "content": content_text(item.get("content"))})
        elif item.get("type") == "function_call":  # recorded as chat records an assistant's tool call
            out.append({"role": "assistant", "content": ""})
        elif item.get("type") == "function_call_output":  # and the tool's result, as a tool message
            out.append({"role": "tool", "content": content_text(item.get("output"))})
    return out or [{"role": "user", "content": ""}]


def to_response(raw: Any, info: MemoryInfo) -> MemoryResponse:
    """The model's answer as a MemoryResponse: the SDK's own Response taken field by field as the SDK parsed it;
    litellm's built the way the SDK builds an API answer, without validation (streams.construct), so a usage
    without a field the installed SDK declares, an extra field or a null one is kept as it came."""
    if isinstance(raw, Response):
        out = MemoryResponse.model_construct(**dict(raw))
        object.__setattr__(out, "__pydantic_fields_set__", set(raw.model_fields_set))  # what the body had
    else:
        out = construct(MemoryResponse, raw)
    out._memstore = info
    return out


def is_response(resp: Any) -> bool:
    """A Responses API response with a list of output items: something to record. The SDK answers a body that
    is none (HTML, ``{}``, ``output: null``) with its text or an empty object, and so do we."""
    return isinstance(resp, Response) and isinstance(resp.output, list)


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


def _with_instructions(call: dict[str, Any], instructions: str | None, input: Any = None) -> dict[str, Any]:
    """The call with memory placed: ``instructions`` and (the "split" placement) ``input``."""
    if instructions:
        call["instructions"] = instructions
    if input is not None:
        call["input"] = input
    return call


def _stream_arg(stream: bool | None) -> dict[str, Any]:
    return {} if stream is None else {"stream": stream}


def _sdk_call(c: _Base, model: str, kw: dict[str, Any], instructions: str | None, input: Any,
              stream: bool | None) -> Any:
    """The real openai client's ``responses.create`` with its arguments, for a model it serves directly."""
    args = dict(kw)
    client = c._sdk_client(args)  # pops the per-request transport options
    return functools.partial(client.responses.create, model=model, **_stream_arg(stream),
                             **_with_instructions(args, instructions, input))


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
        kw = {**kwargs, "input": input}
        model, opts, call = c._begin(model, kw, chat=True)
        msgs = _checked_input(input)
        merged, sent, info = prepare_responses(c.memory, opts, instructions, input, msgs, c.strict)
        exchange = c._exchange(opts, info, msgs, model)
        if c._direct(model):
            raw = _sdk_call(c, model, kw, merged, sent, stream)()
        else:
            raw = _mapped(litellm().responses, **_stream_arg(stream), **_with_instructions(call, merged, sent))
        if stream:
            return ResponseStream(raw, info, exchange.record_stream)
        if c._direct(model) and not isinstance(raw, Response):
            return raw  # type: ignore[no-any-return]  # the SDK's text of a body that is no JSON: as the SDK
        resp = to_response(raw, info)
        if is_response(resp):
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
        kw = {**kwargs, "input": input}
        model, opts, call = await c._abegin(model, kw, chat=True)
        msgs = _checked_input(input)
        merged, sent, info = await asyncio.to_thread(prepare_responses, c.memory, opts, instructions, input, msgs,
                                                     c.strict)
        exchange = c._exchange(opts, info, msgs, model)
        if c._direct(model):
            raw = await _sdk_call(c, model, kw, merged, sent, stream)()
        else:
            raw = await _amapped(litellm().aresponses, **_stream_arg(stream),
                                 **_with_instructions(call, merged, sent))
        if stream:
            return AsyncResponseStream(raw, info, exchange.record_stream)
        if c._direct(model) and not isinstance(raw, Response):
            return raw  # type: ignore[no-any-return]  # the SDK's text of a body that is no JSON: as the SDK
        resp = to_response(raw, info)
        if is_response(resp):
            await asyncio.to_thread(exchange.record, output_text(resp), resp.id)
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.__getattr__("responses"), name)
