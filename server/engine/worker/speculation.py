"""How many drafted tokens each generating sequence puts into the next decode, if any.

A drafted token is verified in the same batch as the sequence's next token: it costs batch room and
compute whether it turns out right or not, and it yields a token only when it is right. Whether that
pays depends on the machine (on 2 CPU cores a second token in a batch costs most of a step, the
sixteenth little; on a GPU they are nearly free) and on the text (code copied with a change: most
guesses right; new prose: few). So both are measured here instead of fixed:

- `StepCost`: the decode's duration by the number of tokens in the batch, timed at load for a few sizes
  and then from every decode step, so it follows the machine and the context's length.
- `Acceptance`: how often a guess backed by a given agreement length (ngram.py) is right, for the first
  drafted token and for one after a right one. Learned from the drafts verified and, while drafting
  does not pay, from the guesses not sent ("shadow" drafts, compared with the tokens the model then
  writes): turning speculation down never stops the learning that may turn it up again.

`plan` then takes the drafted tokens most likely to be right, across sequences, as long as the expected
tokens per second of the step grow by at least MARGIN over a step without drafts. Where nothing repeats,
no draft is sent and the only cost is the lookup (microseconds a step).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

MARGIN = 0.05  # a step with drafts must promise this much more than one without
MAX_POSITIONS = 64  # draft positions tracked
PRIOR_HAZARD = 0.3  # a new engine's guess of how often a drafted token is wrong where the ones before were right
DECAY = 0.97  # weight left to older observations at each new one (about the last 30 count)
FORGET = 0.95  # the same for the step-cost line (about the last 20 multi-token steps)
# Agreement lengths (ngram.py's `match`) grouped: bucket i holds BUCKETS[i] <= match < BUCKETS[i + 1].
BUCKETS = (0, 3, 4, 6, 9, 13, 17, 25, 33, 49)
MODEL_BUCKET = len(BUCKETS)  # one more, for the draft model's guesses
PREDICTION_BUCKET = MODEL_BUCKET + 1  # and one for the continuation of a prediction the answer follows
# A client's prediction is trusted until it proves wrong: its bucket starts from a low hazard.
PRIOR_HAZARDS = {PREDICTION_BUCKET: 0.02}
CALIBRATION_SIZES = (1, 2, 8)
WINDOW_BYTES_PER_TOKEN = 16  # of a prediction's text, tokenized for a guess of so many tokens


def bucket_of(match: int) -> int:
    return bisect.bisect_right(BUCKETS, match) - 1


class Acceptance:
    """Per agreement bucket and per position in a draft: the chance that the j-th drafted token is right,
    read as a survival curve from the drafts seen (position j's hazard: drafts that failed there over the
    drafts still right before it that were that long). A geometric model with one rate per position
    undercounts long drafts: a guess is mostly either wrong at once or right for a long stretch. A new
    engine starts from a hazard of PRIOR_HAZARD everywhere, which the first drafts overrule; a position
    few drafts reached takes the bucket's hazard over all positions."""

    def __init__(self) -> None:
        self._failed = [[0.0] * MAX_POSITIONS for _ in range(PREDICTION_BUCKET + 1)]
        self._tried = [[0.0] * MAX_POSITIONS for _ in range(PREDICTION_BUCKET + 1)]

    def chances(self, bucket: int, length: int) -> list[float]:
        """The chance that each of a draft's first `length` tokens is right (all the ones before it too)."""
        failed, tried = self._failed[bucket], self._tried[bucket]
        # A position with few drafts that reached it leans on the bucket's hazard over all positions.
        pooled = (sum(failed) + PRIOR_HAZARDS.get(bucket, PRIOR_HAZARD)) / (sum(tried) + 1.0)
        out, alive = [], 1.0
        for j in range(min(length, MAX_POSITIONS)):
            alive *= 1.0 - (failed[j] + pooled) / (tried[j] + 1.0)
            out.append(alive)
        return out

    def record(self, bucket: int, drafted: int, accepted: int) -> None:
        """A draft of `drafted` tokens of which the first `accepted` were right."""
        failed, tried = self._failed[bucket], self._tried[bucket]
        for j in range(MAX_POSITIONS):
            failed[j] *= DECAY
            tried[j] *= DECAY
        for j in range(min(accepted + 1, drafted, MAX_POSITIONS)):
            tried[j] += 1.0
        if accepted < min(drafted, MAX_POSITIONS):
            failed[accepted] += 1.0


