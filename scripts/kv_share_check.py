"""Does a sequence that shares its prompt prefix with another by reference (`llama_memory_seq_cp` in one
unified KV cache, as the slot engine's `_share` does) still compute what a fresh context computes, after
the other sequence is cut back and its cells are freed?

Run: `.venv/bin/python scripts/kv_share_check.py` (the default model, CPU, under a minute). Prints the
largest logit difference from a fresh evaluation of the same tokens, per case and flash-attention setting;
0.0 is correct. Measured 2026-11-26 with llama-cpp-python 0.3.36: "own slot" 0.0; "shared prefix" 0.87
(flash attention) and 0.78 (without) on the token after the cut; "copied prefix" (the prefix's keys and
values copied into the second sequence's own cells instead of shared) 0.67 and 0.73, so sharing cells
is not what goes wrong. See docs/benchmarks.md, "Sequences that shared a prompt".
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine.worker.compat import LlamaContext, model_of  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
LONG = SYSTEM + ("Tell me a story about a dragon. It should be long, with knights and castles and a happy "
                 "ending please.<|im_end|>\n<|im_start|>assistant\nOnce upon a time")
SHORT = SYSTEM + "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    llm = llama_cpp.Llama(model_path=str(MODEL), n_ctx=256, n_threads=2, verbose=False)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def context(flash: int) -> LlamaContext:
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_seq_max, params.n_batch, params.n_ubatch = 4096, 4, 512, 512
        params.kv_unified, params.flash_attn_type = True, flash
        return LlamaContext(model=model_of(llm), params=params, verbose=False)

    def decode(ctx: LlamaContext, seq: int, tokens: list[int], pos0: int) -> np.ndarray:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos0 + i, 1, 0
            batch.seq_id[i][0] = seq
        batch.logits[len(tokens) - 1], batch.n_tokens = 1, len(tokens)
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        row = llama_cpp.llama_get_logits_ith(ctx.ctx, len(tokens) - 1)
        return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()

    first = llm.tokenize(LONG.encode(), add_bos=False, special=True)
    second = llm.tokenize(SHORT.encode(), add_bos=False, special=True)
    prefix = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    extra = second[-1]  # any token will do: both sides decode the same one at the same position
    for flash in (0, 1):
        fresh = context(flash)
        decode(fresh, 0, second, 0)
        expected = decode(fresh, 0, [extra], len(second))
        for case in ("own slot", "shared prefix", "copied prefix"):
            ctx = context(flash)
            mem = llama_cpp.llama_get_memory(ctx.ctx)
            decode(ctx, 0, first, 0)
            if case == "own slot":  # the slot's own cache cut back to the prefix, then the new prompt
                llama_cpp.llama_memory_seq_rm(mem, 0, prefix, -1)
                seq = 0
            elif case == "shared prefix":  # another slot takes the prefix by reference; later the first is cut
                llama_cpp.llama_memory_seq_cp(mem, 0, 1, 0, prefix)
                seq = 1
            else:  # the same, with the prefix's keys and values copied into cells of the other slot's own
                size = llama_cpp.llama_state_seq_get_size(ctx.ctx, 0)
                state = (ctypes.c_uint8 * size)()
                llama_cpp.llama_state_seq_get_data(ctx.ctx, state, size, 0)
                llama_cpp.llama_state_seq_set_data(ctx.ctx, state, size, 1)
                llama_cpp.llama_memory_seq_rm(mem, 1, prefix, -1)
                seq = 1
            decode(ctx, seq, second[prefix:], prefix)
            if case != "own slot":
                llama_cpp.llama_memory_seq_rm(mem, 0, prefix, -1)
            got = decode(ctx, seq, [extra], len(second))
            print(f"flash attention {'on ' if flash else 'off'}  {case:14s} largest logit difference "
                  f"{float(np.abs(got - expected).max()):.4f}")
            ctx.close()
        fresh.close()
    llama_cpp.llama_batch_free(batch)


if __name__ == "__main__":
    main()
