"""Continuous batching: every active sequence of one model advances in one shared decode per step.

One llama.cpp context holds one KV sequence per slot. One thread per loaded model runs the loop:
admit waiting sequences into free slots (preferring the slot whose cache shares the longest prefix
with the prompt), gather the next token of each generating sequence plus pending prompt chunks into
one batch, decode once, sample each sequence with its own sampler chain, hand each token to its
request. New sequences join between steps; a sequence whose client left is dropped at the next step.
A free slot keeps its cache, so a follow-up request skips re-evaluating the shared prefix.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp._internals import LlamaContext

from server.engine.sequence import Piece, Request, TokenPieces, Usage, check_context, logprobs_at
from server.engine.sampling import build_sampler, random_seed
from server.engine.text import StopMatcher, Utf8Stream
from server.errors import EngineError

Sink = Callable[[object], None]  # receives Pieces, then None at the end, or an exception


@dataclass(eq=False)
class _Sequence:
    request: Request
    sink: Sink
    stop: threading.Event
    budget: int
    seed: int
    slot: _Slot | None = None
    sampler: object = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    next_token: int | None = None  # sampled, to be evaluated in the next step
    generated: int = 0
    cached: int = 0
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_at: float = 0.0


@dataclass(eq=False)
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV cache holds, in order
    last_used: float = 0.0
    busy: bool = False


class SlotEngine:
    """Runs sequences for one model. `generate` may be called from any number of threads at once."""

    def __init__(self, llm: llama_cpp.Llama, pieces: TokenPieces, *, n_parallel: int, n_ctx: int, n_batch: int,
                 n_ubatch: int, flash_attn: bool | None = None) -> None:
        self._llm = llm
        self._pieces = pieces
        self.n_ctx = n_ctx  # per sequence
        self._n_batch = n_batch
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * n_parallel
        params.n_seq_max = n_parallel
        params.n_batch = n_batch
        # From the alias, not from `llm`: its own (unused) context is the smallest, with a batch to match.
        params.n_ubatch = min(n_batch, n_ubatch)
        params.kv_unified = False  # each sequence gets its own n_ctx worth of cache
        # llama-cpp-python can only force flash attention on or off; like llama-server, we let llama.cpp
        # choose unless the alias says. On CPU it chooses on: measured +9% for one stream, +15% for four.
        params.flash_attn_type = {
            None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        self._ctx = LlamaContext(model=llm._model, params=params, verbose=False)  # noqa: SLF001
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llm.n_vocab()
        self._slots = [_Slot(seq_id=i) for i in range(n_parallel)]
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    # -- requests (any thread) ---------------------------------------------------------------------

    def submit(self, requests: list[Request], stop: threading.Event, sink: Callable[[object], None],
               on_done: Callable[[], None]) -> None:
        """Queue every request as its own sequence. `sink` receives (index, piece) pairs, or an exception,
        on the decode thread; `on_done` runs once every sequence has ended or been dropped (after `stop`
        is set, within a step). Context checks raise here, before anything is queued."""
        budgets = [check_context(len(r.prompt), r.max_tokens, self.n_ctx) for r in requests]
        if self._closing:
            raise EngineError("the model is being unloaded; try again")
        if not requests:
            on_done()
            return
        remaining = [len(requests)]
        lock = threading.Lock()

        def tagged(index: int) -> Sink:
            def put(item: object) -> None:
                if item is None:
                    with lock:
                        remaining[0] -= 1
                        last = remaining[0] == 0
                    if last:
                        on_done()
                else:
                    sink(item if isinstance(item, BaseException) else (index, item))
            return put

        sequences = []
        for index, (request, budget) in enumerate(zip(requests, budgets)):
            seed = request.sampling.seed if request.sampling.seed is not None else random_seed()
            sequences.append(_Sequence(request=request, sink=tagged(index), stop=stop, budget=budget, seed=seed,
                                       stops=StopMatcher(request.stop)))
        with self._wake:
            self._waiting.extend(sequences)
            self._wake.notify()

    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[tuple[int, Piece]]:
        """The same, as a blocking iterator (for callers on a thread of their own)."""
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        done = object()
        self.submit(requests, stop, inbox.put, lambda: inbox.put(done))
        try:
            while (item := inbox.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()  # a consumer that stops early (or an error) ends the other sequences too

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()

    # -- the decode loop (its own thread) ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._waiting and not self._active:
                    self._wake.wait()
                closing = self._closing
            if closing:
                self._fail(self._active + self._take_waiting(), EngineError("the model was unloaded"))
                return
            try:
                self._drop_stopped()
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # a bug must fail the requests it touched, never kill the loop
                self._fail(list(self._active), EngineError(f"generation failed: {exc}"))

    def _take_waiting(self) -> list[_Sequence]:
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        return waiting

    def _admit(self) -> None:
        """Move waiting sequences into free slots. Samplers are built outside the lock: `submit` on the
        event loop never waits for a grammar to compile."""
        while True:
            free = [s for s in self._slots if not s.busy]
            with self._wake:
                if not free or not self._waiting:
                    return
                seq = self._waiting.popleft()
            if seq.stop.is_set():
                seq.sink(None)
                continue
            try:
                seq.sampler = build_sampler(self._llm._model, self._n_vocab, seq.request.sampling, seq.seed)  # noqa: SLF001
            except Exception as exc:
                self._fail([seq], exc)
                continue
            self._place(seq, free)
            self._active.append(seq)

    def _place(self, seq: _Sequence, free: list[_Slot]) -> None:
        """The free slot whose cache shares the longest prefix with the prompt (least recently used on a
        tie); its cache is cut back to that prefix, and the rest of the prompt is pending."""
        prompt = seq.request.prompt
        fresh = seq.request.sampling.seed is not None  # same seed, same output: no cache reuse
        slot = max(free, key=lambda s: (0 if fresh else _shared(s.tokens, prompt), -s.last_used))
        shared = 0 if fresh else max(0, min(_shared(slot.tokens, prompt), len(prompt) - 1))
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

    def _drop_stopped(self) -> None:
        """Sequences whose client left: active ones free their slot, waiting ones never start."""
        with self._wake:
            gone = [s for s in self._waiting if s.stop.is_set()]
            for seq in gone:
                self._waiting.remove(seq)
        gone += [s for s in self._active if s.stop.is_set()]
        for seq in gone:
            self._release(seq)
            seq.sink(None)

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
        status = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status != 0:  # only the sequences of this batch; queued ones are untouched
            self._fail(list(self._active), EngineError(f"llama_decode failed with status {status}"))
            return
        for seq, index in outputs:
            self._advance(seq, index)

    def _advance(self, seq: _Sequence, index: int) -> None:
        """Sample this sequence's next token from its logits at `index` and pass the text on."""
        request = seq.request
        token = llama_cpp.llama_sampler_sample(seq.sampler.sampler, self._ctx.ctx, index)  # type: ignore[attr-defined]
        seq.next_token = None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):  # the end token is not output, nor its logprob
            self._finish(seq, "stop", hit_stop=False)
            return
        logprobs = None
        if request.logprobs is not None:
            logprobs = [logprobs_at(self._ctx.ctx, index, self._n_vocab, self._pieces, token, request.logprobs)]
        seq.generated += 1
        if seq.generated == 1:
            seq.first_at = time.perf_counter()
        assert seq.stops is not None
        text, hit = seq.stops.feed(seq.utf8.feed(self._pieces(token)))
        if text or logprobs:
            seq.sink(Piece(text, logprobs=logprobs))
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
        usage = Usage(len(seq.request.prompt), seq.generated, seq.cached,
                      first_token_seconds=first - seq.submitted, decode_seconds=time.perf_counter() - first)
        seq.sink(Piece(tail, finish_reason=reason, usage=usage))
        seq.sink(None)
        self._release(seq)

    def _release(self, seq: _Sequence) -> None:
        if seq in self._active:
            self._active.remove(seq)
        if seq.slot is not None:
            seq.slot.busy = False
            seq.slot.last_used = time.monotonic()
        if seq.sampler is not None:
            seq.sampler.close()  # type: ignore[attr-defined]
            seq.sampler = None

    def _fail(self, sequences: list[_Sequence], error: BaseException) -> None:
        """End these sequences with `error` (then their end marker, so their requests let go)."""
        for seq in sequences:
            self._release(seq)
            if seq.slot is not None:  # its cache may be half-written: forget it
                llama_cpp.llama_memory_seq_rm(self._mem, seq.slot.seq_id, -1, -1)
                seq.slot.tokens = []
            seq.sink(error)
            seq.sink(None)


def _shared(cached: list[int], prompt: list[int]) -> int:
    n = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        n += 1
    return n
