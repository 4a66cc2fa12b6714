"""Continuous batching: every active sequence of one model advances in one shared decode per step.

One llama.cpp context holds one KV sequence per slot. One thread runs the loop: admit waiting sequences
into free slots (requests take turns; where a prompt goes: placement.py), gather the next token of each
generating sequence plus pending prompt chunks into one batch, decode once, sample each sequence with its
own sampler. What a step produced (pieces, requests that ended or failed) leaves in one `emit` call. New
sequences join between steps; a cancelled request's sequences are dropped at the next step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import llama_cpp

from server.engine.text import StopMatcher
from server.engine.types import Piece, Request
from server.engine.worker.compat import FLASH_ATTN, LlamaContext, ReferenceKernels, Threadpools, model_of, warm_up
from server.engine.worker.compute_lock import ComputeLock
from server.engine.worker.constraint import ConstraintFailed
from server.engine.worker.grammars import GrammarCache
from server.engine.worker.placement import ABORTED, AbandonedBatch, SlotCache
from server.engine.worker.prompt_store import PromptStore
from server.engine.worker.sampling import RANDOM_SEED, CandidateBuffers, build_sampler
from server.engine.worker.sequences import Job, Sequence, fill_step, next_in_turn, take_all
from server.engine.worker.speculator import Speculator
from server.engine.worker.tokens import TokenPieces, logprobs_at
from server.errors import EngineError, ModelUnloadedError

# One step's output: (request id, sequence index, piece)s, ids of requests that ended, (id, error)s, and
# the KV cells the busy slots hold after it (the HTTP process exports it as the KV-cache usage gauge).
Emit = Callable[[list[tuple[int, int, Piece]], list[int], list[tuple[int, BaseException]], int], None]


class SlotEngine:
    """Runs sequences for one model. `submit` and `cancel` may be called from any thread."""

    def __init__(self, llm: llama_cpp.Llama, pieces: TokenPieces, emit: Emit, *, n_parallel: int, n_ctx: int,
                 n_batch: int, n_ubatch: int, flash_attn: bool | None = None, poll: int = 0,
                 grammars: GrammarCache, prompt_cache_bytes: int = 0, compute: ComputeLock | None = None,
                 store: PromptStore | None = None, speculator: Speculator | None = None) -> None:
        self._llm = llm
        self._pieces = pieces
        self._emit = emit
        self.n_ctx = n_ctx  # per sequence
        self._n_batch = n_batch
        self._compute = compute or ComputeLock(None, 0)  # other workers' decodes take turns with ours
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * n_parallel
        params.n_seq_max = n_parallel
        params.n_batch = n_batch
        # From the alias, not from `llm`: its own (unused) context is the smallest, with a batch to match.
        params.n_ubatch = min(n_batch, n_ubatch)
        # One cache for every slot, as llama-server's default: a prefix is shared between slots by reference
        # (seq_cp), and decoding stays fast after a burst of fresh prompts (docs/benchmarks.md, "Engine choices").
        params.kv_unified = True
        # Flash attention: llama.cpp chooses unless the alias says, as llama-server lets it (on, on CPU).
        params.flash_attn_type = FLASH_ATTN[flash_attn]
        self._ctx = LlamaContext(model=model_of(llm), params=params, verbose=False)
        self._threads = Threadpools(self._ctx.ctx, params.n_threads, params.n_threads_batch, poll)
        self._cache = SlotCache(self._ctx.ctx, n_parallel, prompt_cache_bytes, store)
        self._abandoned = AbandonedBatch(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llm.n_vocab()
        self._grammars = grammars
        self._special_pieces = TokenPieces(llm, special=True)
        self._candidates = CandidateBuffers(self._n_vocab)
        self._waiting: deque[Job] = deque()  # jobs with sequences not yet admitted, in turn order
        self._jobs: dict[int, Job] = {}
        self._active: list[Sequence] = []
        self._wake = threading.Condition()
        self._closing, self._warm = False, threading.Event()
        self._out_pieces: list[tuple[int, int, Piece]] = []
        self._out_ended: list[int] = []
        self._out_failed: list[tuple[int, BaseException]] = []
        self._cells_sent = 0  # the cells in use as last emitted
        self._spec = speculator
        # With speculation, decode steps compute alike whatever their size (compat.ReferenceKernels).
        self._kernels = ReferenceKernels(self._ctx.ctx) if speculator is not None else None
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()
        self._warm.wait()  # loaded once the decode thread has warmed up (compat.warm_up)

    # -- requests (any thread) ---------------------------------------------------------------------

    def submit(self, job_id: int, requests: list[Request], prompts: list[list[int]], budgets: list[int]) -> None:
        """Queue every request as its own sequence (already checked: prompts tokenized, budgets known)."""
        job = Job(id=job_id, remaining=len(requests))
        for index, (request, prompt, budget) in enumerate(zip(requests, prompts, budgets)):
            seed = request.sampling.seed if request.sampling.seed is not None else RANDOM_SEED
            job.waiting.append(Sequence(job=job, index=index, request=request, prompt=prompt, budget=budget,
                                         seed=seed, stops=StopMatcher(request.stop)))
        with self._wake:
            if self._closing:
                raise EngineError("the model is being unloaded; try again")
            self._jobs[job_id] = job
            self._waiting.append(job)
            self._wake.notify()

    def cancel(self, job_id: int) -> None:
        """The client left: its sequences are dropped at the next step (an unknown id is already done)."""
        with self._wake:
            job = self._jobs.get(job_id)
            if job is not None:
                job.stopped = True
                self._wake.notify()

    def slot_states(self) -> list[dict[str, int | bool]]:  # read from another thread: a snapshot
        return self._cache.states(list(self._active))

    def close(self, save_until: float | None = None) -> None:  # save_until: caches to the prompt store first
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        if save_until is not None:
            self._cache.persist(save_until)
        llama_cpp.llama_batch_free(self._batch)
        self._threads.close()
        self._ctx.close()

    # -- the decode loop (its own thread) ---------------------------------------------------------
    def _run(self) -> None:
        try:  # on this thread (compat.warm_up); then the speculator times a few batch sizes
            warm_up(self._ctx.ctx, self._batch, self._vocab, self._n_batch)
            if self._spec is not None:
                self._spec.calibrate(self._ctx.ctx, self._batch, self._vocab, self._n_batch, self._kernels)
        finally:
            self._warm.set()  # whatever happened: the load must not wait forever
        while True:
            with self._wake:
                while not self._closing and not self._waiting and not self._active:
                    self._wake.wait()
                closing = self._closing
            if closing:
                self._fail(self._active + self._take_waiting(), ModelUnloadedError("the model was unloaded; try again"))
                self._flush()
                return
            try:
                self._drop_stopped()
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # a bug must fail the requests it touched, never kill the loop
                self._fail(list(self._active), EngineError(f"generation failed: {exc}"))
            self._flush()
            if not self._active:
                self._park()

    def _park(self) -> None:
        """Out of work: caches to host memory now (SlotCache.park), unless a request waits (then, as placed)."""
        with self._wake:
            if self._waiting or self._closing:
                return
        self._cache.park()

    @property
    def cells_total(self) -> int:  # KV cells allocated: n_ctx for each slot, in one cache
        return self.n_ctx * len(self._cache.slots)

    def _flush(self) -> None:
        cells = self._cache.cells_in_use()
        # A step with no output still reports a changed cell count (a prompt chunk evaluated).
        if self._out_pieces or self._out_ended or self._out_failed or cells != self._cells_sent:
            pieces, ended, failed = self._out_pieces, self._out_ended, self._out_failed
            self._out_pieces, self._out_ended, self._out_failed = [], [], []
            self._cells_sent = cells
            self._emit(pieces, ended, failed, cells)

    def _take_waiting(self) -> list[Sequence]:
        with self._wake:
            return take_all(self._waiting)

    def _next_waiting(self) -> Sequence | None:
        with self._wake:
            return next_in_turn(self._waiting)

    def _admit(self) -> None:
        """Move waiting sequences into free slots. Samplers are built outside the lock: `submit` never
        waits for a grammar to compile. A sequence whose prompt shares a longer prefix with one being
        evaluated right now than with any cache waits for it (four requests of one prompt arriving
        together evaluate it once, not four times)."""
        held: list[Sequence] = []
        idle = not self._active
        if idle:
            with self._wake:
                nxt = next((job.waiting[0] for job in self._waiting if job.waiting), None)
            self._cache.settle(nxt.prompt if nxt is not None else None)
        while self._cache.has_free():
            seq = self._next_waiting()
            if seq is None:
                break
            if seq.job.stopped:
                self._end(seq)
                continue
            if self._cache.worth_waiting(seq, self._active):
                held.append(seq)
                continue
            try:
                seq.sampler = build_sampler(self._grammars, self._candidates, seq.request.sampling, seq.seed,
                                            self._special_pieces)
                # Out of the waiting queue and not yet active: a failure here must fail its request, or
                # nobody would ever answer it.
                self._cache.place(seq)
            except Exception as exc:
                self._fail([seq], exc)
                continue
            # The first sequence on a settled cache has it to itself, in order; a second one shares it.
            self._cache.ordered = seq.slot if idle and not self._active and self._cache.kept.enabled else None
            self._active.append(seq)
        if held:
            with self._wake:
                for seq in reversed(held):  # back at the front, in their order
                    seq.job.waiting.appendleft(seq)
                    if seq.job not in self._waiting:
                        self._waiting.appendleft(seq.job)

    def _drop_stopped(self) -> None:
        """Sequences of cancelled or failed requests: active ones free their slot, waiting ones never start."""
        with self._wake:
            stopped = [job for job in self._waiting if job.stopped]
            for job in stopped:
                self._waiting.remove(job)
            gone = [seq for job in stopped for seq in job.waiting]
            for job in stopped:
                job.waiting.clear()
        gone += [s for s in self._active if s.job.stopped]
        for seq in gone:
            self._release(seq)
            self._end(seq)

    def _end(self, seq: Sequence) -> None:
        """This sequence is over; its request ends with its last sequence."""
        job = seq.job
        job.remaining -= 1
        if job.remaining == 0:
            with self._wake:
                self._jobs.pop(job.id, None)
            self._out_ended.append(job.id)

    def _step(self) -> None:
        """One decode for every active sequence: a token each, or a chunk of a pending prompt."""
        prefill = any(seq.next_token is None for seq in self._active)  # then no drafts: a slow step anyway
        spec = self._spec
        drafts = spec.drafts(self._active, self._n_batch) if spec is not None and not prefill else None
        n, outputs, in_batch = fill_step(self._batch, self._active, drafts, self._n_batch)
        if len(in_batch) < len(self._active):  # the batch is full: who did not fit goes first next step
            self._active = self._active[len(in_batch):] + in_batch
        if self._kernels is not None:
            self._kernels.fit(n)
        # A prompt chunk takes up to seconds: a client that leaves meanwhile should not hold the model for
        # it. llama.cpp asks the callback between graph nodes (a Python call each, so only for prefill).
        self._abandoned.watch(in_batch if prefill else None)
        with self._compute:
            started = time.perf_counter()
            status = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
            if spec is not None and not prefill and status == 0:
                spec.cost.observe(n, time.perf_counter() - started)
        if status == ABORTED:  # every sequence of the batch was cancelled: their half-written cells go
            for seq in in_batch:
                assert seq.slot is not None
                self._cache.forget(seq.slot)
                self._release(seq)
                self._end(seq)
            return
        if status != 0:  # only the sequences of this batch; queued ones are untouched
            self._fail(list(self._active), EngineError(f"llama_decode failed with status {status}"))
            return
        now = time.perf_counter()  # one clock read a step, shared by every sequence's token
        for seq, index, draft in outputs:
            # Picks after the next token and each drafted one while they agree; counted first (a finish reports).
            right, seq.drafted, seq.drafts = 0, seq.drafted + len(draft), seq.drafts + (len(draft) > 0)
            while self._advance(seq, index + right, now) and right < len(draft) and seq.next_token == draft[right]:
                right, seq.accepted = right + 1, seq.accepted + 1
            if draft and spec is not None and seq.slot is not None:  # wrong drafted tokens leave the cache
                spec.verified(seq, len(draft), right)
                self._cache.truncate(seq.slot, len(seq.slot.tokens) - len(draft) + right)

    def _advance(self, seq: Sequence, index: int, now: float) -> bool:
        """Sample this sequence's next token from its logits at `index` and pass the text on; whether the
        sequence goes on (its next token in `next_token`)."""
        request = seq.request
        assert seq.sampler is not None
        try:
            token = seq.sampler.sample(self._ctx.ctx, index)
        except ConstraintFailed as exc:  # this sequence's grammar can go no further; the others go on
            self._fail([seq], EngineError(f"the output constraint failed: {exc}"))
            return False
        seq.next_token = None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):  # the end token is not output, nor its logprob
            self._finish(seq, "stop", hit_stop=False)
            return False
        if self._spec is not None:
            self._spec.wrote(seq, token)
        logprobs = None
        if request.logprobs is not None:
            logprobs = [logprobs_at(self._ctx.ctx, index, self._n_vocab, self._pieces, token, request.logprobs)]
        seq.generated += 1
        if seq.generated == 1:
            seq.first_at = now
        else:
            seq.gaps.append(now - seq.last_at)
        seq.last_at = now
        assert seq.stops is not None
        text, hit = seq.stops.feed(seq.utf8.feed(self._pieces(token)))
        if text or logprobs:
            self._out_pieces.append((seq.job.id, seq.index, Piece(text, logprobs=logprobs)))
        if hit:
            self._finish(seq, "stop", hit_stop=True)
        elif seq.generated >= seq.budget:
            self._finish(seq, "length", hit_stop=False)
        else:
            seq.next_token = token
            return True
        return False

    def _finish(self, seq: Sequence, reason: str, *, hit_stop: bool) -> None:
        assert seq.stops is not None
        tail = "" if hit_stop else seq.stops.feed(seq.utf8.flush())[0] + seq.stops.flush()
        stop = seq.stops.matched if hit_stop else None
        piece = Piece(tail, finish_reason=reason, usage=seq.usage(), stop=stop)
        self._out_pieces.append((seq.job.id, seq.index, piece))
        self._release(seq)
        self._end(seq)

    def _release(self, seq: Sequence) -> None:
        if seq in self._active:
            self._active.remove(seq)
        if seq.slot is not None:
            seq.slot.busy = False
            seq.slot.last_used = time.monotonic()
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def _fail(self, sequences: list[Sequence], error: BaseException) -> None:
        """End these sequences, and fail their requests with `error` (their other sequences are dropped)."""
        for seq in sequences:
            self._release(seq)
            if seq.slot is not None:
                self._cache.forget(seq.slot)
            job = seq.job
            if not job.failed:
                job.failed = job.stopped = True
                self._out_failed.append((job.id, error))
            self._end(seq)
