"""Where a sequence's prompt goes, and what the KV cache keeps between requests: the slot whose cache shares
the longest prefix with the prompt (or the cells of another slot, or a copy from the prompt cache in host
memory), and the cache policy of an engine that goes idle (every slot's cells moved to host memory, so
that the next sequence's cells start at cell 0, in order)."""

from __future__ import annotations

import llama_cpp

from server.engine.worker.prompt_cache import MIN_TOKENS, PromptCache, shared_prefix
from server.engine.worker.prompt_store import PromptStore
from server.engine.worker.sequences import Sequence, Slot

# A sequence whose prompt shares at least this many more tokens with a prompt being evaluated right now
# than with any cache waits a step for that evaluation to end, then shares its cells (docs/benchmarks.md).
MIN_HOLD_TOKENS = 16


class SlotCache:
    """The slots of one context and the prompt cache behind them. Used from the decode thread only."""

    def __init__(self, ctx: object, n_parallel: int, prompt_cache_bytes: int,
                 store: PromptStore | None = None) -> None:
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.kept = PromptCache(ctx, prompt_cache_bytes, store)
        self.slots = [Slot(seq_id=i) for i in range(n_parallel)]
        # The one slot holding cells, its cells in position order from cell 0 (see `settle`); None: unknown.
        self.ordered: Slot | None = None

    def states(self, active: list[Sequence]) -> list[dict[str, int | bool]]:
        """Each slot (may be a step old when read from another thread): busy or not, the request it serves
        (-1: none), the tokens its cache holds, the tokens its sequence generated."""
        running = {seq.slot.seq_id: seq for seq in active if seq.slot is not None}
        out: list[dict[str, int | bool]] = []
        for slot in self.slots:
            seq = running.get(slot.seq_id)
            out.append({"id": slot.seq_id, "busy": slot.busy, "task": seq.job.id if seq is not None else -1,
                        "tokens": len(slot.tokens), "generated": seq.generated if seq is not None else 0})
        return out

    def persist(self, deadline: float) -> None:
        """Every slot's cache and the prompt cache to the store on disk, most recently used first."""
        slots = sorted((s for s in self.slots if s.tokens), key=lambda s: -s.last_used)
        self.kept.persist([(s.seq_id, s.tokens) for s in slots], deadline)

    def has_free(self) -> bool:
        return any(not s.busy for s in self.slots)

    def cells_in_use(self) -> int:
        """KV cells held by busy slots: the prompt evaluated so far (a reused prefix included) and the
        tokens generated. A free slot's cache is kept for reuse but counts as free, as vLLM counts a
        cached block nobody references: any new sequence may take it over."""
        return sum(len(slot.tokens) for slot in self.slots if slot.busy)

    def forget(self, slot: Slot) -> None:
        """A failed sequence's cache may be half-written: forget it."""
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.tokens = []

    def truncate(self, slot: Slot, keep: int) -> None:
        """Only the first `keep` tokens of this slot's cache stay (drafted tokens that were wrong go)."""
        if 0 <= keep < len(slot.tokens):
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1)
            del slot.tokens[keep:]

    def settle(self, next_prompt: list[int] | None) -> None:
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
        done earlier, by `park`, when the engine runs out of work."""
        holders = [s for s in self.slots if s.tokens]
        if holders == [self.ordered] and next_prompt is not None and shared_prefix(holders[0].tokens,
                                                                                    next_prompt) > 0:
            return  # it is chosen again (the only slot sharing anything), its cells stay where they are
        self.empty()

    def park(self) -> None:
        """The engine ran out of work: `settle`'s copies are made now, while no request waits for them
        (each one is 1-4 ms per 100 tokens of SmolLM2-135M on 2 cores, most of it the kernel handing out
        fresh pages; four of them had delayed the first tokens of four requests arriving together by
        10-14 ms). The one slot that ran alone since the last settle stays where it is, in order: the
        next turn of its conversation continues it for free."""
        if self.ordered is None:
            self.empty()

    def empty(self) -> None:
        """Every slot's cache to host memory, and the KV cache emptied (without a prompt cache: nothing)."""
        holders = [s for s in self.slots if s.tokens]
        if not self.kept.enabled or not holders:
            return
        for slot in holders:
            self.kept.save(slot.seq_id, slot.tokens)
            slot.tokens = []
        # Cells only: clearing the buffers too (True) zero-fills the whole cache, 15 ms for 8192 cells here.
        llama_cpp.llama_memory_clear(self._mem, False)
        self.ordered = None

    def worth_waiting(self, seq: Sequence, active: list[Sequence]) -> bool:
        """Whether `seq` should wait a step: a prompt being evaluated now shares more with it than any cache."""
        cached = max(shared_prefix(s.tokens, seq.prompt) for s in self.slots)
        return any(other.pending and shared_prefix(other.prompt, seq.prompt) >= cached + MIN_HOLD_TOKENS
                   for other in active)

    def place(self, seq: Sequence) -> None:
        """The free slot whose cache shares the longest prefix with the prompt (least recently used on a
        tie); its cache is cut back to that prefix, and the rest of the prompt is pending. When another
        slot, free or busy, holds a longer prefix, its cells are shared first (`_share`); when the prompt cache in
        host memory holds a longer one still, it is copied in. A seed does not change
        this: the cached prefix holds the same keys and values a fresh evaluation would."""
        prompt = seq.prompt
        free = [s for s in self.slots if not s.busy]
        slot = max(free, key=lambda s: (shared_prefix(s.tokens, prompt), -s.last_used))
        own = shared_prefix(slot.tokens, prompt)
        donor = max(self.slots, key=lambda s: shared_prefix(s.tokens, prompt))
        from_donor = shared_prefix(donor.tokens, prompt) if donor is not slot else 0
        kept, from_kept = self.kept.best(prompt)
        # What the slot holds past this prompt is about to go: kept in host memory, unless the slot holds
        # the whole prompt already, so that what goes is an earlier answer to this same prompt (a
        # regenerated answer, a repeated query). Copying it out costs 2-3 ms for 100 tokens, before the
        # first token, and a conversation built on a discarded answer is the rare case.
        if len(slot.tokens) - own >= MIN_TOKENS and own < len(prompt) - 1:
            self.kept.save(slot.seq_id, slot.tokens, keep=kept)
        if from_kept >= max(own, from_donor) + MIN_TOKENS:
            source = self.kept.restore(kept, slot.seq_id)
            if source is not None:
                slot.tokens = list(kept)
                seq.restored = from_kept if source == "disk" else 0
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

    def _share(self, donor: Slot, slot: Slot, n: int) -> None:
        """`slot`'s cache becomes the first `n` tokens of `donor`'s, by reference: the cells then belong
        to both sequences (one cache for all slots), and each goes on writing its own after them."""
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, 0, n)
        slot.tokens = donor.tokens[:n]


