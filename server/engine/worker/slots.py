"""Continuous batching: every active sequence of one model advances in one shared decode per step.

One llama.cpp context holds one KV sequence per slot. One thread runs the loop: admit waiting
sequences into free slots (taking turns between requests, and preferring the slot whose cache shares
the longest prefix with the prompt), gather the next token of each generating sequence plus pending
prompt chunks into one batch, decode once, sample each sequence with its own sampler chain. What a
step produced (every sequence's pieces, the requests that ended or failed) leaves in one `emit` call.
New sequences join between steps; a cancelled request's sequences are dropped at the next step. A free
slot keeps its cache, so a follow-up request skips re-evaluating the shared prefix (whatever its seed).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp

from server.engine.text import StopMatcher, Utf8Stream
from server.engine.types import Piece, Request, Usage
from server.engine.worker.compat import FLASH_ATTN, LlamaContext, Threadpools, model_of
from server.engine.worker.compute_lock import ComputeLock
from server.engine.worker.constraint import ConstraintFailed
from server.engine.worker.grammars import GrammarCache
from server.engine.worker.prompt_cache import MIN_TOKENS, PromptCache, shared_prefix
from server.engine.worker.sampling import RANDOM_SEED, CandidateBuffers, TokenSampler, build_sampler
from server.engine.worker.tokens import TokenPieces, logprobs_at
from server.errors import EngineError, ModelUnloadedError

# A sequence whose prompt shares at least this many more tokens with a prompt being evaluated right now
# than with any cache waits a step for that evaluation to end, then shares its cells (prefill costs
# about 5 ms a token on 2 CPU cores with SmolLM2-135M; a step about 30 ms).
MIN_HOLD_TOKENS = 16

# One step's output: (request id, sequence index, piece)s, ids of requests that ended, (id, error)s, and
# the KV cells the busy slots hold after it (the HTTP process exports it as the KV-cache usage gauge).
Emit = Callable[[list[tuple[int, int, Piece]], list[int], list[tuple[int, BaseException]], int], None]


@dataclass(eq=False)
class _Job:
    """One request's sequences. `stopped`: cancelled or failed, its sequences leave at the next step."""

    id: int
    remaining: int
    waiting: deque[_Sequence] = field(default_factory=deque)
    stopped: bool = False
    failed: bool = False


@dataclass(eq=False)
class _Sequence:
    job: _Job
    index: int
    request: Request
    prompt: list[int]
    budget: int
    seed: int
    slot: _Slot | None = None
    sampler: TokenSampler | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    next_token: int | None = None  # sampled, to be evaluated in the next step
    generated: int = 0
    cached: int = 0
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_at: float = 0.0
    last_at: float = 0.0
    gaps: list[float] = field(default_factory=list)  # between consecutive tokens, for the latency histogram


@dataclass(eq=False)
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV cache holds, in order
    last_used: float = 0.0
    busy: bool = False