class StepCost:
    """Seconds a decode takes by the tokens in its batch. A single token has its own figure (llama.cpp
    computes it with other kernels); from two tokens on, a straight line fitted to recent steps, older
    ones weighing less, so that it follows the context as it grows (attention per token grows with it)."""

    def __init__(self) -> None:
        self._single: float | None = None
        self._sums = [0.0] * 5  # weighted: n, x, y, xx, xy

    def observe(self, size: int, seconds: float) -> None:
        if size == 1:
            self._single = seconds if self._single is None else self._single + (seconds - self._single) * 0.1
            return
        sums = self._sums
        for i, value in enumerate((1.0, size, seconds, size * size, size * seconds)):
            sums[i] = sums[i] * FORGET + value

    def __call__(self, size: int) -> float:
        n, x, y, xx, xy = self._sums
        line: float | None = None
        if n > 0:
            spread = n * xx - x * x
            slope = (n * xy - x * y) / spread if spread > 1e-12 else 0.0
            line = (y - slope * x) / n + slope * size
        if size == 1:
            return self._single if self._single is not None else (line if line is not None else 1.0)
        if line is None:
            return (self._single or 1.0) * size
        return max(line, self._single or 0.0)


@dataclass(eq=False)
class Guess:
    """A sequence's draft candidate: the tokens and the bucket of the agreement behind them."""

    tokens: list[int]
    bucket: int


class PredictionTrack:
    """Where the answer is in a request's prediction, compared as text (a model often writes other tokens
    for the same text, two newlines as two tokens where the text's own tokens have one). While the answer
    is the prediction's beginning, the guess is the rest of it, tokenized a window at a time."""

    def __init__(self, text: bytes, tokenize: Callable[[bytes], list[int]]) -> None:
        self._text = text
        self._tokenize = tokenize
        self._at = 0  # bytes of the prediction the answer has written
        self.following = bool(text)

    def wrote(self, piece: bytes) -> None:
        if self.following:
            self.following = self._text.startswith(piece, self._at)
            self._at += len(piece)

    def guess(self, limit: int) -> list[int]:
        if not self.following or self._at >= len(self._text) or limit <= 0:
            return []
        end = self._at + limit * WINDOW_BYTES_PER_TOKEN
        tokens = self._tokenize(self._text[self._at:end])
        # A window cut inside the text may cut its last token short.
        return tokens[:limit] if end >= len(self._text) else tokens[:min(limit, len(tokens) - 1)]


class Shadow:
    """A guess not sent, compared with what the sequence then writes, token by token."""

    def __init__(self, guess: Guess) -> None:
        self.guess = guess
        self.right = 0

    def feed(self, token: int) -> bool:
        """The next token written; True once the comparison is over (then recorded by the caller)."""
        tokens = self.guess.tokens
        if tokens[self.right] != token:
            return True
        self.right += 1
        return self.right == len(tokens)


def plan(guesses: list[Guess | None], acceptance: Acceptance, cost: StepCost, room: int) -> list[int]:
    """How many tokens of each guess to send with the next decode of `len(guesses)` generating sequences
    (0: none). The gain of a sequence's j-th drafted token is the chance it is right (with all before it);
    the step's value is (sequences + expected right drafts) / its cost."""
    n = len(guesses)
    gains: list[tuple[float, int]] = []
    for index, guess in enumerate(guesses):
        if guess is None:
            continue
        gains += [(chance, index) for chance in acceptance.chances(guess.bucket, len(guess.tokens))]
    counts = [0] * n
    if not gains:
        return counts
    gains.sort(key=lambda g: -g[0])
    base = n / cost(n)
    best, best_value, expected = 0, base * (1 + MARGIN), float(n)
    for extra, (chance, _) in enumerate(gains[:max(room - n, 0)], start=1):
        expected += chance
        value = expected / cost(n + extra)
        if value > best_value:
            best, best_value = extra, value
    for _, index in gains[:best]:
        counts[index] += 1
    return counts
