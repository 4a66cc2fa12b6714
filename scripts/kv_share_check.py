"""Are a sequence's logits independent of where its cells lie in llama.cpp's unified KV cache?

Run: `.venv/bin/python scripts/kv_share_check.py` (the default model, CPU, under a minute). Prints the
largest logit difference from a fresh evaluation of the same tokens, with flash attention off and on:
0.0 means bit-identical. Cases: the sequence's own cache cut back to a prefix ("own slot"); the prefix
taken from another sequence by reference ("shared prefix") or copied ("copied prefix"), after which the
other sequence is cut back so that the next token lands in a freed cell below the sequence's earlier ones.
Measured 2026-11-26 with llama-cpp-python 0.3.36: own slot 0.0; the other two 0.67-0.87 with flash
attention, whose CPU kernel sums an F16 cache's values in cell order at F16 precision. See
docs/benchmarks.md, "Output that depends on where a sequence's cells lie".
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
