"""structlog configuration: JSON lines when stdout is not a terminal, readable console output when it is.

Every request writes a line (the access log), so the pipeline is kept cheap: the timestamp (as structlog's
TimeStamper writes it) formats the date and time of day once a second, and the line is encoded by msgspec
(compact JSON, a seventh of the json module's time for an access line).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog


class UtcTimestamp:
    """`timestamp`: ISO 8601 in UTC (2026-01-31T12:00:00.123456Z), as `TimeStamper(fmt="iso", utc=True)`."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        micro = round((now - second) * 1_000_000)  # rounded, as datetime does
        if micro == 1_000_000:
            second, micro = second + 1, 0
        if second != self._second:
            utc = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
            self._second, self._prefix = second, utc.strftime("%Y-%m-%dT%H:%M:%S")
        event["timestamp"] = f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"
        return event


class JsonLine:
    """The event as one JSON object (objects JSON has no type for become their `__structlog__()` or
    repr(), as with structlog's JSONRenderer)."""

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_fallback).encode

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        try:
            return self._encode(event).decode()
        except (TypeError, ValueError):  # e.g. a key that is not a string: the slow road, never a lost line
            return json.dumps(event, default=_fallback)


def _fallback(value: Any) -> Any:
    to_log = getattr(value, "__structlog__", None)
    return to_log() if callable(to_log) else repr(value)


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer = structlog.dev.ConsoleRenderer() if sys.stdout.isatty() else JsonLine()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            UtcTimestamp(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
