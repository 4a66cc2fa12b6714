"""One loaded GGUF model behind a small, blocking interface. Runs in worker threads, never on the loop.

llama.cpp failures become our own exceptions here; callers never see llama_cpp types or messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import llama_cpp
import msgspec

from server.errors import EngineError, InvalidRequestError, ModelLoadError
from server.registry import ModelSpec

_POOLING = {
    "unspecified": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
    "none": llama_cpp.LLAMA_POOLING_TYPE_NONE,
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
    "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK,
}

# ModelSpec keys that are ours, not `Llama(...)` arguments.
_NOT_LLAMA_ARGS = {"path", "sampling", "pooling_type"}


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling settings after request values and alias defaults are merged. None: llama.cpp's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] = []
    seed: int | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class Piece(NamedTuple):
    """A stretch of generated text; the last one of a generation carries the finish reason."""

    text: str
    finish_reason: str | None = None


class Generated(NamedTuple):
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class LlamaEngine:
    def __init__(self, alias: str, spec: ModelSpec) -> None:
        self.alias = alias
        self.spec = spec
        self.is_embedding = spec.embedding
        kwargs = {k: v for k, v in msgspec.structs.asdict(spec).items() if k not in _NOT_LLAMA_ARGS}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        pooling = spec.pooling_type
        kwargs["pooling_type"] = _POOLING[pooling] if isinstance(pooling, str) else pooling
        try:
            self._llm = llama_cpp.Llama(model_path=spec.path, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {spec.path}: {exc}") from exc

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx()

    def close(self) -> None:
        self._llm.close()

    # -- generation -------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], params: GenerationParams) -> Generated:
        result = self._call(self._llm.create_chat_completion, messages=messages, **params.as_kwargs())
        choice = result["choices"][0]
        return _generated(choice["message"].get("content") or "", choice, result["usage"])

    def chat_stream(
        self, messages: list[dict[str, Any]], params: GenerationParams, stop: threading.Event
    ) -> Iterator[Piece]:
        chunks = self._call(self._llm.create_chat_completion, messages=messages, stream=True, **params.as_kwargs())
        return self._pieces(chunks, stop, lambda c: c["delta"].get("content") or "")

    def complete(self, prompt: str, params: GenerationParams, echo: bool) -> Generated:
        result = self._call(self._llm.create_completion, prompt=prompt, echo=echo, **params.as_kwargs())
        choice = result["choices"][0]
        return _generated(choice["text"], choice, result["usage"])

    def complete_stream(
        self, prompt: str, params: GenerationParams, echo: bool, stop: threading.Event
    ) -> Iterator[Piece]:
        chunks = self._call(self._llm.create_completion, prompt=prompt, echo=echo, stream=True, **params.as_kwargs())
        return self._pieces(chunks, stop, lambda c: c["text"])

    def _pieces(self, chunks: Iterator[dict[str, Any]], stop: threading.Event, text_of: Any) -> Iterator[Piece]:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason")
                text = text_of(choice)
                if text or finish:
                    yield Piece(text, finish)
        except ValueError as exc:  # llama-cpp-python raises ValueError for bad input (e.g. prompt past n_ctx)
            raise InvalidRequestError(str(exc)) from exc
        except RuntimeError as exc:
            raise EngineError(f"generation failed: {exc}") from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        if kwargs.get("seed") is not None:
            # Reusing the cached prompt prefix evaluates the last prompt token alone, and that batch
            # shape yields slightly different logits: the same seed would then sample differently.
            # A seeded request starts from an empty cache, so the same request gives the same output.
            self._llm.reset()
        try:
            return fn(**kwargs)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        except RuntimeError as exc:
            raise EngineError(f"generation failed: {exc}") from exc

    # -- embeddings -------------------------------------------------------------------------------

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        try:
            vectors, tokens = self._llm.embed(inputs, normalize=True, return_count=True)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"embedding failed: {exc}") from exc
        return vectors, tokens


def _generated(text: str, choice: dict[str, Any], usage: dict[str, int]) -> Generated:
    return Generated(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
    )


def load_engine(alias: str, spec: ModelSpec) -> LlamaEngine:
    return LlamaEngine(alias, spec)
