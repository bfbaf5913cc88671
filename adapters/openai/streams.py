"""The one stream collector, and the stream results built on it.

Chat completions and the Responses API, sync and async, all stream the same way: each raw item from litellm is
parsed into the openai SDK's own type, passed to the caller unchanged, and seen by a ``ReplyCollector``; when the
stream ends (or breaks, or the caller closes it early) the reply so far is recorded once, marked partial unless
the stream ran to its end, and the upstream connection is closed. ``SyncStream`` and ``AsyncStream`` hold only
the I/O (``next`` vs ``await __anext__``, ``close`` vs ``aclose``); everything else is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from memstore.adapters.openai.errors import as_openai_error
from memstore.adapters.openai.steps import MemoryInfo
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from pydantic import TypeAdapter

OnDone = Callable[[str, bool, str | None], None]
"""Records a streamed reply: ``(text, partial, response_id)``."""

ItemT = TypeVar("ItemT", bound=ChatCompletionChunk | ResponseStreamEvent)

_EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


# -- the reply text of a finished result ---------------------------------------------------------------
def reply_text(completion: ChatCompletion) -> str:
    """The text of the first choice; tool calls are rendered so the turn still shows what happened."""
    if not completion.choices or not isinstance(completion.choices, list):
        return ""
    msg = getattr(completion.choices[0], "message", None)
    if msg is None:
        return ""
    text = msg.content if isinstance(msg.content, str) else ""
    for call in msg.tool_calls or []:
        function = getattr(call, "function", None)  # custom tool calls have no function
        if function is not None:
            text += f"\n[tool call {function.name}({function.arguments})]"
    return text.strip()


def output_text(resp: Response) -> str:
    """The text of a Responses API response."""
    text = getattr(resp, "output_text", None)
    if isinstance(text, str) and text:
        return text
    parts = []
    for item in resp.output or []:
        for c in getattr(item, "content", None) or []:
            if getattr(c, "type", None) == "output_text":
                parts.append(c.text)
    return "".join(parts)


# -- raw litellm items as the SDK's own types --------------------------------------------------------
def _data(raw: Any, mode: str = "python") -> dict[str, Any]:
    return raw.model_dump(mode=mode) if hasattr(raw, "model_dump") else dict(raw)


def to_chunk(raw: Any, seq: int = 0) -> ChatCompletionChunk:
    """litellm's stream chunk as ``openai.types.chat.ChatCompletionChunk`` (the SDK's own passes unchanged)."""
    if isinstance(raw, ChatCompletionChunk):
        return raw
    return ChatCompletionChunk.model_validate(_data(raw))


def to_event(raw: Any, seq: int) -> ResponseStreamEvent:
    """litellm's stream event as the openai SDK's own event type (litellm may omit sequence_number)."""
    data = _data(raw, "json")
    if data.get("sequence_number") is None:
        data["sequence_number"] = seq
    if data.get("type") in ("response.output_text.delta", "response.output_text.done") and data.get("logprobs") is None:
        data["logprobs"] = []
    return _EVENT.validate_python(data)


# -- the collector -----------------------------------------------------------------------------------
class ReplyCollector:
    """Accumulates a streamed reply from chat chunks or Responses events. Pure: no I/O."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.final: str | None = None  # the whole text, when the stream says it (response.completed)
        self.response_id: str | None = None
        self.done = False

    def see(self, item: ChatCompletionChunk | ResponseStreamEvent) -> None:
        if isinstance(item, ChatCompletionChunk):
            self.response_id = self.response_id or item.id
            for choice in item.choices:
                if choice.index == 0 and choice.delta and choice.delta.content:
                    self.parts.append(choice.delta.content)
        elif isinstance(item, ResponseTextDeltaEvent):
            self.parts.append(item.delta)
        elif isinstance(item, ResponseCreatedEvent | ResponseCompletedEvent):
            self.response_id = item.response.id
            if isinstance(item, ResponseCompletedEvent):
                self.final = output_text(item.response)

    def text(self) -> str:
        return self.final if self.final is not None else "".join(self.parts)

    def end(self) -> bool:
        """Marks the stream ended; True the first time only (the reply is recorded once)."""
        first, self.done = not self.done, True
        return first


