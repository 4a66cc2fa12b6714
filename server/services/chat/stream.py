"""The core's events as chat stream chunks in OpenAI's delta format: n choices, content, reasoning,
logprobs and tool calls (streamed as they are written: the first delta of a call has its id, type and
name, the next ones pieces of its arguments)."""

from __future__ import annotations

from server.engine import Usage
from server.protocol.chat_response import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    FunctionDelta,
    ToolCallDelta,
)
from server.protocol.common import Usage as WireUsage
from server.services.generation.choices import total_usage
from server.services.generation.events import CallDelta, Event, Finished, Reasoning, Started, Text
from server.services.generation.logprobs import chat_logprobs


class ChunkBuilder:
    def __init__(self, chunk_id: str, created: int, model: str, n: int, *, with_logprobs: bool) -> None:
        self._id, self._created, self._model = chunk_id, created, model
        self._started = [False] * n
        self._with_logprobs = with_logprobs
        self._usages: list[Usage | None] = [None] * n

    def chunks(self, events: list[Event]) -> list[ChatCompletionChunk]:
        """All the chunks for one step's events; a choice's first chunk names the role."""
        out: list[ChatCompletionChunk] = []
        for item in events:
            if isinstance(item, Started):
                continue
            index = item.index
            if not self._started[index]:
                self._started[index] = True
                out += self._chunk(index, ChatDelta(role="assistant", content="", refusal=None))
            if isinstance(item, Reasoning):
                out += self._chunk(index, ChatDelta(reasoning_content=item.text))
            elif isinstance(item, Text):
                logprobs = chat_logprobs(item.logprobs) if self._with_logprobs and item.logprobs else None
                out += self._chunk(index, ChatDelta(content=item.text), logprobs=logprobs)
            elif isinstance(item, CallDelta):  # a call as it is written: id and name first, then arguments
                if item.id is not None and item.name is not None:
                    delta = ToolCallDelta(index=item.call, id=item.id, type="function",
                                          function=FunctionDelta(name=item.name, arguments=item.arguments))
                else:
                    delta = ToolCallDelta(index=item.call, function=FunctionDelta(arguments=item.arguments))
                out += self._chunk(index, ChatDelta(tool_calls=[delta]))
            elif isinstance(item, Finished):
                self._usages[index] = item.usage
                last = self._chunk(index, ChatDelta(), item.reason)
                if item.stop is not None:
                    last[0].choices[0].stop_reason = item.stop
                out += last
        return out

    def usage(self) -> tuple[int, int, int]:
        return total_usage(self._usages)

    @property
    def usages(self) -> list[Usage | None]:
        return self._usages

    def usage_chunk(self, usage: WireUsage) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=[], usage=usage)

    def _chunk(self, index: int, delta: ChatDelta, finish: str | None = None,
               logprobs: object = None) -> list[ChatCompletionChunk]:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)  # type: ignore[arg-type]
        return [ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=[choice])]