class SlotEngine:
    """Runs sequences for one model. `submit` and `cancel` may be called from any thread."""

    def __init__(self, llm: llama_cpp.Llama, pieces: TokenPieces, emit: Emit, *, n_parallel: int, n_ctx: int,
                 n_batch: int, n_ubatch: int, flash_attn: bool | None = None, poll: int = 0,
                 grammars: GrammarCache, prompt_cache_bytes: int = 0, compute: ComputeLock | None = None) -> None:
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
        # One cache for every slot, as llama-server's default: a prefix is shared between slots by
        # reference (seq_cp), and decoding stays as fast after a burst of fresh prompts as before it.
        # With a cache stream per slot, measured on 2 cores: after 16 unique-prompt requests on 4 slots,
        # a decode step of 4 sequences took 47-49 ms instead of 30-32 for a minute or more (in-process,
        # caches cleared or not); with one cache, 34 ms. Each slot still gets at most n_ctx tokens.
        params.kv_unified = True
        # llama-cpp-python can only force flash attention on or off; like llama-server, we let llama.cpp
        # choose unless the alias says. On CPU it chooses on: measured +9% for one stream, +15% for four.
        params.flash_attn_type = FLASH_ATTN[flash_attn]
        self._ctx = LlamaContext(model=model_of(llm), params=params, verbose=False)
        self._threads = Threadpools(self._ctx.ctx, params.n_threads, params.n_threads_batch, poll)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._kept = PromptCache(self._ctx.ctx, prompt_cache_bytes)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llm.n_vocab()
        self._grammars = grammars
        self._special_pieces = TokenPieces(llm, special=True)
        self._candidates = CandidateBuffers(self._n_vocab)
        self._slots = [_Slot(seq_id=i) for i in range(n_parallel)]
        self._waiting: deque[_Job] = deque()  # jobs with sequences not yet admitted, in turn order
        self._jobs: dict[int, _Job] = {}
        self._active: list[_Sequence] = []
        self._wake = threading.Condition()
        self._closing = False
        self._out_pieces: list[tuple[int, int, Piece]] = []
        self._out_ended: list[int] = []
        self._out_failed: list[tuple[int, BaseException]] = []
        self._cells_sent = 0  # cells_in_use() as last emitted
        # The one slot holding cells, its cells in position order from cell 0 (see `_settle`); None: unknown.
        self._ordered: _Slot | None = None
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    # -- requests (any thread) ---------------------------------------------------------------------

    def submit(self, job_id: int, requests: list[Request], prompts: list[list[int]], budgets: list[int]) -> None:
        """Queue every request as its own sequence (already checked: prompts tokenized, budgets known)."""
        job = _Job(id=job_id, remaining=len(requests))
        for index, (request, prompt, budget) in enumerate(zip(requests, prompts, budgets)):
            seed = request.sampling.seed if request.sampling.seed is not None else RANDOM_SEED
            job.waiting.append(_Sequence(job=job, index=index, request=request, prompt=prompt, budget=budget,
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

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        self._threads.close()
        self._ctx.close()

    # -- the decode loop (its own thread) ---------------------------------------------------------

    def _run(self) -> None:
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

    @property
    def cells_total(self) -> int:
        """KV cells allocated: n_ctx for each slot, in one cache."""
        return self.n_ctx * len(self._slots)

    def cells_in_use(self) -> int:
        """KV cells held by busy slots: the prompt evaluated so far (a reused prefix included) and the
        tokens generated. A free slot's cache is kept for reuse but counts as free, as vLLM counts a
        cached block nobody references: any new sequence may take it over."""
        return sum(len(slot.tokens) for slot in self._slots if slot.busy)

    def _flush(self) -> None:
        cells = self.cells_in_use()
        # A step with no output still reports a changed cell count (a prompt chunk evaluated).
        if self._out_pieces or self._out_ended or self._out_failed or cells != self._cells_sent:
            pieces, ended, failed = self._out_pieces, self._out_ended, self._out_failed
            self._out_pieces, self._out_ended, self._out_failed = [], [], []
            self._cells_sent = cells
            self._emit(pieces, ended, failed, cells)

    def _take_waiting(self) -> list[_Sequence]:
        with self._wake:
            waiting = [seq for job in self._waiting for seq in job.waiting]
            for job in self._waiting:
                job.waiting.clear()
            self._waiting.clear()
        return waiting

    def _next_waiting(self) -> _Sequence | None:
        """Requests take turns: one sequence from the front request, which then goes to the back. A
        request of many sequences (prompts x n) cannot hold a small one back for its whole length."""
        with self._wake:
            while self._waiting:
                job = self._waiting.popleft()
                if not job.waiting:
                    continue
                seq = job.waiting.popleft()
                if job.waiting:
                    self._waiting.append(job)
                return seq
        return None

    def _admit(self) -> None:
        """Move waiting sequences into free slots. Samplers are built outside the lock: `submit` never
        waits for a grammar to compile. A sequence whose prompt shares a longer prefix with one being
        evaluated right now than with any cache waits for it (four requests of one prompt arriving
        together evaluate it once, not four times)."""
        held: list[_Sequence] = []
        idle = not self._active
        if idle:
            self._settle()
        while any(not s.busy for s in self._slots):
            seq = self._next_waiting()
            if seq is None:
                break
            if seq.job.stopped:
                self._end(seq)
                continue
            if self._worth_waiting(seq):
                held.append(seq)
                continue
            try:
                seq.sampler = build_sampler(self._grammars, self._candidates, seq.request.sampling, seq.seed,
                                            self._special_pieces)
                # Out of the waiting queue and not yet active: a failure here must fail its request, or
                # nobody would ever answer it.
                self._place(seq, [s for s in self._slots if not s.busy])
            except Exception as exc:
                self._fail([seq], exc)
                continue
            # The first sequence on a settled cache has it to itself, in order; a second one shares it.
            self._ordered = seq.slot if idle and not self._active and self._kept.enabled else None
            self._active.append(seq)
        if held:
            with self._wake:
                for seq in reversed(held):  # back at the front, in their order
                    seq.job.waiting.appendleft(seq)
                    if seq.job not in self._waiting:
                        self._waiting.appendleft(seq.job)

    def _settle(self) -> None:
        """A sequence is about to start on an idle engine: every slot's cache moves to host memory (the
        prompt cache) and the KV cache is emptied, so that the new sequence's cells start at cell 0 and
        follow each other in position order. Two reasons, both measured on 2 cores:
        - speed: attention covers every cell up to the highest one in use (rounded up to 256), whoever
          holds it; four kept slots of about 100 tokens each cost a lone stream 0.3-0.5 ms a token;
        - the same answer for the same request: llama.cpp's CPU attention sums a sequence's cells in
          cell order, in half precision, so its output moves with where its cells lie (docs/benchmarks.md,
          "Output that depends on where a sequence's cells lie").
        llama-server does the first by default (`--cache-idle-slots`). A prompt that comes back is copied
        in again (about 1 ms per 100 tokens of SmolLM2-135M). Nothing moves when the one slot in the cache
        is already in order from cell 0 and the next prompt continues it (a conversation's next turn, a
        repeated prompt), nor without a prompt cache (`prompt_cache_mib: 0`). Most of the copying is
        done earlier, by `_park`, when the engine runs out of work."""
        with self._wake:
            nxt = next((job.waiting[0] for job in self._waiting if job.waiting), None)
        holders = [s for s in self._slots if s.tokens]
        if holders == [self._ordered] and nxt is not None and shared_prefix(holders[0].tokens, nxt.prompt) > 0:
            return  # it is chosen again (the only slot sharing anything), its cells stay where they are
        self._empty_cache()

    def _park(self) -> None:
        """The engine ran out of work: `_settle`'s copies are made now, while no request waits for them
        (each one is 1-4 ms per 100 tokens of SmolLM2-135M on 2 cores, most of it the kernel handing out
        fresh pages; four of them had delayed the first tokens of four requests arriving together by
        10-14 ms). The one slot that ran alone since the last settle stays where it is, in order: the
        next turn of its conversation continues it for free."""
        with self._wake:
            if self._waiting or self._closing:
                return  # `_settle` does it as the waiting request is placed
        if self._ordered is None:
            self._empty_cache()

    def _empty_cache(self) -> None:
        """Every slot's cache to host memory, and the KV cache emptied (without a prompt cache: nothing)."""
        holders = [s for s in self._slots if s.tokens]
        if not self._kept.enabled or not holders:
            return
        for slot in holders:
            self._kept.save(slot.seq_id, slot.tokens)
            slot.tokens = []
        # Cells only: clearing the buffers too (True) zero-fills the whole cache, 15 ms for 8192 cells here.
        llama_cpp.llama_memory_clear(self._mem, False)
        self._ordered = None

    def _worth_waiting(self, seq: _Sequence) -> bool:
        cached = max(shared_prefix(s.tokens, seq.prompt) for s in self._slots)
        return any(other.pending and shared_prefix(other.prompt, seq.prompt) >= cached + MIN_HOLD_TOKENS
                   for other in self._active)

    def _place(self, seq: _Sequence, free: list[_Slot]) -> None:
        """The free slot whose cache shares the longest prefix with the prompt (least recently used on a
        tie); its cache is cut back to that prefix, and the rest of the prompt is pending. When another
        slot, free or busy, holds a longer prefix, its cells are shared first (`_share`); when the prompt cache in
        host memory holds a longer one still, it is copied in. A seed does not change
        this: the cached prefix holds the same keys and values a fresh evaluation would."""
        prompt = seq.prompt
        slot = max(free, key=lambda s: (shared_prefix(s.tokens, prompt), -s.last_used))
        own = shared_prefix(slot.tokens, prompt)
        donor = max(self._slots, key=lambda s: shared_prefix(s.tokens, prompt))
        from_donor = shared_prefix(donor.tokens, prompt) if donor is not slot else 0
        kept, from_kept = self._kept.best(prompt)
        # What the slot holds past this prompt is about to go: kept in host memory, unless the slot holds
        # the whole prompt already, so that what goes is an earlier answer to this same prompt (a
        # regenerated answer, a repeated query). Copying it out costs 2-3 ms for 100 tokens, before the
        # first token, and a conversation built on a discarded answer is the rare case.
        if len(slot.tokens) - own >= MIN_TOKENS and own < len(prompt) - 1:
            self._kept.save(slot.seq_id, slot.tokens, keep=kept)
        if from_kept >= max(own, from_donor) + MIN_TOKENS:
            if self._kept.restore(kept, slot.seq_id):
                slot.tokens = list(kept)
            else:  # no room for it in one piece: evaluate the prompt instead
                llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                slot.tokens = []
        elif from_donor > own:
            self._share(donor, slot, from_donor)
        shared = max(0, min(shared_prefix(slot.tokens, prompt), len(prompt) - 1))
        # A cache that cannot be cut (recurrent memory) or no longer starts at 0 (sliding window) is
        # not reused: the whole sequence is cleared and the prompt evaluated again.
        if not llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, shared, -1) or (
            shared and llama_cpp.llama_memory_seq_pos_min(self._mem, slot.seq_id) > 0
        ):
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            shared = 0
        slot.tokens = slot.tokens[:shared]
        slot.busy = True
        seq.slot, seq.cached, seq.pending = slot, shared, list(prompt[shared:])

    def _share(self, donor: _Slot, slot: _Slot, n: int) -> None:
        """`slot`'s cache becomes the first `n` tokens of `donor`'s, by reference: the cells then belong
        to both sequences (one cache for all slots), and each goes on writing its own after them."""
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, 0, n)
        slot.tokens = donor.tokens[:n]

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

    def _end(self, seq: _Sequence) -> None:
        """This sequence is over; its request ends with its last sequence."""
        job = seq.job
        job.remaining -= 1
        if job.remaining == 0:
            with self._wake:
                self._jobs.pop(job.id, None)
            self._out_ended.append(job.id)

    def _step(self) -> None:
        """One decode for every active sequence: a token each, or a chunk of a pending prompt."""
        batch, room = self._batch, self._n_batch
        outputs: list[tuple[_Sequence, int]] = []
        n = 0
        for position, seq in enumerate(self._active):
            if room == 0:
                # The batch is full: whoever did not fit goes first next step, so nobody starves.
                self._active = self._active[position:] + self._active[:position]
                break
            slot = seq.slot
            assert slot is not None
            if seq.next_token is not None:
                chunk, last = [seq.next_token], True
            else:
                chunk = seq.pending[:room]
                seq.pending = seq.pending[len(chunk):]
                last = not seq.pending
            pos = len(slot.tokens)
            for offset, token in enumerate(chunk):
                batch.token[n] = token
                batch.pos[n] = pos + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq_id
                batch.logits[n] = 0
                n += 1
            slot.tokens.extend(chunk)
            room -= len(chunk)
            if last:
                batch.logits[n - 1] = 1
                outputs.append((seq, n - 1))
        batch.n_tokens = n
        with self._compute:
            status = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status != 0:  # only the sequences of this batch; queued ones are untouched
            self._fail(list(self._active), EngineError(f"llama_decode failed with status {status}"))
            return
        now = time.perf_counter()  # one clock read a step, shared by every sequence's token
        for seq, index in outputs:
            self._advance(seq, index, now)

    def _advance(self, seq: _Sequence, index: int, now: float) -> None:
        """Sample this sequence's next token from its logits at `index` and pass the text on."""
        request = seq.request
        assert seq.sampler is not None
        try:
            token = seq.sampler.sample(self._ctx.ctx, index)
        except ConstraintFailed as exc:  # this sequence's grammar can go no further; the others go on
            self._fail([seq], EngineError(f"the output constraint failed: {exc}"))
            return
        seq.next_token = None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):  # the end token is not output, nor its logprob
            self._finish(seq, "stop", hit_stop=False)
            return
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

    def _finish(self, seq: _Sequence, reason: str, *, hit_stop: bool) -> None:
        assert seq.stops is not None
        tail = "" if hit_stop else seq.stops.feed(seq.utf8.flush())[0] + seq.stops.flush()
        first = seq.first_at or time.perf_counter()
        usage = Usage(len(seq.prompt), seq.generated, seq.cached, first_token_seconds=first - seq.submitted,
                      decode_seconds=(seq.last_at or first) - first, gaps=tuple(seq.gaps))
        stop = seq.stops.matched if hit_stop else None
        self._out_pieces.append((seq.job.id, seq.index, Piece(tail, finish_reason=reason, usage=usage, stop=stop)))
        self._release(seq)
        self._end(seq)

    def _release(self, seq: _Sequence) -> None:
        if seq in self._active:
            self._active.remove(seq)
        if seq.slot is not None:
            seq.slot.busy = False
            seq.slot.last_used = time.monotonic()
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def _fail(self, sequences: list[_Sequence], error: BaseException) -> None:
        """End these sequences, and fail their requests with `error` (their other sequences are dropped)."""
        for seq in sequences:
            self._release(seq)
            if seq.slot is not None:  # its cache may be half-written: forget it
                llama_cpp.llama_memory_seq_rm(self._mem, seq.slot.seq_id, -1, -1)
                seq.slot.tokens = []
            job = seq.job
            if not job.failed:
                job.failed = job.stopped = True
                self._out_failed.append((job.id, error))
            self._end(seq)
