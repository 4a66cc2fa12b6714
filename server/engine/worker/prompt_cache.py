"""Slot caches kept in host memory after their slot moved on, for the prompt that comes back.

With four slots and more conversations than that, each new turn finds its history pushed out of every
slot and evaluates it again. Like llama-server's `--cache-ram`, a slot's cache is copied here (llama.cpp's
per-sequence state) when a new request is about to cut it back, and copied into a slot when a prompt
shares a longer prefix with a kept one than with any slot. Least recently used entries leave first, within
the alias's `prompt_cache_mib`. Behind it, the prompt store on disk (prompt_store.py): what earlier workers
of the alias saved when they left is looked up the same way, and what this one holds is saved when it
leaves (`persist`).
"""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict

import llama_cpp

from server.engine.worker.prompt_store import PromptStore, shared_prefix

# Not worth a copy: a cache whose discarded part is shorter, or a saving of fewer tokens.
MIN_TOKENS = 16


class PromptCache:
    def __init__(self, ctx: object, budget_bytes: int, store: PromptStore | None = None) -> None:
        self._ctx = ctx
        self._budget = budget_bytes
        self._used = 0
        self._entries: OrderedDict[tuple[int, ...], ctypes.Array[ctypes.c_uint8]] = OrderedDict()
        self.store = store  # the entries saved on disk by earlier workers of this alias

    @property
    def enabled(self) -> bool:
        return self._budget > 0

    def save(self, seq_id: int, tokens: list[int], keep: tuple[int, ...] = ()) -> None:
        """Keep a copy of sequence `seq_id`, which holds `tokens` (unless one kept already covers them).
        The entry `keep` (chosen by `best` for a restore about to happen) is never dropped to make room:
        without room beside it, nothing is saved."""
        key = tuple(tokens)
        if not self._budget or len(key) < MIN_TOKENS or any(k[:len(key)] == key for k in self._entries):
            return
        size = llama_cpp.llama_state_seq_get_size(self._ctx, seq_id)
        if not size or size + (len(self._entries[keep]) if keep in self._entries else 0) > self._budget:
            return
        while self._used + size > self._budget:
            oldest = next(k for k in self._entries if k != keep)
            self._used -= len(self._entries.pop(oldest))
        # A ctypes array zero-fills itself slowly (2.4 ms for 100 tokens of SmolLM2-135M, three times the copy
        # that follows); a bytearray's memory comes zeroed from the allocator (0.3 ms).
        state = (ctypes.c_uint8 * size).from_buffer(bytearray(size))
        if llama_cpp.llama_state_seq_get_data(self._ctx, state, size, seq_id) != size:
            return
        for kept in [k for k in self._entries if key[:len(k)] == k and k != keep]:  # the new copy covers them
            self._used -= len(self._entries.pop(kept))
        self._entries[key] = state
        self._used += size

    def best(self, prompt: list[int]) -> tuple[tuple[int, ...], int]:
        """The kept tokens (in memory, or on disk) sharing the longest prefix with `prompt`, and how many
        they share; memory first on a tie."""
        found: tuple[int, ...] = ()
        most = 0
        for key in self._entries:
            n = shared_prefix(key, prompt)
            if n > most:
                found, most = key, n
        if self.store is not None:
            saved, n = self.store.best(prompt)
            if n > most:
                found, most = saved, n
        return found, most

    def restore(self, key: tuple[int, ...], seq_id: int) -> str | None:
        """Copy the kept state into sequence `seq_id` (emptied first by llama.cpp): where it came from,
        "memory" or "disk"; None: it did not fit, or the saved file did not check."""
        state = self._entries.get(key)
        if state is not None:
            self._entries.move_to_end(key)
            done = llama_cpp.llama_state_seq_set_data(self._ctx, state, len(state), seq_id) == len(state)
            return "memory" if done else None
        payload = self.store.load(key) if self.store is not None else None
        if payload is None:
            return None
        try:
            done = llama_cpp.llama_state_seq_set_data(self._ctx, payload.array(), payload.size, seq_id) == payload.size
        finally:
            payload.close()
        return "disk" if done else None

    def persist(self, slots: list[tuple[int, list[int]]], deadline: float) -> None:
        """To disk, most recent first, until `deadline` (time.monotonic()): the slots' caches (seq_id,
        tokens), then the entries kept in memory. What is already saved, or covered by a saved entry, is
        not written again."""
        store = self.store
        if store is None:
            return
        for seq_id, tokens in slots:
            key = tuple(tokens)
            if time.monotonic() > deadline or len(key) < MIN_TOKENS or store.covers(key):
                continue
            size = llama_cpp.llama_state_seq_get_size(self._ctx, seq_id)
            state = (ctypes.c_uint8 * size).from_buffer(bytearray(size)) if size else None
            if state is not None and llama_cpp.llama_state_seq_get_data(self._ctx, state, size, seq_id) == size:
                store.save(key, memoryview(state).cast("B"))
        for key in reversed(list(self._entries)):
            if time.monotonic() > deadline:
                break
            if not store.covers(key):
                store.save(key, memoryview(self._entries[key]).cast("B"))

