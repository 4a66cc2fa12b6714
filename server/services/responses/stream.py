"""Streamed responses: the chat stream's chunks -> Responses' typed SSE events, each with its sequence number.

    response.created, response.in_progress
    per output item: response.output_item.added
        reasoning:     response.reasoning_text.delta..., response.reasoning_text.done
        message:       response.content_part.added, response.output_text.delta..., response.output_text.done,
                       response.content_part.done
        function_call: response.function_call_arguments.delta..., response.function_call_arguments.done
    response.output_item.done
    response.completed | response.incomplete (max_output_tokens) | error + response.failed (after a failure)

Errors before the model takes the request (unknown model, prompt too long, queue full) still get an HTTP
status: the chat stream's first (empty) step, the model's word that it queued the request, is awaited before
any event is sent, as the chat route does; `response.created` then goes out while the prompt is evaluated.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec
import structlog

from server.http.errors import error_event
from server.pool import ModelPool
from server.protocol.responses import ResponseRequest
from server.protocol.responses_response import (
    FunctionCallOutput,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningOutput,
    ReasoningText,
    ResponseError,
    StreamEvent,
)
from server.response_store import ResponseStore
from server.services.generation import run
from server.services.generation.choices import total_usage
from server.services.generation.events import CallDelta, Event, Finished, Reasoning, Text
from server.services.generation.plan import plan_conversation
from server.services.responses.input import new_item_id
from server.services.responses.service import NAMES, finished, prepare, save
from server.telemetry.metrics import Metrics

log = structlog.get_logger("server.responses")
_encode = msgspec.json.Encoder().encode


def frame(event: StreamEvent) -> bytes:
    return b"event: " + event.type.encode() + b"\ndata: " + _encode(event) + b"\n\n"


class EventMapper:
    """Keeps the output items being built and numbers the events."""

    def __init__(self) -> None:
        self._sequence = 0
        self.items: list[OutputItem] = []
        self._message: OutputMessage | None = None  # the open message item, if any
        self._reasoning: ReasoningOutput | None = None  # the open reasoning item, if any
        self._calls: list[FunctionCallOutput] = []  # open function calls
        self.finish_reason: str | None = None
        self.usage: tuple[int, int, int] | None = None  # prompt, completion and cached tokens

    def event(self, type_: str, **fields: Any) -> StreamEvent:
        event = StreamEvent(type=type_, sequence_number=self._sequence, **fields)
        self._sequence += 1
        return event

    def events(self, events: list[Event]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for item in events:  # Responses has one output: n is always 1
            if isinstance(item, Reasoning) and item.text:
                out += self._thought(item.text)
            elif isinstance(item, Text) and item.text:
                out += self._text(item.text)
            elif isinstance(item, CallDelta):
                out += self._call_piece(item)
            elif isinstance(item, Finished):
                self.finish_reason = item.reason
                self.usage = total_usage([item.usage])
        return out

    def _thought(self, text: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._reasoning is None:
            self._reasoning = ReasoningOutput(id=new_item_id("rs"), status="in_progress",
                                              content=[ReasoningText(text="")])
            self.items.append(self._reasoning)
            out.append(self.event("response.output_item.added", output_index=len(self.items) - 1,
                                  item=ReasoningOutput(id=self._reasoning.id, status="in_progress")))
        self._reasoning.content[0].text += text
        return out + [self.event("response.reasoning_text.delta", item_id=self._reasoning.id,
                                 output_index=self.items.index(self._reasoning), content_index=0, delta=text)]

    def _close_reasoning(self, status: str) -> list[StreamEvent]:
        item, self._reasoning = self._reasoning, None
        if item is None:
            return []
        index = self.items.index(item)
        item.status = status  # type: ignore[assignment]
        return [self.event("response.reasoning_text.done", item_id=item.id, output_index=index, content_index=0,
                           text=item.content[0].text),
                self.event("response.output_item.done", output_index=index, item=item)]

    def _text(self, text: str) -> list[StreamEvent]:
        out = self._close_reasoning("completed")
        out += [] if self._message is not None else self._open_message()
        assert self._message is not None
        part = self._message.content[0]
        part.text += text
        return out + [self.event("response.output_text.delta", item_id=self._message.id,
                                 output_index=self.items.index(self._message), content_index=0, delta=text,
                                 logprobs=[])]

    def _open_message(self) -> list[StreamEvent]:
        self._message = OutputMessage(id=new_item_id("msg"), status="in_progress", content=[])
        index = len(self.items)
        self.items.append(self._message)
        added = self.event("response.output_item.added", output_index=index,
                           item=OutputMessage(id=self._message.id, status="in_progress", content=[]))
        self._message.content.append(OutputText(text=""))
        return [added, self.event("response.content_part.added", item_id=self._message.id, output_index=index,
                                  content_index=0, part=OutputText(text=""))]

    def _close_message(self, status: str) -> list[StreamEvent]:
        message, self._message = self._message, None
        if message is None:
            return []
        index, text = self.items.index(message), message.content[0].text
        message.status = status  # type: ignore[assignment]
        return [
            self.event("response.output_text.done", item_id=message.id, output_index=index, content_index=0,
                       text=text, logprobs=[]),
            self.event("response.content_part.done", item_id=message.id, output_index=index, content_index=0,
                       part=OutputText(text=text)),
            self.event("response.output_item.done", output_index=index, item=message),
        ]

    def _call_piece(self, piece: CallDelta) -> list[StreamEvent]:
        """A function call item opens with its first piece (id, name); its arguments stream as deltas."""
        out: list[StreamEvent] = []
        if piece.id is not None and piece.name is not None:
            out += self._close_reasoning("completed") + self._close_message("completed")
            opened = FunctionCallOutput(id=new_item_id("fc"), call_id=piece.id, name=piece.name, arguments="",
                                        status="in_progress")
            self._calls.append(opened)
            self.items.append(opened)
            out.append(self.event("response.output_item.added", output_index=len(self.items) - 1,
                                  item=msgspec.structs.replace(opened)))
        if piece.arguments and piece.call < len(self._calls):
            item = self._calls[piece.call]
            item.arguments += piece.arguments
            out.append(self.event("response.function_call_arguments.delta", item_id=item.id,
                                  output_index=self.items.index(item), delta=piece.arguments))
        return out

    def close(self) -> list[StreamEvent]:
        """Finish every open item; a response with no answer (none, or reasoning only) still gets its (empty)
        message, as the non-streamed one does."""
        status = "incomplete" if self.finish_reason == "length" else "completed"
        out = self._close_reasoning(status)
        answered = any(not isinstance(item, ReasoningOutput) for item in self.items)
        out += self._open_message() if not answered else []
        out += self._close_message(status)
        for item in self._calls:
            index = self.items.index(item)
            item.status = "completed"
            out += [self.event("response.function_call_arguments.done", item_id=item.id, output_index=index,
                               arguments=item.arguments),
                    self.event("response.output_item.done", output_index=index, item=item)]
        self._calls = []
        return out


async def stream_response(pool: ModelPool[Any], store: ResponseStore, request: ResponseRequest,
                          metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """The SSE stream. Its first write comes once the model has taken the request (`started` awaits it, so
    errors before then are an HTTP status): `response.created` and `response.in_progress`. A failure after
    that is an `error` event and `response.failed`, with the output so far."""
    prepared = await prepare(store, request, pool.spec(request.model).n_ctx)
    plan = plan_conversation(pool, prepared.generation, NAMES)
    mapper = EventMapper()
    # Closing this generator (the client left, even right after `response.created`) closes the core's
    # stream at once, and with it the generation.
    async with aclosing(run.stream(pool, plan, metrics)) as steps:
        first = await steps.__anext__()
        yield b"".join(frame(mapper.event(kind, response=prepared.response))
                       for kind in ("response.created", "response.in_progress"))
        try:
            yield b"".join(map(frame, mapper.events(first)))
            async for events in steps:
                yield b"".join(map(frame, mapper.events(events)))
            closing = mapper.close()
            response = finished(prepared, mapper.items, mapper.usage, mapper.finish_reason)
            await save(store, prepared, response)
        except Exception as exc:  # the status line is gone: the failure travels as events
            log.error("response_stream_failed", error=str(exc), exc_info=exc)
            body = msgspec.json.decode(error_event(exc))["error"]
            failed = msgspec.structs.replace(
                prepared.response, status="failed", output=mapper.items,
                error=ResponseError(code=body.get("code") or "server_error", message=body["message"]))
            yield frame(mapper.event("error", code=body.get("code"), message=body["message"],
                                     param=body.get("param"))) \
                + frame(mapper.event("response.failed", response=failed))
            return
    kind = "response.incomplete" if response.status == "incomplete" else "response.completed"
    yield b"".join(map(frame, closing)) + frame(mapper.event(kind, response=response))
