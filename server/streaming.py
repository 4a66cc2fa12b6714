"""Server-sent events framing: `data: <json>\\n\\n` per event, an error event on failure, `data: [DONE]`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

import structlog

from server.http_errors import error_event

log = structlog.get_logger("server.streaming")

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


def sse(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """OpenAI's framing: an error event, then `[DONE]` whatever happened."""
    return guarded(events, lambda exc: event(error_event(exc)), DONE)


async def started(stream: AsyncGenerator[bytes, None],
                  framing: Callable[[AsyncGenerator[bytes, None]], AsyncIterator[bytes]] = sse) -> AsyncIterator[bytes]:
    """Run a stream up to its first write now, so that errors before the model took the request (unknown
    model, load failure, prompt too long) still become a proper HTTP error status instead of an SSE error
    event. The first write may be empty (the model has queued the request; the streams yield b"" then):
    the status line and headers go out at once, while the prompt is evaluated, and empty writes are not
    passed on. `framing`: how the rest goes out (OpenAI's by default; the Messages API has its own)."""
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
