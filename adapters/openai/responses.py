"""``client.responses``: the Responses API with memory, through litellm's responses support (its bridge
covers providers without a native Responses API). The memory block goes into ``instructions`` after the
caller's own; instructions are not carried across ``previous_response_id``, so the block is never
duplicated turn after turn. Every other method of the resource is the real openai client's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from memstore.adapters.openai.steps import MemoryInfo, finish, prepare_instructions
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import PrivateAttr, TypeAdapter

from memstore.errors import InvalidInputError
from memstore.llm import litellm
from memstore.messages import content_text

if TYPE_CHECKING:
    from memstore.adapters.openai.client import AsyncMemoryClient, MemoryClient

_EVENT = TypeAdapter(ResponseStreamEvent)


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


def output_text(resp: Any) -> str:
    text = getattr(resp, "output_text", None)
    if isinstance(text, str) and text:
        return text
    parts = []
    for item in getattr(resp, "output", None) or []:
        for c in getattr(item, "content", None) or []:
            if getattr(c, "type", None) == "output_text":
                parts.append(c.text)
    return "".join(parts)


def to_response(raw: Any, info: MemoryInfo) -> MemoryResponse:
    data = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
    out = MemoryResponse.model_validate(data)
    out._memstore = info
    return out


def to_event(raw: Any, seq: int) -> Any:
    """litellm's stream event as the openai SDK's own event type (litellm may omit sequence_number)."""
    data = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else dict(raw)
    if data.get("sequence_number") is None:
        data["sequence_number"] = seq
    if data.get("type") in ("response.output_text.delta", "response.output_text.done") and data.get("logprobs") is None:
        data["logprobs"] = []
    return _EVENT.validate_python(data)


class _EventCollector:
    """Assembles the reply text from stream events; recorded when the stream ends."""

    def __init__(self, on_done: Callable[[str, bool, str | None], Any]) -> None:
        self.parts: list[str] = []
        self.final: str | None = None
        self.response_id: str | None = None
        self.on_done = on_done
        self.done = False

    def see(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        if kind == "response.output_text.delta":
            self.parts.append(event.delta)
        elif kind in ("response.created", "response.completed") and getattr(event, "response", None) is not None:
            self.response_id = event.response.id
            if kind == "response.completed":
                self.final = output_text(event.response)

    def text(self) -> str:
        return self.final if self.final is not None else "".join(self.parts)


class ResponseStream(Iterator[Any]):
    def __init__(self, source: Any, info: MemoryInfo, on_done: Callable[[str, bool, str | None], None]) -> None:
        self._source, self._it = source, iter(source)
        self.memstore = info
        self._c = _EventCollector(on_done)
        self._seq = 0

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Any:
        try:
            event = to_event(next(self._it), self._seq)
            self._seq += 1
        except StopIteration:
            self._finish(False)
            raise
        except BaseException:
            self._finish(True)
            raise
        self._c.see(event)
        return event

    def _finish(self, partial: bool) -> None:
        if not self._c.done:
            self._c.done = True
            self._c.on_done(self._c.text(), partial, self._c.response_id)

    def close(self) -> None:
        self._finish(True)

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncResponseStream(AsyncIterator[Any]):
    def __init__(self, source: Any, info: MemoryInfo, on_done: Callable[[str, bool, str | None], None]) -> None:
        self._it = source.__aiter__()
        self.memstore = info
        self._c = _EventCollector(on_done)
        self._seq = 0

    def __aiter__(self) -> AsyncResponseStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = to_event(await self._it.__anext__(), self._seq)
            self._seq += 1
        except StopAsyncIteration:
            await self._finish(False)
            raise
        except BaseException:
            await self._finish(True)
            raise
        self._c.see(event)
        return event

    async def _finish(self, partial: bool) -> None:
        if not self._c.done:
            self._c.done = True
            # shielded: a caller that hangs up (task cancelled) must not cancel the recording of the turn
            await asyncio.shield(asyncio.to_thread(self._c.on_done, self._c.text(), partial, self._c.response_id))

    async def aclose(self) -> None:
        await self._finish(True)

    async def __aenter__(self) -> AsyncResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _prepare(c: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any]]:
    model = kwargs.pop("model", None)
    if not isinstance(model, str) or not model:
        raise InvalidInputError("model must be a non-empty string")
    opts = c._options(kwargs)
    msgs = input_messages(kwargs.get("input"))
    return model, opts, msgs, kwargs


class Responses:
    """``client.responses`` of MemoryClient."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        c = self._client
        model, opts, msgs, kwargs = _prepare(c, kwargs)
        instructions, info = prepare_instructions(c.memory, opts, kwargs.pop("instructions", None), msgs, c.strict)
        call = c._call_kwargs(model, kwargs)
        if instructions:
            call["instructions"] = instructions
        lm = litellm()
        if call.pop("stream", False):
            def done(reply: str, partial: bool, rid: str | None) -> None:
                finish(c.memory, opts, info, msgs, reply, response_id=rid, model=model, strict=False,
                       partial=partial, worker=c.worker)

            return ResponseStream(lm.responses(stream=True, **call), info, done)
        resp = to_response(lm.responses(**call), info)
        finish(c.memory, opts, info, msgs, output_text(resp), response_id=resp.id, model=model, strict=c.strict,
               worker=c.worker)
        return resp

    def __getattr__(self, name: str) -> Any:  # retrieve, delete, cancel, input_items ...
        return getattr(self._client.__getattr__("responses"), name)


class AsyncResponses:
    """``client.responses`` of AsyncMemoryClient."""

    def __init__(self, client: AsyncMemoryClient) -> None:
        self._client = client

    async def create(self, **kwargs: Any) -> Any:
        c = self._client
        model, opts, msgs, kwargs = _prepare(c, kwargs)
        instructions, info = await asyncio.to_thread(prepare_instructions, c.memory, opts,
                                                     kwargs.pop("instructions", None), msgs, c.strict)
        call = c._call_kwargs(model, kwargs)
        if instructions:
            call["instructions"] = instructions
        lm = litellm()
        if call.pop("stream", False):
            def done(reply: str, partial: bool, rid: str | None) -> None:
                finish(c.memory, opts, info, msgs, reply, response_id=rid, model=model, strict=False,
                       partial=partial, worker=c.worker)

            return AsyncResponseStream(await lm.aresponses(stream=True, **call), info, done)
        resp = to_response(await lm.aresponses(**call), info)
        await asyncio.to_thread(finish, c.memory, opts, info, msgs, output_text(resp), response_id=resp.id,
                                model=model, strict=c.strict, worker=c.worker)
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.__getattr__("responses"), name)
