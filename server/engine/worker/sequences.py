"""What the decode loop moves around: a request's sequences (a job), each sequence's state, and the slots
(one KV sequence each) they run in."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.engine.text import StopMatcher, Utf8Stream
from server.engine.types import Request, Usage
from server.engine.worker.ngram import NgramIndex
from server.engine.worker.sampling import TokenSampler
from server.engine.worker.speculation import PredictionTrack, Shadow


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
    ngrams: NgramIndex | None = None  # speculation: this sequence's history, indexed for drafts
    shadow: Shadow | None = None  # a draft not sent, compared with what gets written
    prediction: PredictionTrack | None = None  # where the answer is in the request's prediction
    draft_bucket: int = 0  # the agreement bucket of the draft in flight
    drafted: int = 0
    accepted: int = 0
    drafts: int = 0

    def usage(self) -> Usage:
        first = self.first_at or time.perf_counter()
        return Usage(len(self.prompt), self.generated, self.cached, first_token_seconds=first - self.submitted,
                     decode_seconds=(self.last_at or first) - first, gaps=tuple(self.gaps),
                     restored_tokens=min(self.restored, self.cached), drafted_tokens=self.drafted,
                     accepted_tokens=self.accepted, drafts=self.drafts)


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


def fill_step(batch: Any, active: list[Sequence], drafts: list[list[int]] | None,
              room: int) -> tuple[int, list[tuple[Sequence, int, list[int]]], list[Sequence]]:
    """One step's batch: each generating sequence's next token (and its draft, if any), each other one's
    next prompt chunk, in turn until the batch is full. Returns the tokens in it, the sequences to sample
    (with the batch index of their next token's logits and their draft), and the sequences in it."""
    outputs: list[tuple[Sequence, int, list[int]]] = []
    in_batch: list[Sequence] = []
    n = 0
    for position, seq in enumerate(active):
        if room == 0:
            break
        slot = seq.slot
        assert slot is not None
        in_batch.append(seq)
        draft = drafts[position] if drafts is not None else []
        if seq.next_token is not None:
            chunk, last = [seq.next_token, *draft], True
        else:
            chunk = seq.pending[:room]
            seq.pending = seq.pending[len(chunk):]
            last = not seq.pending
        n = fill_batch(batch, n, chunk, len(slot.tokens), slot.seq_id)
        slot.tokens.extend(chunk)
        room -= len(chunk)
        if last:  # logits for the next token and each drafted one
            for index in range(n - 1 - len(draft), n):
                batch.logits[index] = 1
            outputs.append((seq, n - 1 - len(draft), draft))
    batch.n_tokens = n
    return n, outputs, in_batch
