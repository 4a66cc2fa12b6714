"""Issue 34: special tokens parsed in time linear in the text, with exactly llama.cpp's tokens."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from server.engine.worker.tokenizer import Tokenizer

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PARTS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", " hello", "world ", "\n", "  ", "<|im",
         "_end|>", "é", "x", "user\n", "<|im_end|><|im_start|>"]


@pytest.fixture(scope="module")
def llm() -> Iterator[llama_cpp.Llama]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make models`")
    yield llama_cpp.Llama(model_path=str(MODEL), vocab_only=True, verbose=False)


def test_the_tokens_are_llama_cpps_own(llm: llama_cpp.Llama) -> None:
    tokenize = Tokenizer(llm)
    rng = random.Random(34)
    for _ in range(200):
        text = "".join(rng.choice(PARTS) for _ in range(rng.randrange(0, 2000))).encode()
        for bos in (True, False):
            assert tokenize(text, bos, True) == llm.tokenize(text, add_bos=bos, special=True)
    assert tokenize(b"<|im_end|>", True, False) == llm.tokenize(b"<|im_end|>", add_bos=True, special=False)


def test_the_fewest_tokens_never_exceed_the_real_count(llm: llama_cpp.Llama) -> None:
    tokenize = Tokenizer(llm)
    rng = random.Random(7)
    for _ in range(100):
        text = "".join(rng.choice(PARTS + [" " * 40, "a" * 30]) for _ in range(rng.randrange(1, 500))).encode()
        assert tokenize.fewest_tokens(text) <= len(tokenize(text, False, True))
    assert tokenize.fewest_tokens(("<|im_end|>x" * 1000).encode()) == 1000
