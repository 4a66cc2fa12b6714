"""What one streamed answer looked like, and the numbers taken from many of them.

Pure Python, no I/O: the workloads fill `StreamResult`s, everything here only reads them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class StreamResult:
    """One streamed chat answer, as the client saw it. Times are `time.perf_counter()` seconds."""

    contender: str
    alias: str
    started: float
    ended: float = 0.0
    token_times: list[float] = field(default_factory=list)  # arrival of each event that carried text
    text: str = ""
    finish_reason: str | None = None
    done: bool = False  # the stream ended properly ([DONE] for SSE, the iterator ran out in-process)
    tokens: int = 0  # the answer's length in tokens, counted with the model's own tokenizer
    usage_tokens: int | None = None  # completion_tokens of the server's usage chunk, when it sent one
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def problem(result: StreamResult, expected_tokens: int) -> str | None:
    """Why this stream is not a complete answer of `expected_tokens` tokens, or None when it is.

    A stream cut short by the server typically ends without a finish_reason (llama-cpp-python's server
    sends [DONE] early when another request arrives), so each condition is checked on its own.
    """
    if result.error:
        return f"error: {result.error}"
    if result.finish_reason is None:
        return f"no finish_reason after {result.tokens} tokens"
    if not result.done:
        return "stream ended without [DONE]"
    if result.tokens != expected_tokens:
        return f"{result.tokens}/{expected_tokens} tokens (finish_reason {result.finish_reason})"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default method)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def total_rate(results: Sequence[StreamResult]) -> float:
    """Tokens per second over a group of streams run together: all their tokens over the wall time
    from the first request sent to the last stream closed."""
    if not results:
        return 0.0
    wall = max(r.ended for r in results) - min(r.started for r in results)
    return sum(r.tokens for r in results) / wall if wall > 0 else 0.0


@dataclass(frozen=True)
class Overlap:
    """How far two groups of streams (one per alias) produced tokens at the same time."""

    seconds: float  # length of the window where both groups were producing tokens
    fraction: float  # that window over the shorter group's own span: 1.0 fully parallel, 0.0 one after the other
    tokens_inside: tuple[int, int]  # each group's text events inside the shared window

    def both_progress(self, min_fraction: float = 0.5) -> bool:
        return self.fraction >= min_fraction and min(self.tokens_inside) > 0


def overlap(first: Sequence[float], second: Sequence[float]) -> Overlap:
    """Overlap of two token timelines (arrival times of text events)."""
    if not first or not second:
        return Overlap(0.0, 0.0, (0, 0))
    start = max(min(first), min(second))
    end = min(max(first), max(second))
    if end <= start:
        return Overlap(0.0, 0.0, (0, 0))
    shorter = min(max(first) - min(first), max(second) - min(second))
    inside = (sum(start <= t <= end for t in first), sum(start <= t <= end for t in second))
    return Overlap(end - start, min(1.0, (end - start) / shorter) if shorter > 0 else 0.0, inside)
