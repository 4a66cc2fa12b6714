"""The one engine interface services and the pool use: a loaded model, wherever it runs.

`WorkerModel` (client.py) runs it in a worker process; tests script a fake that implements the same
Protocol. Nothing here imports llama_cpp.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, NamedTuple, Protocol

from server.engine.types import ChatPrompt, Embeddings, Piece, Request

Indexed = tuple[int, Piece]  # (sequence index within the request, piece)


class Exit(NamedTuple):
    """How a model's process ended. `reason`: "closed" (the pool closed it), "memory_limit", "hung" (silent
    past HANG_SECONDS), "crashed"."""

    reason: str
    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exited with code {self.code}"


class Model(Protocol):
    alias: str
    n_ctx: int
    n_vocab: int
    chat_template: str | None  # the Jinja template chats are rendered with; None: a named chat format

    async def chat_prompt(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                          template_kwargs: dict[str, Any] | None = None, fit_context: bool = False) -> ChatPrompt:
        """The chat rendered by the model's template, tokenized, with the template's stop strings. `tools`
        and `template_kwargs` reach a Jinja template as its variables; a named format ignores them.
        `fit_context`: a prompt to generate from, refused (ContextLengthError) before it is tokenized when
        its text cannot fit the context."""
        ...

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    async def detokenize(self, tokens: list[int]) -> str: ...

    def generate(self, requests: list[Request]) -> AsyncGenerator[list[Indexed], None]:
        """Each request as its own sequence, decoded together with every other on this model. Yields an
        empty list once the model has checked and queued the requests (a stream can answer its status
        line then), then the pieces of one decode step at a time. A request the model cannot run (prompt
        past the context, bad grammar) raises before anything is yielded. Leaving the iterator early
        cancels what is left."""
        ...

    async def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        """One pooled, normalised vector per input: a text, or the model's own token ids."""
        ...

    async def close(self) -> None:
        """End the model and give its memory back. Requests still running on it fail."""
        ...

    async def exited(self) -> Exit:
        """Wait until the model has ended, for whatever reason."""
        ...

    def stats(self) -> dict[str, Any]:
        """What /admin/pool and the metrics show of it: process id, resident memory, thread counts, KV
        cells allocated and in use (`kv_cells`, `kv_cells_used`, `kv_cache_usage` from 0 to 1). Cheap:
        called at every scrape, it must not wait for the model."""
        ...