ABORTED = 2  # llama_decode's status when the abort callback stopped it


class AbandonedBatch:
    """llama.cpp's abort callback for one context: a decode stops when every sequence in its batch belongs
    to a request that was cancelled. Measured here: a 512-token prompt chunk of SmolLM2-135M takes about a
    second on 2 cores; a client that leaves during it no longer holds the model for the rest."""

    def __init__(self, ctx: object) -> None:
        self._ctx = ctx
        self._batch: list[Sequence] = []
        self._callback = llama_cpp.ggml_abort_callback(self._abandoned)  # kept: llama.cpp holds a pointer
        self._on = False
        self.aborted = 0  # decodes stopped (tests read it)

    def watch(self, batch: list[Sequence] | None) -> None:
        """Watch this batch's sequences during the next decode; None: no callback (a decode step, where a
        Python call between graph nodes would cost more than it could save)."""
        self._batch = batch or []
        if (batch is not None) != self._on:
            self._on = batch is not None
            llama_cpp.llama_set_abort_callback(self._ctx, self._callback if self._on else
                                               llama_cpp.ggml_abort_callback(), None)

    def _abandoned(self, _: object) -> bool:
        batch = self._batch
        if batch and all(seq.job.stopped for seq in batch):
            self._batch = []  # asked again until the graph stops: counted once
            self.aborted += 1
            return True
        return False