# -- the streams -------------------------------------------------------------------------------------
class _Stream(Generic[ItemT]):
    """What both twins share: parsing, collecting, what ``.memstore`` says."""

    def __init__(self, source: Any, info: MemoryInfo, on_done: OnDone) -> None:
        self._source = source
        self.memstore = info
        self._on_done = on_done
        self._collector = ReplyCollector()
        self._seq = 0

    def _convert(self, raw: Any, seq: int) -> ItemT:
        raise NotImplementedError

    def _take(self, raw: Any) -> ItemT:
        item = self._convert(raw, self._seq)
        self._seq += 1
        self._collector.see(item)
        return item

    def _ending(self, partial: bool) -> tuple[str, bool, str | None] | None:
        """The recording to make when the stream ends, or None if it already ended."""
        c = self._collector
        return (c.text(), partial, c.response_id) if c.end() else None


class SyncStream(_Stream[ItemT], Iterator[ItemT]):
    """A stream=True result of the sync client: items as they arrive, the reply recorded at the end."""

    def __init__(self, source: Any, info: MemoryInfo, on_done: OnDone) -> None:
        super().__init__(source, info, on_done)
        self._it = iter(source)

    def __iter__(self) -> SyncStream[ItemT]:
        return self

    def __next__(self) -> ItemT:
        try:
            return self._take(next(self._it))
        except StopIteration:
            self._finish(partial=False)
            raise
        except BaseException as exc:
            self._finish(partial=True)
            mapped = as_openai_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _finish(self, partial: bool) -> None:
        ending = self._ending(partial)
        if ending is not None:
            self._on_done(*ending)

    def close(self) -> None:
        """Stops early: records what arrived (partial) and closes the upstream connection."""
        self._finish(partial=True)
        closer = getattr(self._source, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> SyncStream[ItemT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        collector = getattr(self, "_collector", None)
        if collector is not None and not collector.done:
            with contextlib.suppress(Exception):
                self._finish(partial=True)


class AsyncStream(_Stream[ItemT], AsyncIterator[ItemT]):
    """The async twin of SyncStream."""

    def __init__(self, source: Any, info: MemoryInfo, on_done: OnDone) -> None:
        super().__init__(source, info, on_done)
        self._it = source.__aiter__()

    def __aiter__(self) -> AsyncStream[ItemT]:
        return self

    async def __anext__(self) -> ItemT:
        try:
            return self._take(await self._it.__anext__())
        except StopAsyncIteration:
            await self._finish(partial=False)
            raise
        except BaseException as exc:
            await self._finish(partial=True)
            mapped = as_openai_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _finish(self, partial: bool) -> None:
        ending = self._ending(partial)
        if ending is not None:
            # shielded: a caller that hangs up (task cancelled) must not cancel the recording of the turn
            await asyncio.shield(asyncio.to_thread(self._on_done, *ending))

    async def aclose(self) -> None:
        """Stops early: records what arrived (partial) and closes the upstream connection."""
        await self._finish(partial=True)
        closer = getattr(self._source, "aclose", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                await closer()

    async def __aenter__(self) -> AsyncStream[ItemT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class MemoryStream(SyncStream[ChatCompletionChunk]):
    """``chat.completions.create(stream=True)``: ``ChatCompletionChunk`` objects as they arrive; records the
    reply at the end (or what arrived, marked partial, if the caller stops early or the stream breaks)."""

    def _convert(self, raw: Any, seq: int) -> ChatCompletionChunk:
        return to_chunk(raw, seq)


class AsyncMemoryStream(AsyncStream[ChatCompletionChunk]):
    """The async twin of MemoryStream."""

    def _convert(self, raw: Any, seq: int) -> ChatCompletionChunk:
        return to_chunk(raw, seq)


class ResponseStream(SyncStream[ResponseStreamEvent]):
    """``responses.create(stream=True)``: the SDK's ``ResponseStreamEvent`` objects as they arrive."""

    def _convert(self, raw: Any, seq: int) -> ResponseStreamEvent:
        return to_event(raw, seq)


class AsyncResponseStream(AsyncStream[ResponseStreamEvent]):
    """The async twin of ResponseStream."""

    def _convert(self, raw: Any, seq: int) -> ResponseStreamEvent:
        return to_event(raw, seq)
