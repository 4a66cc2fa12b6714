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

import llama_cpp

from server.engine.worker.compat import ReferenceKernels
from server.engine.worker.ngram import NgramIndex
from server.engine.worker.sequences import Sequence
from server.engine.worker.speculation import CALIBRATION_SIZES, Acceptance, Guess, Shadow, StepCost, bucket_of, plan


class Speculator:
    def __init__(self, n_max: int, ngram_size: int, is_end: Callable[[int], bool], max_rows: int) -> None:
        self.n_max = n_max
        self.max_rows = max_rows  # tokens a step with drafts may hold (see compat.ReferenceKernels)
        self.ngram_size = ngram_size
        self._is_end = is_end
        self.acceptance = Acceptance()
        self.cost = StepCost()

    def drafts(self, generating: list[Sequence], room: int) -> list[list[int]]:
        """The tokens to verify after each sequence's next token in this step (mostly none)."""
        guesses = [self._guess(seq) for seq in generating]
        counts = plan(guesses, self.acceptance, self.cost, min(room, self.max_rows))
        out: list[list[int]] = []
        for seq, guess, count in zip(generating, guesses, counts):
            if count:
                out.append(guess.tokens[:count] if guess is not None else [])
                seq.draft_bucket = guess.bucket if guess is not None else 0
            else:
                out.append([])
                if guess is not None and seq.shadow is None:
                    seq.shadow = Shadow(guess)
        return out

    def _guess(self, seq: Sequence) -> Guess | None:
        asked = seq.request.sampling.draft_max
        limit = min(self.n_max if asked is None else min(asked, self.n_max * 4), seq.budget - seq.generated - 1)
        if limit <= 0:
            return None
        assert seq.slot is not None and seq.next_token is not None and seq.sampler is not None
        if seq.ngrams is None:
            seq.ngrams = NgramIndex(self.ngram_size)
        seq.ngrams.sync(seq.slot.tokens, seq.next_token)
        tokens, match = seq.ngrams.lookup(limit)
        end = next((i for i, t in enumerate(tokens) if self._is_end(t)), len(tokens))
        tokens = tokens[:seq.sampler.draftable(tokens[:end])]
        return Guess(tokens, bucket_of(match)) if tokens else None

    def verified(self, seq: Sequence, drafted: int, accepted: int) -> None:
        self.acceptance.record(seq.draft_bucket, drafted, accepted)
        seq.drafted += drafted
        seq.accepted += accepted
        seq.drafts += 1

    def wrote(self, seq: Sequence, token: int) -> None:
        """A token the sequence wrote: compared with its shadow guess, if one is open."""
        shadow = seq.shadow
        if shadow is not None and shadow.feed(token):
            self.acceptance.record(shadow.guess.bucket, len(shadow.guess.tokens), shadow.right)
            seq.shadow = None

    def calibrate(self, ctx: Any, batch: Any, vocab: Any, n_batch: int, kernels: ReferenceKernels | None) -> None:
        """Time a decode of a few batch sizes (at load, on the decode thread, after the warm-up), with the
        kernels decode steps use."""
        if kernels is not None:
            kernels.use(True)
        token = max(llama_cpp.llama_vocab_bos(vocab), 0)
        mem = llama_cpp.llama_get_memory(ctx)
        for size in (s for s in CALIBRATION_SIZES if s <= n_batch):
            for i in range(size):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = token, i, 1, 0
                batch.logits[i] = 1
            batch.n_tokens = size
            start = time.perf_counter()
            status = llama_cpp.llama_decode(ctx, batch)
            seconds = time.perf_counter() - start
            llama_cpp.llama_memory_clear(mem, True)
            if status == 0:
                self.cost.observe(size, seconds)
