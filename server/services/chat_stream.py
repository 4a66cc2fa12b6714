"""Chat stream chunks in OpenAI's delta format, for n choices, content, logprobs and tool calls.

`ChunkBuilder` turns the engine's per-step pieces into `ChatCompletionChunk` structs; the chat route
encodes them as SSE, and other APIs (Responses, Messages) map the same structs to their own events."""

from __future__ import annotations

from server.engine import Piece, Usage
from server.protocol.chat_response import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    FunctionDelta,
    ToolCallDelta,
)
from server.protocol.common import Usage as WireUsage
from server.services import tools
from server.services.choices import Indexed, total_usage
from server.services.logprobs import chat_logprobs


class ChunkBuilder:
    def __init__(self, chunk_id: str, created: int, model: str, n: int, *, with_tools: bool,
                 with_logprobs: bool) -> None:
        self._id, self._created, self._model = chunk_id, created, model
        self._started = [False] * n
        self._filters = [tools.ContentFilter() for _ in range(n)] if with_tools else None
        self._with_logprobs = with_logprobs
        self._usages: list[Usage | None] = [None] * n
        self._finishes: list[str | None] = [None] * n

    def chunks(self, batch: list[Indexed]) -> list[ChatCompletionChunk]:
        """All the chunks for one batch of pieces."""
        out: list[ChatCompletionChunk] = []
        for index, piece in batch:
            out += self._piece(index, piece)
        return out

    @property
    def usages(self) -> list[Usage | None]:
        return self._usages

    @property
    def finish_reasons(self) -> list[str]:
        return [f for f in self._finishes if f is not None]

    def usage(self) -> tuple[int, int, int]:
        return total_usage(self._usages)

    def usage_chunk(self, usage: WireUsage) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=[], usage=usage)

    def _chunk(self, index: int, delta: ChatDelta, finish: str | None = None,
               logprobs: object = None) -> list[ChatCompletionChunk]:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)  # type: ignore[arg-type]
        return [ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=[choice])]

    def _piece(self, index: int, piece: Piece) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        if not self._started[index]:
            self._started[index] = True
            out += self._chunk(index, ChatDelta(role="assistant", content=""))
        text = piece.text
        content_filter = self._filters[index] if self._filters else None
        if content_filter is not None:
            text = content_filter.feed(text)
        logprobs = chat_logprobs(piece.logprobs) if self._with_logprobs and piece.logprobs else None
        if text or logprobs:
            out += self._chunk(index, ChatDelta(content=text), logprobs=logprobs)
        if piece.finish_reason is None:
            return out
        self._usages[index] = piece.usage
        finish = piece.finish_reason
        if content_filter is not None:
            out_text, calls = tools.parse_calls(content_filter.text)
            if calls:
                finish = "tool_calls"
                deltas = [ToolCallDelta(index=i, id=c.id, type="function",
                                        function=FunctionDelta(name=c.function.name, arguments=c.function.arguments))
                          for i, c in enumerate(calls)]
                out += self._chunk(index, ChatDelta(tool_calls=deltas))
            else:
                rest = content_filter.remainder()
                if rest:
                    out += self._chunk(index, ChatDelta(content=rest))
        self._finishes[index] = finish
        last = self._chunk(index, ChatDelta(), finish)
        if piece.stop is not None and finish == "stop":
            last[0].choices[0].stop_reason = piece.stop
        return out + last

