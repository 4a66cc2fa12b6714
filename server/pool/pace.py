"""How long an alias's requests keep a slot, as measured, and the `Retry-After` that follows from it.

Per alias, moving averages of what finished requests measured (seconds per generated token of one
sequence, seconds to the first token, tokens per answer), and the requests running now with their
token budgets (`max_tokens`). A refused request is told when a slot should be free for it: each
running request ends after its budget at the measured pace (a typical answer where the client set no
budget; at least half the time it has already run, should it run past that), each queued request
ahead takes the first slot free for a typical answer, and the refused one would get the next slot
free after all of those. Work per request, never per token.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable

# Before anything was measured: a small model on a few CPU cores (about 50 tokens/s per sequence), a
# chat answer of a few paragraphs. The first measurement replaces each prior; later ones move the average.
PRIOR_TOKEN_SECONDS = 0.02
PRIOR_FIRST_TOKEN_SECONDS = 0.2
PRIOR_ANSWER_TOKENS = 256.0
WEIGHT = 0.3  # of the newest request in each moving average
RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 60  # the openai SDK honours a Retry-After of up to 60 s; past that it uses its own back-off


class Running:
    """One request holding a slot: when it got it, and how many tokens it may generate (None: not said)."""

    __slots__ = ("since", "max_tokens")

    def __init__(self, max_tokens: int | None, since: float) -> None:
        self.since = since
        self.max_tokens = max_tokens


class Pace:
    def __init__(self) -> None:
        self.token_seconds = PRIOR_TOKEN_SECONDS
        self.first_token_seconds = PRIOR_FIRST_TOKEN_SECONDS
        self.answer_tokens = PRIOR_ANSWER_TOKENS
        self.measured = 0  # requests that fed the averages
        self.running: set[Running] = set()

    # -- requests come and go ---------------------------------------------------------------------------

    def start(self, max_tokens: int | None) -> Running:
        run = Running(max_tokens, time.monotonic())
        self.running.add(run)
        return run

    def end(self, run: Running) -> None:
        self.running.discard(run)

    def learn(self, sequences: Iterable[tuple[int, float, float]]) -> None:
        """One finished request: per sequence, (tokens generated, seconds to the first, seconds from the
        first to the last). Sequences of one request run side by side: its answer is the longest."""
        rows = list(sequences)
        generated = [tokens for tokens, _, _ in rows]
        if not rows or max(generated) == 0:
            return  # nothing generated (an embedding, a refusal): nothing learnt about generation
        first = sum(first for tokens, first, _ in rows if tokens) / sum(1 for tokens in generated if tokens)
        paced = [(tokens - 1, decode) for tokens, _, decode in rows if tokens > 1]
        fresh = self.measured == 0
        self.first_token_seconds = _average(self.first_token_seconds, first, fresh)
        self.answer_tokens = _average(self.answer_tokens, float(max(generated)), fresh)
        if paced:
            per_token = sum(decode for _, decode in paced) / sum(gaps for gaps, _ in paced)
            self.token_seconds = _average(self.token_seconds, per_token, fresh)
        self.measured += 1

    def report(self) -> dict[str, float | int]:
        """What /admin/pool shows: the averages (the priors while `measured` is 0)."""
        return {"measured": self.measured, "tokens_per_second": round(1 / self.token_seconds, 2),
                "first_token_seconds": round(self.first_token_seconds, 4),
                "answer_tokens": round(self.answer_tokens, 1)}

    # -- the estimate -----------------------------------------------------------------------------------

    def seconds(self, max_tokens: int | None) -> float:
        """How long a request with this budget holds its slot, from its start."""
        tokens = self.answer_tokens if max_tokens is None else min(max_tokens, 1 << 20)
        return self.first_token_seconds + tokens * self.token_seconds

    def retry_after(self, slots: int, queued: int, now: float | None = None) -> int:
        """Whole seconds until a slot should be free for one more request: `slots` busy (running or
        loading), `queued` requests ahead of it. At least RETRY_AFTER_MIN, at most RETRY_AFTER_MAX."""
        now = time.monotonic() if now is None else now
        free_at = sorted(_remaining(self.seconds(run.max_tokens), now - run.since) for run in self.running)
        free_at = free_at[:slots] + [self.seconds(None)] * (slots - len(free_at))  # loading: a whole answer
        heapq.heapify(free_at)
        typical = self.seconds(None)
        for _ in range(queued):  # each request ahead takes the first slot free, for a typical answer
            if free_at[0] >= RETRY_AFTER_MAX:
                break
            heapq.heapreplace(free_at, free_at[0] + typical)
        return max(RETRY_AFTER_MIN, min(RETRY_AFTER_MAX, math.ceil(free_at[0]))) if free_at else RETRY_AFTER_MIN


def _remaining(expected: float, elapsed: float) -> float:
    """A request that runs longer than the pace predicts shows that the pace is slower now (a busy
    machine, a model not measured yet): it is taken to need at least half the time it has already run."""
    return max(expected - elapsed, elapsed / 2)


def _average(old: float, new: float, fresh: bool) -> float:
    return new if fresh else old + WEIGHT * (new - old)
