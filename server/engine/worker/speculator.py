"""Speculative decoding for one slot engine: drafts from each sequence's history (ngram.py), sized by
speculation.py's plan, verified by the decode loop (slots.py), the outcome learned here.

Verification is sampling: the sequence's own sampler (bias, penalties, top-k/p, temperature, grammar,
seed) picks the token after its next token and after each drafted one, in order, exactly as it would one
step at a time, and a drafted token is kept only while it equals the pick. So the output is the output
without speculation: the same tokens for greedy and for a fixed seed, the same distribution otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from server.engine.worker.compat import ReferenceKernels, throwaway_decode
from server.engine.worker.draft import DraftModel
from server.engine.worker.ngram import NgramIndex
from server.engine.worker.sequences import Sequence
from server.engine.worker.speculation import (
    CALIBRATION_SIZES,
    MODEL_BUCKET,
    PREDICTION_BUCKET,
    Acceptance,
    Guess,
    PredictionTrack,
    Shadow,
    StepCost,
    bucket_of,
    plan,
)

MODEL_MIN_CHANCE = 0.3  # below this chance that its first token is right, the draft model mostly rests
MODEL_RETRY = 16
MAX_PREDICTION_BYTES = 256 * 1024  # of a request's prediction, tokenized on the decode thread


class Speculator:
    """`ngram_size` 0: no prompt lookup; `drafter`: a draft model for sequences the lookup has no good
    guess for."""

    def __init__(self, n_max: int, ngram_size: int, is_end: Callable[[int], bool], max_rows: int,
                 drafter: DraftModel | None = None, tokenize: Callable[[bytes], list[int]] | None = None,
                 text_of: Callable[[int], bytes] | None = None) -> None:
        self.n_max = n_max
        self.max_rows = max_rows  # tokens a step with drafts may hold (see compat.ReferenceKernels)
        self.ngram_size = ngram_size
        self._is_end = is_end
        self._drafter = drafter
        self._tokenize = tokenize  # a request's prediction into tokens
        self._text_of = text_of  # a token's text
        self._idle_model_steps = 0
        self.acceptance = Acceptance()
        self.cost = StepCost()

    def drafts(self, generating: list[Sequence], room: int) -> list[list[int]]:
        """The tokens to verify after each sequence's next token in this step (mostly none)."""
        limits = [self._limit(seq) for seq in generating]
        guesses = [self._predicted(seq, limit) or (self._lookup(seq, limit) if limit > 0 and self.ngram_size else None)
                   for seq, limit in zip(generating, limits)]
        if self._drafter is not None:
            self._ask_model(generating, limits, guesses)
        counts = plan(guesses, self.acceptance, self.cost, min(room, self.max_rows))
        out: list[list[int]] = []
        for seq, guess, count in zip(generating, guesses, counts):
            if count and guess is not None:
                out.append(guess.tokens[:count])
                seq.draft_bucket = guess.bucket
            else:
                out.append([])
                if guess is not None and seq.shadow is None:
                    seq.shadow = Shadow(guess)
        return out

    def _limit(self, seq: Sequence) -> int:
        asked = seq.request.sampling.draft_max
        return min(self.n_max if asked is None else min(asked, self.n_max * 4), seq.budget - seq.generated - 1)

    def _predicted(self, seq: Sequence, limit: int) -> Guess | None:
        """The rest of the request's prediction while the answer follows it."""
        track = seq.prediction
        return self._usable(seq, track.guess(limit), PREDICTION_BUCKET) if track is not None else None

    def _lookup(self, seq: Sequence, limit: int) -> Guess | None:
        assert seq.slot is not None and seq.next_token is not None
        if seq.ngrams is None:
            text = seq.request.sampling.prediction
            predicted = self._tokenize(text.encode()[:MAX_PREDICTION_BYTES]) if text and self._tokenize else None
            seq.ngrams = NgramIndex(self.ngram_size, predicted)
        seq.ngrams.sync(seq.slot.tokens, seq.next_token)
        tokens, match = seq.ngrams.lookup(limit)
        return self._usable(seq, tokens, bucket_of(match))

    def _usable(self, seq: Sequence, tokens: list[int], bucket: int) -> Guess | None:
        """The guess cut before an end token and where the sequence's grammar would refuse it."""
        assert seq.sampler is not None
        end = next((i for i, t in enumerate(tokens) if self._is_end(t)), len(tokens))
        tokens = tokens[:seq.sampler.draftable(tokens[:end])]
        return Guess(tokens, bucket) if tokens else None

    def _ask_model(self, generating: list[Sequence], limits: list[int], guesses: list[Guess | None]) -> None:
        """The draft model's guesses where the lookup has none worth more than an even chance. While its
        guesses are measured not to pay, it drafts only every MODEL_RETRY-th step (its guesses, sent or
        compared as shadows, keep being learned from)."""
        asks = [i for i, guess in enumerate(guesses) if limits[i] > 0
                and (guess is None or self.acceptance.chances(guess.bucket, 1)[0] < 0.5)]
        if not asks:
            return
        if self.acceptance.chances(MODEL_BUCKET, 1)[0] < MODEL_MIN_CHANCE:
            self._idle_model_steps += 1
            if self._idle_model_steps < MODEL_RETRY:
                return
        self._idle_model_steps = 0
        assert self._drafter is not None
        wants = []
        for i in asks:
            seq = generating[i]
            assert seq.slot is not None and seq.next_token is not None
            wants.append((seq.slot.seq_id, [*seq.slot.tokens, seq.next_token], limits[i]))
        for i, tokens in zip(asks, self._drafter.propose(wants)):
            guesses[i] = self._usable(generating[i], tokens, MODEL_BUCKET) or guesses[i]

    def verified(self, seq: Sequence, drafted: int, accepted: int) -> None:
        self.acceptance.record(seq.draft_bucket, drafted, accepted)

    def wrote(self, seq: Sequence, token: int) -> None:
        """A token the sequence wrote: compared with its shadow guess, if one is open, and followed in
        its prediction, if it has one."""
        text = seq.request.sampling.prediction
        if text and seq.prediction is None and self._tokenize is not None and self._text_of is not None:
            seq.prediction = PredictionTrack(text.encode()[:MAX_PREDICTION_BYTES], self._tokenize)
        if seq.prediction is not None and self._text_of is not None:
            seq.prediction.wrote(self._text_of(token))
        shadow = seq.shadow
        if shadow is not None and shadow.feed(token):
            self.acceptance.record(shadow.guess.bucket, len(shadow.guess.tokens), shadow.right)
            seq.shadow = None

    def calibrate(self, ctx: Any, batch: Any, vocab: Any, n_batch: int, kernels: ReferenceKernels | None) -> None:
        """Time a decode of a few batch sizes (at load, on the decode thread, after the warm-up), with the
        kernels decode steps use."""
        if kernels is not None:
            kernels.use(True)
        for size in (s for s in CALIBRATION_SIZES if s <= n_batch):
            start = time.perf_counter()  # the cache's emptying is timed too: microseconds
            if throwaway_decode(ctx, batch, vocab, size, all_logits=True) == 0:
                self.cost.observe(size, time.perf_counter() - start)
