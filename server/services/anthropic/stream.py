"""Streamed messages: the generation core's events mapped to Anthropic's server-sent events.

`message_start` and a `ping` go out once the model has taken the request (before its first token);
reasoning opens a `thinking` block streamed as `thinking_delta`s; text opens a text block and streams as
`text_delta`s; a tool call (known whole once the call closes) is a `tool_use` block with its input as one
`input_json_delta`; then `message_delta` (stop_reason, stop_sequence, usage) and `message_stop`.
`message_start` carries the prompt's token count (clients track their context from it); `message_delta`
the final split between tokens read from the cache and the rest, as Anthropic's cumulative usage does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

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
from server.services.anthropic.service import (
    NAMES,
    conversation,
    message_usage,
    new_message_id,
    stop_reason,
    tool_use_id,
)
from server.services.generation import run
from server.services.generation.choices import total_usage
from server.services.generation.events import CallDelta, Event, Finished, Reasoning, Started, Text
from server.services.generation.plan import plan_conversation
from server.telemetry.metrics import Metrics

_encode = msgspec.json.Encoder().encode


def frame(event: Any) -> bytes:
    """`event: <type>` and `data: <json>`: Anthropic names every event, and its SDK dispatches on the name."""
    return b"event: " + event.__struct_config__.tag.encode() + b"\ndata: " + _encode(event) + b"\n\n"


class EventMapper:
    """The core's events (one choice) in, Anthropic stream events out."""

    def __init__(self, model: str, stop_sequences: list[str] | Any) -> None:
        self._model = model
        self._stop_sequences = stop_sequences
        self._index = -1  # the content block being written
        self._open_kind: str | None = None  # "thinking", "text" or "tool_use": the streamed block still open

    def events(self, events: list[Event]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for item in events:
            if isinstance(item, Started):  # the prompt's size, as Anthropic and llama-server send it
                usage = MessageUsage(input_tokens=item.prompt_tokens or 0, output_tokens=0)
                out += [MessageStart(message=MessageResponse(id=new_message_id(), content=[], model=self._model,
                                                             usage=usage)), Ping()]
            elif isinstance(item, Reasoning) and item.text:
                out += self._streamed("thinking")
                out.append(ContentBlockDelta(index=self._index, delta=ThinkingDelta(thinking=item.text)))
            elif isinstance(item, Text) and item.text:
                out += self._streamed("text")
                out.append(ContentBlockDelta(index=self._index, delta=TextDelta(text=item.text)))
            elif isinstance(item, CallDelta):  # a tool_use block opens with the call's name, its input streams
                if item.id is not None and item.name is not None:
                    out += self._close_text()
                    out += self._open(ToolUseContent(id=tool_use_id(item.id), name=item.name, input={}))
                    self._open_kind = "tool_use"
                if item.arguments:
                    out.append(ContentBlockDelta(index=self._index, delta=InputJsonDelta(partial_json=item.arguments)))
            elif isinstance(item, Finished):
                out += self._close_text()
                reason, sequence = stop_reason(item.reason, item.stop, self._stop_sequences)
                out += [MessageDelta(delta=MessageDeltaBody(stop_reason=reason, stop_sequence=sequence),
                                     usage=message_usage(*total_usage([item.usage]))), MessageStop()]
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
        """Close the open block (thinking, text or tool_use), if any."""
        if self._open_kind is None:
            return []
        self._open_kind = None
        return [ContentBlockStop(index=self._index)]


async def stream_message(pool: ModelPool[Any], request: MessagesRequest,
                         metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """Event bytes, one write per decode step, the first once the model has taken the request: errors
    before that are still an HTTP status."""
    mapper = EventMapper(request.model, request.stop_sequences)
    plan = plan_conversation(pool, conversation(request, pool.spec(request.model).n_ctx), NAMES)
    async with aclosing(run.stream(pool, plan, metrics)) as steps:
        async for events in steps:
            yield b"".join(frame(event) for event in mapper.events(events))
