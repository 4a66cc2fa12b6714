"""structlog configuration: JSON lines when stdout is not a terminal, readable console output when it is.

Every request writes a line (the access log), so the pipeline is kept cheap: the timestamp (as structlog's
TimeStamper writes it) formats the date and time of day once a second; lines are compact JSON from msgspec
(`{"level":"error",...}`: an access line in 0.9 us, against 7 us with the json module's spaced output);
and the access line itself skips the processor chain (AccessLog).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog


class RunningRequest:
    """What the running request's log lines carry: its id on every line logged while it runs, and the
    tokens it used on its access line (RequestObserver sets it; the generation services add tokens)."""

    __slots__ = ("request_id", "prompt_tokens", "completion_tokens")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None


# One variable of our own: structlog's bind/unbind_contextvars cost more than the rest of a small
# request's log. A key into each request's own context, not shared state.
RUNNING: ContextVar[RunningRequest | None] = ContextVar("server_running_request", default=None)


def note_tokens(prompt: int, generated: int) -> None:
    """Add token counts to the running request's log line (no-op outside a request)."""
    running = RUNNING.get()
    if running is not None:
        running.prompt_tokens = (running.prompt_tokens or 0) + prompt
        running.completion_tokens = (running.completion_tokens or 0) + generated


def add_request_id(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    running = RUNNING.get()
    if running is not None:
        event.setdefault("request_id", running.request_id)
    return event


class UtcTimestamp:
    """`timestamp`: ISO 8601 in UTC (2026-01-31T12:00:00.123456Z), as `TimeStamper(fmt="iso", utc=True)`."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["timestamp"] = self.now()
        return event

    def now(self) -> str:
        now = time.time()
        second = int(now)
        micro = round((now - second) * 1_000_000)  # rounded, as datetime does
        if micro == 1_000_000:
            second, micro = second + 1, 0
        if second != self._second:
            utc = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
            self._second, self._prefix = second, utc.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"


class JsonLine:
    """The event as one compact JSON object (objects JSON has no type for become their `__structlog__()`
    or repr(), as with structlog's JSONRenderer)."""

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_fallback).encode

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        try:
            return self._encode(event).decode()
        except (TypeError, ValueError):  # a value msgspec refuses (a non-string key...): never a lost line
            return json.dumps(event, default=_fallback, separators=(",", ":"))


def _fallback(value: Any) -> Any:
    to_log = getattr(value, "__structlog__", None)
    return to_log() if callable(to_log) else repr(value)


def _numeric(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


class AccessLog:
    """The access line, the one log line every request writes: as JSON, the same object the structlog
    pipeline below writes (the request's fields, then event, request_id, level, timestamp). It skips the
    processor chain and the encoder: the line is one format string, its text fields quoted by msgspec
    (the part up to the duration kept per method, route, model and status) and one timestamp for the
    lines written together. Through the processor chain a line cost about 30 us of the 125 us a
    `GET /v1/models` takes in-process; built field by field with msgspec, 4 us; this way about 2,000
    instructions. On a terminal it goes through structlog's console renderer."""

    def __init__(self, level: str) -> None:
        numeric = _numeric(level)
        self._info, self._debug = numeric <= logging.INFO, numeric <= logging.DEBUG
        self._out = sys.stdout
        self._json = not self._out.isatty()
        self._stamp = UtcTimestamp()
        self._fd = _fileno(self._out)
        self._log = structlog.get_logger("server.access")
        self._heads: dict[tuple[str, str, str, int], str] = {}

    def requests(self, records: Iterable[Finished]) -> None:
        """The access lines of requests that ended together, in one write. A quiet record (a probe or a
        scrape) is written at debug level."""
        if not self._json:
            self._console(records)
            return
        heads, stamp, lines = self._heads, "", []
        for request_id, quiet, method, route, model, status, seconds, prompt, completion, _ in records:
            if not (self._debug if quiet else self._info):
                continue
            stamp = stamp or self._stamp.now()
            head = heads.get((method, route, model, status)) or self._head(method, route, model, status)
            tokens = "" if prompt is None else f',"prompt_tokens":{prompt},"completion_tokens":{completion}'
            quoted_id = f'"{request_id}"' if request_id.isalnum() else _json_text(request_id)
            lines.append(f'{head}{round(seconds, 4)!r}{tokens},"event":"request","request_id":{quoted_id},'
                         f'"level":"{"debug" if quiet else "info"}","timestamp":"{stamp}"}}\n')
        if lines:
            self._write("".join(lines))
            for line in lines:
                RECENT.add(line.rstrip("\n"))

    def _head(self, method: str, route: str, model: str, status: int) -> str:
        """The line up to its duration, kept per method, route, model and status (bounded: a 404's route
        is whatever path the client sent)."""
        head = (f'{{"method":{_json_text(method)},"route":{_json_text(route)},"model":{_json_text(model)},'
                f'"status":{status},"duration_s":')
        if len(self._heads) < 1024:
            self._heads[(method, route, model, status)] = head
        return head

    def _console(self, records: Iterable[Finished]) -> None:
        for request_id, quiet, method, route, model, status, seconds, prompt, completion, _ in records:
            if not (self._debug if quiet else self._info):
                continue
            fields: dict[str, Any] = {"method": method, "route": route, "model": model, "status": status,
                                      "duration_s": round(seconds, 4)}
            if prompt is not None:
                fields["prompt_tokens"], fields["completion_tokens"] = prompt, completion
            (self._log.debug if quiet else self._log.info)("request", request_id=request_id, **fields)

    def _write(self, text: str) -> None:
        if self._fd is None:
            self._out.write(text)  # one write, as WriteLogger does
            self._out.flush()
            return
        # Straight to the file descriptor: one system call, no text layer (WriteLogger flushes every line,
        # so the two never reorder).
        data = text.encode()
        while data:
            data = data[os.write(self._fd, data):]


def _json_text(text: str) -> str:
    return msgspec.json.encode(text).decode()


# What RequestObserver keeps of a finished request: request id, quiet (a probe: debug level), method,
# route (its template, or the path when no route matched), model, status, seconds, prompt and
# completion tokens (None when it generated nothing), and whether a route matched.
Finished = tuple[str, bool, str, str, str, int, float, "int | None", "int | None", bool]


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):  # a test's capture object, a closed stream
        return None


class RecentLines:
    """The last lines the server logged, numbered, for the pool page (GET /admin/pool/sse): the last
    processor, after the renderer, keeps a copy of each line."""

    def __init__(self, size: int = 300) -> None:
        self._lines: deque[tuple[int, str]] = deque(maxlen=size)
        self._count = 0

    def __call__(self, logger: Any, method: str, line: Any) -> Any:
        self.add(line if isinstance(line, str) else str(line))
        return line

    def add(self, line: str) -> None:
        """A line written another way (the access lines)."""
        self._count += 1
        self._lines.append((self._count, line))

    def since(self, number: int) -> tuple[int, list[str]]:
        """The lines after line `number` still kept, and the number of the last one."""
        return self._count, [text for n, text in self._lines if n > number]


RECENT = RecentLines()


def configure_logging(level: str = "info") -> None:
    numeric = _numeric(level)
    renderer = structlog.dev.ConsoleRenderer() if sys.stdout.isatty() else JsonLine()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            UtcTimestamp(),
            structlog.processors.format_exc_info,
            renderer,
            RECENT,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (print writes the newline apart), so the access lines never split another line.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
