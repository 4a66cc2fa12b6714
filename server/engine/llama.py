"""One loaded GGUF model behind a small, blocking interface. Runs in worker threads, never on the loop.

llama.cpp failures become our own exceptions here; callers never see llama_cpp types or messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import llama_cpp
import msgspec

from server.engine.sequence import Piece, Request, TokenPieces, check_context
from server.engine.sampling import check_grammar
from server.engine.slots import SlotEngine
from server.engine.prompt import chat_handler, render_chat
from server.errors import EngineError, InvalidRequestError, ModelLoadError
from server.registry import SERVING_KEYS, ModelSpec

_POOLING = {
    "unspecified": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
    "none": llama_cpp.LLAMA_POOLING_TYPE_NONE,
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
    "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK,
}

# ModelSpec keys that are ours, not `Llama(...)` arguments.
_NOT_LLAMA_ARGS = {"path", "sampling", "pooling_type", "n_parallel"} | SERVING_KEYS
# A chat model generates in the slot engine's own context; the one `Llama` makes is left at the smallest.
_UNUSED_CTX = 256


class LlamaEngine:
    def __init__(self, alias: str, spec: ModelSpec) -> None:
        self.alias = alias
        self.spec = spec
        self.is_embedding = spec.embedding
        kwargs = {k: v for k, v in msgspec.structs.asdict(spec).items() if k not in _NOT_LLAMA_ARGS}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # flash_attn None: decided in SlotEngine
        pooling = spec.pooling_type
        kwargs["pooling_type"] = _POOLING[pooling] if isinstance(pooling, str) else pooling
        if not spec.embedding:
            kwargs["n_ctx"] = _UNUSED_CTX
        if spec.n_threads_batch is None:
            # llama-cpp-python would use every core for batches. With slots, every step with two or more
            # sequences is a batch, and on a small machine those threads then fight the event loop and
            # each other (measured on 2 cores: 4 streams fell from ~95 to under 30 tokens/s, and to single
            # digits when another process was busy). Batches use the generation thread count instead.
            kwargs["n_threads_batch"] = spec.n_threads or max((os.cpu_count() or 2) // 2, 1)
        try:
            self._llm = llama_cpp.Llama(model_path=spec.path, **kwargs)
            self._n_ctx = spec.n_ctx or self._llm._model.n_ctx_train()  # noqa: SLF001
            self._pieces = TokenPieces(self._llm)
            self._slots = None
            self._chat_handler = None
            if not spec.embedding:
                self._chat_handler = chat_handler(self._llm)
                self._slots = SlotEngine(self._llm, self._pieces, n_parallel=spec.n_parallel, n_ctx=self._n_ctx,
                                         n_batch=spec.n_batch, n_ubatch=spec.n_ubatch, flash_attn=spec.flash_attn)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {spec.path}: {exc}") from exc

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        return self._llm.n_vocab()

    def close(self) -> None:
        if self._slots is not None:
            self._slots.close()
        self._llm.close()

    # -- tokens -----------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        n_vocab = self.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(f"Token id {bad} is outside this model's vocabulary (0..{n_vocab - 1}).",
                                      param="tokens")
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """Prompt tokens for these messages, and the stop strings the chat template adds."""
        return render_chat(self._llm, self._chat_handler, messages)

    # -- generation -------------------------------------------------------------------------------

    def generate(self, request: Request, stop: threading.Event) -> Iterator[Piece]:
        for _, piece in self.generate_many([request], stop):
            yield piece

    def generate_many(self, requests: list[Request], stop: threading.Event) -> Iterator[tuple[int, Piece]]:
        """Each request as its own sequence, decoded together with every other request's on this model."""
        return self._slot_engine().generate(requests, stop)

    def checked(self, requests: list[Request]) -> list[Request]:
        """Refuse, before anything is queued, what the decode loop could not run: prompts past the
        context, empty prompts, grammars llama.cpp cannot parse. Blocking: call it off the loop."""
        grammars = set()
        for request in requests:
            check_context(len(request.prompt), request.max_tokens, self._n_ctx)
            key = (request.sampling.grammar, request.sampling.grammar_trigger)
            if request.sampling.grammar is not None and key not in grammars:
                check_grammar(self._llm._model, request.sampling)  # noqa: SLF001
                grammars.add(key)
        return requests

    def submit(self, requests: list[Request], stop: threading.Event, sink: Callable[[object], None],
               on_done: Callable[[], None]) -> None:
        """Non-blocking: see `SlotEngine.submit`."""
        self._slot_engine().submit(requests, stop, sink, on_done)

    def _slot_engine(self) -> SlotEngine:
        if self._slots is None:
            raise InvalidRequestError(f"The model `{self.alias}` is an embedding model.", param="model")
        return self._slots

    # -- embeddings -------------------------------------------------------------------------------

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        try:
            vectors, tokens = self._llm.embed(inputs, normalize=True, return_count=True)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"embedding failed: {exc}") from exc
        return vectors, tokens


def load_engine(alias: str, spec: ModelSpec) -> LlamaEngine:
    return LlamaEngine(alias, spec)
