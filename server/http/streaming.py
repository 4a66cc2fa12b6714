"""Streaming, in one place: each API's server-sent-events framing with its guard (the error event a failure
after the headers becomes, the terminator), and `started`, which holds the headers back until the model has
taken the request. The route side (stream or whole answer, disconnects) is server/controllers/answer.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

import structlog

from server.http.errors import anthropic_error_event, error_event, ollama_error_event

log = structlog.get_logger("server.http.streaming")
Framing = Callable[[AsyncGenerator[bytes, None]], AsyncIterator[bytes]]

DONE = b"data: [DONE]\n\n"

# nginx buffers proxied responses unless told not to; an SSE stream must reach the client as it goes.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


async def guarded(events: AsyncGenerator[bytes, None], failure: Callable[[Exception], bytes],
                  end: bytes = b"") -> AsyncIterator[bytes]:
    """Pass already-encoded events on; a failure after the headers went out becomes `failure(exc)`, the
    error event of the stream's own framing. Closing this stream (the client left) closes `events` at once,
    and with it the generation."""
    try:
        async with aclosing(events):
            async for chunk in events:
                yield chunk
    except Exception as exc:  # the status line is gone: the error must travel inside the stream
        log.error("stream_failed", error=str(exc), exc_info=exc)
        yield failure(exc)
    if end:
        yield end


def openai_sse(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """OpenAI's chat and completions framing: an error event, then `[DONE]` whatever happened."""
    return guarded(events, lambda exc: event(error_event(exc)), DONE)


def named_sse(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Named events (`event: <type>`), the Responses API's: no `[DONE]`; its stream turns its own failures
    into `error` and `response.failed` events, anything else escaping still ends in an `error` event."""
    return guarded(events, lambda exc: b"event: error\ndata: " + error_event(exc) + b"\n\n")


def anthropic_sse(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Anthropic's framing: a failure after the headers went out is an `error` event in Anthropic's shape,
    and there is no `[DONE]` (message_stop ends a good stream)."""
    return guarded(events, lambda exc: b"event: error\ndata: " + anthropic_error_event(exc) + b"\n\n")


def ndjson(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Ollama's framing: one JSON object per line; a failure after the headers went out is an `error` line."""
    return guarded(events, ollama_error_event)


NDJSON = "application/x-ndjson"


async def started(stream: AsyncGenerator[bytes, None], framing: Framing = openai_sse) -> AsyncIterator[bytes]:
    """Run a stream up to its first write now, so that errors before the model took the request (unknown
    model, load failure, prompt too long) still become a proper HTTP error status instead of an SSE error
    event. The first write may be empty (the model has queued the request): the status line and headers
    go out at once, while the prompt is evaluated, and empty writes are not passed on."""
    try:
        first = await stream.__anext__()
    except BaseException:
        await stream.aclose()
        raise

    async def rest() -> AsyncGenerator[bytes, None]:
        async with aclosing(stream):
            if first:
                yield first
            async for chunk in stream:
                if chunk:
                    yield chunk

    return framing(rest())
