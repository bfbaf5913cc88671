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
from typing import Any, Generic, TypeVar, get_args

from memstore.adapters.openai.errors import as_openai_error
from memstore.adapters.openai.steps import MemoryInfo
from openai._models import construct_type_unchecked
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

OnDone = Callable[[str, bool, str | None], None]
"""Records a streamed reply: ``(text, partial, response_id)``."""

ItemT = TypeVar("ItemT", bound=ChatCompletionChunk | ResponseStreamEvent)
T = TypeVar("T")

# the classes of the SDK's ResponseStreamEvent union (an Annotated union discriminated by ``type``)
_EVENT_CLASSES: tuple[type, ...] = tuple(get_args(get_args(ResponseStreamEvent)[0]))


# -- the reply text of a finished result ---------------------------------------------------------------
def reply_text(completion: ChatCompletion) -> str:
    """The text of the first choice; tool calls are rendered so the turn still shows what happened."""
    if not completion.choices or not isinstance(completion.choices, list):
        return ""
    msg = getattr(completion.choices[0], "message", None)
    if msg is None:
        return ""
    text = msg.content if isinstance(msg.content, str) else ""
    for call in msg.tool_calls if isinstance(msg.tool_calls, list) else []:
        function = getattr(call, "function", None)  # custom tool calls have no function
        if function is not None:
            text += f"\n[tool call {function.name}({function.arguments})]"
    return text.strip()


def output_text(resp: Response) -> str:
    """The text of a Responses API response (also of one an upstream left fields out of)."""
    try:
        text = resp.output_text  # the SDK's property: raises on an output it cannot walk (null, odd items)
    except Exception:
        text = None
    if isinstance(text, str) and text:
        return text
    parts = []
    for item in resp.output if isinstance(resp.output, list) else []:
        content = getattr(item, "content", None)
        for c in content if isinstance(content, list) else []:
            if getattr(c, "type", None) == "output_text" and isinstance(getattr(c, "text", None), str):
                parts.append(c.text)
    return "".join(parts)


# -- what comes back, as the SDK's own types, parsed as leniently as the SDK parses ----------------------
def _data(raw: Any) -> Any:
    """A litellm object (or a plain mapping) as plain data."""
    if hasattr(raw, "model_dump"):
        try:
            return raw.model_dump(mode="json", warnings=False)
        except TypeError:  # a model_dump without pydantic's keywords
            return raw.model_dump()
    return dict(raw) if isinstance(raw, dict) else raw


def construct(type_: type[T], raw: Any) -> T:
    """``raw`` (a litellm object or plain data) as ``type_``, built the way the openai SDK builds what an API
    answers (``openai._models.construct_type``): nothing validated, so a missing field is None, an extra one
    is kept (``model_extra``) and a null one stays null, while nested objects and discriminated unions still
    become the SDK's own classes. The SDK's own client accepts such bodies, and so must a drop-in for it."""
    return construct_type_unchecked(value=_data(raw), type_=type_)


def to_chunk(raw: Any, seq: int = 0) -> ChatCompletionChunk:
    """litellm's stream chunk as ``openai.types.chat.ChatCompletionChunk`` (the SDK's own passes unchanged)."""
    if isinstance(raw, ChatCompletionChunk):
        return raw
    return construct(ChatCompletionChunk, raw)


def to_event(raw: Any, seq: int) -> ResponseStreamEvent:
    """A Responses stream event as the openai SDK's own event type: the SDK's own passes unchanged (numbered by
    its position if the upstream left ``sequence_number`` out); litellm's is built as the SDK would build it and
    numbered by its position (litellm's own numbers are not the upstream's, and skip when the upstream sent
    none)."""
    if isinstance(raw, _EVENT_CLASSES):
        event: Any = raw
    else:
        data = _data(raw)
        if isinstance(data, dict):
            data["sequence_number"] = seq
        event = construct(ResponseStreamEvent, data)  # type: ignore[arg-type]  # a union, as the SDK passes it
    if getattr(event, "sequence_number", 0) is None:
        event.sequence_number = seq
    return event  # type: ignore[no-any-return]


# -- the collector -----------------------------------------------------------------------------------
class ReplyCollector:
    """Accumulates a streamed reply from chat chunks or Responses events. Pure: no I/O."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.final: str | None = None  # the whole text, when the stream says it (response.completed)
        self.response_id: str | None = None
        self.done = False

    def see(self, item: ChatCompletionChunk | ResponseStreamEvent) -> None:
        """Takes what the item says; as lenient as the parsing: a field an upstream left out is skipped."""
        if isinstance(item, ChatCompletionChunk):
            self.response_id = self.response_id or item.id
            for choice in item.choices if isinstance(item.choices, list) else []:
                delta = getattr(choice, "delta", None)
                content = getattr(delta, "content", None)
                if (getattr(choice, "index", None) or 0) == 0 and isinstance(content, str) and content:
                    self.parts.append(content)
        elif isinstance(item, ResponseTextDeltaEvent):
            if isinstance(item.delta, str):
                self.parts.append(item.delta)
        elif isinstance(item, ResponseCreatedEvent | ResponseCompletedEvent) and item.response is not None:
            self.response_id = getattr(item.response, "id", None) or self.response_id
            if isinstance(item, ResponseCompletedEvent):
                self.final = output_text(item.response) or None

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
        """The recording to make when the stream ends, or None if it already ended or was no reply: an upstream
        stream that ended before its first item (an HTML page or ``{}`` where events were due) is recorded as
        little as a plain answer that is no completion."""
        c = self._collector
        if not c.end() or (not partial and self._seq == 0):
            return None
        return c.text(), partial, c.response_id


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
