"""Pooled embeddings on a llama.cpp context of our own.

`Llama(embedding=True)` builds its context with flash attention forced on or off (its constructor takes
a bool); llama-server lets llama.cpp choose, which on CPU means on. Measured on 2 cores, 8 inputs of
about 18 tokens a request: 6.4-6.7 inputs/s with it off, 7.2-7.3 with it on (llama-server 6.8-7.2).
So, as the slot engine does for chat, the `Llama` keeps the smallest context and the vectors come from
this one, made with the alias's settings and flash attention `auto` unless the alias says.
"""

from __future__ import annotations

import llama_cpp
from llama_cpp._internals import LlamaBatch

from server.engine.worker.compat import FLASH_ATTN, LlamaContext, model_of
from server.engine.worker.compute_lock import ComputeLock
from server.engine.worker.pooling import poolable_here, pooled_vectors, stop_after_hidden_states
from server.errors import EngineError


class EmbeddingContext:
    """One context of `n_ctx` tokens; an input is decoded whole, in one batch, beside as many others as
    `n_ctx` tokens and llama.cpp's sequence limit allow."""

    def __init__(self, llm: llama_cpp.Llama, n_ctx: int, flash_attn: bool | None,
                 compute: ComputeLock | None = None) -> None:
        self._compute = compute or ComputeLock(None, 0)
        if llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            raise EngineError("this embedding model has no pooling, so one vector per token: set "
                              "`pooling_type: mean` (or cls, last) for its alias in models.yaml")
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # one input is one batch
        params.n_seq_max = self.n_seq_max = min(n_ctx, llama_cpp.llama_max_parallel_sequences())
        params.kv_unified = True  # the sequences of a batch share the cache: none needs n_ctx of its own
        params.embeddings = True
        params.flash_attn_type = FLASH_ATTN[flash_attn]
        # Pooled here where it can be, the output head skipped (server/engine/worker/pooling.py).
        self._pooling = int(llm.pooling_type())  # an int, whatever llama-cpp-python annotates
        self._stop = None
        if poolable_here(model_of(llm).model, self._pooling, llm.model_params.n_gpu_layers):
            self._stop = stop_after_hidden_states()
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
            params.cb_eval, params.cb_eval_user_data = self._stop, None
        self.n_batch = n_ctx
        self.n_embd = llm.n_embd()
        self._ctx = LlamaContext(model=model_of(llm), params=params, verbose=False)
        self._batch = LlamaBatch(n_tokens=n_ctx, embd=0, n_seq_max=self.n_seq_max, verbose=False)

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One pooled, L2-normalised vector per list of token ids (each at most n_ctx long)."""
        vectors: list[list[float]] = []
        sizes: list[int] = []
        batch, ctx = self._batch, self._ctx

        def decode() -> None:
            ctx.kv_cache_clear()
            with self._compute:
                ctx.decode(batch)
            batch.reset()
            vectors.extend(pooled_vectors(ctx.ctx, sizes, self.n_embd, self._pooling, self._stop is not None))
            sizes.clear()

        batch.reset()
        for tokens in inputs:
            if sizes and (batch.n_tokens() + len(tokens) > self.n_batch or len(sizes) >= self.n_seq_max):
                decode()
            batch.add_sequence(tokens, len(sizes), True)  # every token an output: llama.cpp pools over them
            sizes.append(len(tokens))
        if sizes:
            decode()
        ctx.kv_cache_clear()
        return vectors

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
