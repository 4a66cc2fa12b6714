"""Streamed messages: the chat service's chunks mapped to Anthropic's server-sent events.

`message_start` and a `ping` go out once the model has taken the request (before its first token);
reasoning opens a `thinking` block streamed as `thinking_delta`s; text opens a text block and streams as
`text_delta`s; a tool call (known whole once the call closes) is a `tool_use` block with its input as one
`input_json_delta`; then `message_delta` (stop_reason, stop_sequence, usage) and `message_stop`. Input
tokens are known only when generation ends, so `message_start` says 0 and `message_delta` carries the
counts, as Anthropic's own cumulative `message_delta` usage does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

from server.http_errors import anthropic_error_event
from server.metrics import Metrics
from server.pool import ModelPool
from server.protocol.anthropic import MessagesRequest
from server.protocol.anthropic_response import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageDeltaBody,
    MessageResponse,
    MessageStart,
    MessageStop,
    MessageUsage,
    Ping,
    StreamEvent,
    TextContent,
    TextDelta,
    ThinkingContent,
    ThinkingDelta,
    ToolUseContent,
)
from server.protocol.chat_response import ChatCompletionChunk
from server.services.anthropic import chat_request, message_usage, new_message_id, stop_reason, tool_use_id
from server.services.chat import chat_chunks
from server.streaming import guarded

_encode = msgspec.json.Encoder().encode


def frame(event: Any) -> bytes:
    """`event: <type>` and `data: <json>`: Anthropic names every event, and its SDK dispatches on the name."""
    return b"event: " + event.__struct_config__.tag.encode() + b"\ndata: " + _encode(event) + b"\n\n"


class EventMapper:
    """Chat chunks (one choice) in, Anthropic stream events out."""

    def __init__(self, model: str, stop_sequences: list[str] | Any) -> None:
        self._model = model
        self._stop_sequences = stop_sequences
        self._started = False
        self._index = -1  # the content block being written
        self._open_kind: str | None = None  # "thinking" or "text": the streamed block still open
        self._finish: str | None = None
        self._stop: str | None = None

    def events(self, chunks: list[ChatCompletionChunk]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            empty = MessageUsage(input_tokens=0, output_tokens=0)
            out += [MessageStart(message=MessageResponse(id=new_message_id(), content=[], model=self._model,
                                                         usage=empty)), Ping()]
        for chunk in chunks:
            for choice in chunk.choices:
                delta = choice.delta
                if isinstance(delta.reasoning_content, str) and delta.reasoning_content:
                    out += self._streamed("thinking")
                    out.append(ContentBlockDelta(index=self._index,
                                                 delta=ThinkingDelta(thinking=delta.reasoning_content)))
                if delta.content:
                    out += self._streamed("text")
                    out.append(ContentBlockDelta(index=self._index, delta=TextDelta(text=delta.content)))
                for call in delta.tool_calls or []:
                    out += self._close_text()
                    out += self._open(ToolUseContent(id=tool_use_id(call.id or ""), name=call.function.name or "",
                                                     input={}))
                    arguments = InputJsonDelta(partial_json=call.function.arguments)
                    out += [ContentBlockDelta(index=self._index, delta=arguments), ContentBlockStop(index=self._index)]
                if choice.finish_reason is not None:
                    out += self._close_text()
                    self._finish = choice.finish_reason
                    self._stop = choice.stop_reason if isinstance(choice.stop_reason, str) else None
            if chunk.usage:  # the last chunk: the whole request's usage
                reason, sequence = stop_reason(self._finish, self._stop, self._stop_sequences)
                out += [MessageDelta(delta=MessageDeltaBody(stop_reason=reason, stop_sequence=sequence),
                                     usage=message_usage(chunk.usage)), MessageStop()]
        return out

    def _streamed(self, kind: str) -> list[StreamEvent]:
        """The events that make `kind` the open block: nothing if it is, else close the other, open this."""
        if self._open_kind == kind:
            return []
        out = self._close_text()
        self._open_kind = kind
        return out + self._open(ThinkingContent(thinking="") if kind == "thinking" else TextContent(text=""))

    def _open(self, block: ThinkingContent | TextContent | ToolUseContent) -> list[StreamEvent]:
        self._index += 1
        return [ContentBlockStart(index=self._index, content_block=block)]

    def _close_text(self) -> list[StreamEvent]:
        """Close the open thinking or text block, if any."""
        if self._open_kind is None:
            return []
        self._open_kind = None
        return [ContentBlockStop(index=self._index)]


async def stream_message(pool: ModelPool[Any], request: MessagesRequest,
                         metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """Event bytes, one write per decode step, the first once the model has taken the request: errors
    before that are still an HTTP status."""
    mapper = EventMapper(request.model, request.stop_sequences)
    async with aclosing(chat_chunks(pool, chat_request(request, pool.spec(request.model).n_ctx), metrics)) as steps:
        async for chunks in steps:
            events = mapper.events(chunks)
            if events:
                yield b"".join(frame(event) for event in events)


def anthropic_sse(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Anthropic's framing: a failure after the headers went out is an `error` event, and there is no
    `[DONE]` (message_stop ends a good stream)."""
    return guarded(events, lambda exc: b"event: error\ndata: " + anthropic_error_event(exc) + b"\n\n")
