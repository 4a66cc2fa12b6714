"""Pooling done here instead of in llama.cpp, so that a CPU graph stops before the output head.

An embedding context asks llama.cpp for every token's output (pooling needs them all), and llama.cpp's
graph then also multiplies every token's hidden state by the output head, 49,152 x 576 for SmolLM2,
whose logits an embedding never reads: measured on 2 cores, 15% of a 152-token batch of 8 inputs
(chat prefill of the same batch: 829 ms with the last token's logits, 994 ms with every token's).

So for mean, first-token (`cls`) and last-token pooling the context runs with llama.cpp's pooling
`none`, which hands over each token's final hidden state (the tensor its own pooling reads), and
llama.cpp's scheduler is given an evaluation callback that cancels the rest of the graph once that
tensor is computed (ggml-backend.h: a callback that returns false "will cancel the graph compute").
The pooling itself is a mean or a row pick over those states. Measured: 903 ms against 1,013 for the
batch above; vectors equal to llama.cpp's own pooling within 1.2e-7.

Not used, llama.cpp pooling as before, when: the pooling is `rank` (a classifier head follows);
the model has dense layers after pooling (`<arch>.dense_2_feat_out` or `.dense_3_feat_in` in the
GGUF, sentence-transformers style); any layer is offloaded (a GPU graph has several parts and the
head is cheap there); or ggml's library, which names the graph's tensors, is not found in the wheel.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import llama_cpp
import numpy as np

OWN_POOLING = {llama_cpp.LLAMA_POOLING_TYPE_MEAN, llama_cpp.LLAMA_POOLING_TYPE_CLS, llama_cpp.LLAMA_POOLING_TYPE_LAST}
# The name llama.cpp gives the final hidden states when pooling is `none` (llm_graph_context::build_pooling).
HIDDEN_STATES = b"result_embd_pooled"
_DENSE_KEYS = ("dense_2_feat_out", "dense_3_feat_in")


@functools.cache
def _ggml() -> ctypes.CDLL | None:
    """ggml's library beside llama.cpp's in the wheel, for `ggml_get_name`; None where it is not found
    (another platform's file names, a build with ggml inside libllama): then llama.cpp pools."""
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll", "libggml.so", "libllama.so"):
        try:
            lib = ctypes.CDLL(os.path.join(libdir, name))
            get_name = lib.ggml_get_name
        except (OSError, AttributeError):
            continue
        get_name.restype = ctypes.c_char_p
        get_name.argtypes = [ctypes.c_void_p]
        return lib
    return None


def _meta(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def poolable_here(model: Any, pooling: int, n_gpu_layers: int) -> bool:
    """Whether this model's pooling can be done here with the output head skipped."""
    if pooling not in OWN_POOLING or n_gpu_layers != 0 or _ggml() is None:
        return False
    arch = _meta(model, "general.architecture") or ""
    return not any(_meta(model, f"{arch}.{key}") is not None for key in _DENSE_KEYS)


def stop_after_hidden_states() -> Any:
    """An evaluation callback for a context's params (keep a reference for the context's lifetime)."""
    ggml = _ggml()
    assert ggml is not None  # poolable_here said so

    def callback(tensor: int, ask: bool, _user_data: int) -> bool:
        if ggml.ggml_get_name(tensor) != HIDDEN_STATES:
            return False  # asked: not needed; never told about it
        return ask  # asked: yes, show it; shown: it is computed, cancel the rest of the graph

    return llama_cpp.ggml_backend_sched_eval_callback(callback)


def pooled_vectors(ctx: Any, sizes: list[int], n_embd: int, pooling: int, here: bool) -> list[list[float]]:
    """One L2-normalised vector per sequence of the batch just decoded: pooled here (`here`, the context
    made with `stop_after_hidden_states`) or read from llama.cpp's own pooling."""
    if here:
        pooled = pool(ctx, sizes, n_embd, pooling)
    else:
        pooled = [np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(ctx, seq), shape=(n_embd,))
                  .astype(np.float64) for seq in range(len(sizes))]
    vectors = []
    for vector in pooled:
        norm = float(np.linalg.norm(vector))
        vectors.append((vector / norm if norm else vector).tolist())
    return vectors


def pool(ctx: Any, sizes: list[int], n_embd: int, pooling: int) -> list[Any]:
    """One vector per sequence of the batch just decoded, from its tokens' hidden states (in batch order)."""
    states = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(ctx), shape=(sum(sizes), n_embd))
    vectors, start = [], 0
    for size in sizes:
        rows = states[start:start + size]
        start += size
        if pooling == llama_cpp.LLAMA_POOLING_TYPE_MEAN:
            vectors.append(rows.mean(axis=0, dtype=np.float64))
        else:
            vectors.append(rows[0 if pooling == llama_cpp.LLAMA_POOLING_TYPE_CLS else -1].astype(np.float64))
    return vectors
