"""Pooling done in the worker with the output head skipped (server/engine/worker/pooling.py), against
llama.cpp's own pooling on the real model: the same vectors, for every pooling it takes over."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from server.engine.worker import embedding
from server.engine.worker.compat import model_of
from server.engine.worker.embedding import EmbeddingContext
from server.engine.worker.pooling import poolable_here

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
POOLINGS = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
            "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}


@pytest.mark.parametrize("name", POOLINGS)
def test_pooled_here_equals_llama_cpps_pooling(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = llama_cpp.Llama(str(MODEL), n_ctx=512, embedding=True, pooling_type=POOLINGS[name], verbose=False)
    ours = EmbeddingContext(llm, 1024, None)
    monkeypatch.setattr(embedding, "poolable_here", lambda *args: False)
    theirs = EmbeddingContext(llm, 1024, None)
    assert ours._stop is not None and theirs._stop is None  # the two paths really differ
    # Inputs of different lengths in one batch, so that a row taken from the wrong sequence shows.
    texts = ("Paris is the capital of France.", "A short one.", "Tell me a long story about a dragon and its hoard.")
    inputs = [llm.tokenize(text.encode()) for text in texts]
    for mine, reference in zip(ours.embed(inputs), theirs.embed(inputs)):
        assert len(mine) == len(reference) == llm.n_embd()
        assert max(abs(a - b) for a, b in zip(mine, reference)) < 1e-5
    ours.close()
    theirs.close()


def test_pooled_by_llama_cpp_where_a_head_or_a_gpu_follows() -> None:
    llm = llama_cpp.Llama(str(MODEL), n_ctx=512, embedding=True, verbose=False)
    model = model_of(llm).model
    assert poolable_here(model, llama_cpp.LLAMA_POOLING_TYPE_MEAN, 0)
    assert not poolable_here(model, llama_cpp.LLAMA_POOLING_TYPE_RANK, 0)  # a classifier head after pooling
    assert not poolable_here(model, llama_cpp.LLAMA_POOLING_TYPE_NONE, 0)  # one vector per token: no pooling
    assert not poolable_here(model, llama_cpp.LLAMA_POOLING_TYPE_MEAN, 99)  # offloaded layers
