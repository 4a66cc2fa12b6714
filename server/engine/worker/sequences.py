"""What the decode loop moves around: a request's sequences (a job), each sequence's state, and the slots
(one KV sequence each) they run in."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.engine.text import StopMatcher, Utf8Stream
from server.engine.types import Request
from server.engine.worker.sampling import TokenSampler


@dataclass(eq=False)
class Job:
    """One request's sequences. `stopped`: cancelled or failed, its sequences leave at the next step."""

    id: int
    remaining: int
    waiting: deque[Sequence] = field(default_factory=deque)
    stopped: bool = False
    failed: bool = False


@dataclass(eq=False)
class Sequence:
    job: Job
    index: int
    request: Request
    prompt: list[int]
    budget: int
    seed: int
    slot: Slot | None = None
    sampler: TokenSampler | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    next_token: int | None = None  # sampled, to be evaluated in the next step
    generated: int = 0
    cached: int = 0
    restored: int = 0  # of the cached tokens, those read back from the prompt store on disk
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_at: float = 0.0
    last_at: float = 0.0
    gaps: list[float] = field(default_factory=list)  # between consecutive tokens, for the latency histogram


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV cache holds, in order
    last_used: float = 0.0
    busy: bool = False


def next_in_turn(waiting: deque[Job]) -> Sequence | None:
    """Requests take turns: one sequence from the front request, which then goes to the back. A request of
    many sequences (prompts x n) cannot hold a small one back for its whole length. The caller holds the
    lock on `waiting`."""
    while waiting:
        job = waiting.popleft()
        if not job.waiting:
            continue
        seq = job.waiting.popleft()
        if job.waiting:
            waiting.append(job)
        return seq
    return None


def take_all(waiting: deque[Job]) -> list[Sequence]:
    """Every waiting sequence, the queue emptied (the caller holds its lock)."""
    sequences = [seq for job in waiting for seq in job.waiting]
    for job in waiting:
        job.waiting.clear()
    waiting.clear()
    return sequences


def fill_batch(batch: Any, n: int, tokens: list[int], pos: int, seq_id: int) -> int:
    """Put `tokens` (positions from `pos`, sequence `seq_id`, no logits) into a llama_batch from index `n`;
    the next free index."""
    for offset, token in enumerate(tokens):
        batch.token[n] = token
        batch.pos[n] = pos + offset
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq_id
        batch.logits[n] = 0
        n += 1
    return n
