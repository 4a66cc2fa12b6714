"""A draft model: a smaller model of the same vocabulary, loaded in the worker beside the alias's own, that
guesses a sequence's next tokens one at a time (greedy) where its history has nothing to copy.

Its context holds one KV sequence per slot, with the slots' ids. Before drafting, each sequence's cache
is brought up to what the alias's model holds (the common prefix kept, the rest evaluated), so that the
tokens accepted last step and a new prompt cost the draft model only what it has not seen. It stops a
draft where its own top token is less likely than `p_min` (llama-server's --draft-p-min).
"""

from __future__ import annotations

import llama_cpp
import numpy as np

from server.engine.worker.compat import LlamaContext, Threadpools, model_of
from server.engine.worker.prompt_cache import shared_prefix
from server.engine.worker.sequences import fill_batch
from server.errors import ModelLoadError

VOCAB_SAMPLES = 512  # token ids compared between the two vocabularies, spread over the whole range


class DraftModel:
    def __init__(self, path: str, target: llama_cpp.Llama, *, n_parallel: int, n_ctx: int, n_batch: int,
                 n_threads: int, p_min: float, n_gpu_layers: int = 0) -> None:
        try:  # on the alias's GPU layers setting: a GPU user's draft model goes to the GPU too
            self._llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=n_threads, n_threads_batch=n_threads,
                                        n_gpu_layers=n_gpu_layers, use_mmap=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load the draft model: {exc}") from exc
        problem = vocabulary_difference(target, self._llm)
        if problem:
            self._llm.close()
            raise ModelLoadError(f"the draft model's vocabulary differs from the model's: {problem}")
        params = type(self._llm.context_params).from_buffer_copy(self._llm.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * n_parallel, n_parallel, True
        params.n_batch = params.n_ubatch = n_batch
        self._ctx = LlamaContext(model=model_of(self._llm), params=params, verbose=False)
        self._threads = Threadpools(self._ctx.ctx, n_threads, n_threads, 0)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._n_batch = n_batch
        self._n_vocab = self._llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._p_min = p_min
        self._held: list[list[int]] = [[] for _ in range(n_parallel)]  # each sequence's cache, in order

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        self._threads.close()
        self._ctx.close()
        self._llm.close()

    def propose(self, wants: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """For each (sequence id, its whole history up to the next token, most tokens wanted): a draft."""
        rows = self._catch_up(wants)
        drafts: list[list[int]] = [[] for _ in wants]
        live = [i for i, (_, _, limit) in enumerate(wants) if limit > 0 and rows[i] >= 0]
        while live:
            logits = {i: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, rows[i]),
                                               shape=(self._n_vocab,)) for i in live}
            going = []
            for i in live:
                token = int(np.argmax(logits[i]))
                sure = 1.0 / float(np.exp(logits[i] - logits[i][token]).sum())
                if sure < self._p_min or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    continue
                drafts[i].append(token)
                if len(drafts[i]) < wants[i][2]:
                    going.append(i)
            live = going
            if not live:
                break
            n = 0
            for i in live:  # the next token of every draft still going, one batch
                seq_id = wants[i][0]
                n = fill_batch(self._batch, n, [drafts[i][-1]], len(self._held[seq_id]), seq_id)
                self._held[seq_id].append(drafts[i][-1])
                self._batch.logits[n - 1] = 1
                rows[i] = n - 1
            if not self._decode(n, [wants[i][0] for i in live]):
                break
        return drafts

    def _catch_up(self, wants: list[tuple[int, list[int], int]]) -> list[int]:
        """Evaluate what each sequence's cache lacks, its last token in one final batch (whose logits the
        drafts start from); the batch row of each one's last token (-1: it could not be evaluated)."""
        pending: dict[int, list[int]] = {}
        for seq_id, history, _ in wants:
            held = self._held[seq_id]
            keep = min(shared_prefix(held, history), len(history) - 1)
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, keep, -1)
            del held[keep:]
            pending[seq_id] = history[keep:-1]
        while any(pending.values()):  # prompt chunks, no logits
            n = 0
            for seq_id, tokens in pending.items():
                chunk = tokens[:self._n_batch - n]
                n = fill_batch(self._batch, n, chunk, len(self._held[seq_id]), seq_id)
                self._held[seq_id].extend(chunk)
                pending[seq_id] = tokens[len(chunk):]
            if not self._decode(n, list(pending)):
                return [-1] * len(wants)
        n, rows = 0, []
        for seq_id, history, _ in wants:
            n = fill_batch(self._batch, n, history[-1:], len(self._held[seq_id]), seq_id)
            self._held[seq_id].append(history[-1])
            self._batch.logits[n - 1] = 1
            rows.append(n - 1)
        return rows if self._decode(n, [w[0] for w in wants]) else [-1] * len(wants)

    def _decode(self, n: int, seq_ids: list[int]) -> bool:
        self._batch.n_tokens = n
        if llama_cpp.llama_decode(self._ctx.ctx, self._batch) == 0:
            return True
        for seq_id in seq_ids:  # their caches are unknown now: start again next time
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            self._held[seq_id] = []
        return False


def vocabulary_difference(a: llama_cpp.Llama, b: llama_cpp.Llama) -> str | None:
    """Why two models cannot share drafts (None: they can): the vocabulary's size, its special tokens,
    and the text of VOCAB_SAMPLES token ids spread over it."""
    if a.n_vocab() != b.n_vocab():
        return f"{b.n_vocab()} tokens against {a.n_vocab()}"
    if (a.token_bos(), a.token_eos()) != (b.token_bos(), b.token_eos()):
        return "other begin or end tokens"
    va, vb = llama_cpp.llama_model_get_vocab(a.model), llama_cpp.llama_model_get_vocab(b.model)
    step = max(a.n_vocab() // VOCAB_SAMPLES, 1)
    for token in range(0, a.n_vocab(), step):
        if llama_cpp.llama_vocab_get_text(va, token) != llama_cpp.llama_vocab_get_text(vb, token):
            return f"token {token} differs"
    return None
