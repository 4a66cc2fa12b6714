"""Services and SSE framing with a scripted engine: what the request road does with pieces, usage,
tool calls, a model that dies mid-stream and a client that leaves, without loading a model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from server.engine import ChatPrompt, Embeddings, Exit, Indexed, Model, Piece, Request, Usage
from server.errors import ModelCrashedError
from server.pool import ModelPool
from server.protocol.chat import ChatCompletionRequest, ChatMessage, FunctionDef, Tool
from server.services.chat.service import complete_chat, stream_chat
from server.http.streaming import started
from tests.unit.test_pool_policy import registry, spec


class ScriptedModel:
    """Implements the engine interface: each generation replays `script` (steps of pieces), then raises
    `fail` if set. Records the requests it got and whether a consumer left early."""

    def __init__(self, alias: str, script: list[list[Indexed]], fail: BaseException | None = None) -> None:
        self.alias, self.n_ctx, self.n_vocab = alias, 2048, 100
        self.chat_template: str | None = None
        self.script, self.fail = script, fail
        self.requests: list[list[Request]] = []
        self.left_early = False
        self._ended: asyncio.Future[Exit] | None = None

    async def chat_prompt(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                          template_kwargs: dict[str, Any] | None = None, fit_context: bool = False) -> ChatPrompt:
        return ChatPrompt(tokens=[1, 2, 3], stop=["<|im_end|>"])

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    async def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    async def generate(self, requests: list[Request]) -> AsyncIterator[list[Indexed]]:
        self.requests.append(requests)
        finished = False
        try:
            for step in self.script:
                await asyncio.sleep(0)
                yield step
            if self.fail is not None:
                raise self.fail
            finished = True
        finally:
            self.left_early = self.left_early or (not finished and self.fail is None)

    async def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        return Embeddings([[1.0, 0.0] for _ in inputs], sum(len(i) for i in inputs))

    def _end(self) -> asyncio.Future[Exit]:
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    async def close(self) -> None:
        if not self._end().done():
            self._end().set_result(Exit(reason="closed", code=0))

    async def exited(self) -> Exit:
        return await asyncio.shield(self._end())

    def stats(self) -> dict[str, Any]:
        return {"pid": 1, "rss_bytes": 0}


def usage(generated: int) -> Usage:
    return Usage(prompt_tokens=3, completion_tokens=generated, cached_tokens=1)


def pool_of(model: ScriptedModel) -> ModelPool[Any]:
    async def loader(alias: str, _spec: object) -> Model:
        return model

    return ModelPool(registry({"m": spec(n_parallel=2)}), loader)


def chat(**kwargs: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")], **kwargs)


def events(body: bytes) -> list[str]:
    return [line[len("data: "):] for line in body.decode().split("\n\n") if line]


def test_a_non_streamed_chat_gathers_steps_into_one_message_with_usage() -> None:
    model = ScriptedModel("m", [[(0, Piece("The capital "))], [(0, Piece("is Paris."))],
                                [(0, Piece("", finish_reason="stop", usage=usage(5)))]])

    async def scenario() -> None:
        reply = await complete_chat(pool_of(model), chat(max_tokens=8, stop="END"))
        assert reply.choices[0].message.content == "The capital is Paris."
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens_details.cached_tokens == 1
        (request,) = model.requests[0]
        assert request.prompt == [1, 2, 3] and request.max_tokens == 8
        assert request.stop == ["END", "<|im_end|>"]  # the request's stops, then the template's

    asyncio.run(scenario())


def test_a_tool_call_in_the_text_becomes_tool_calls() -> None:
    call = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    model = ScriptedModel("m", [[(0, Piece(call[:20]))], [(0, Piece(call[20:], "stop", usage=usage(9)))]])
    tools = [Tool(function=FunctionDef(name="weather", parameters={"type": "object"}))]

    async def scenario() -> None:
        reply = await complete_chat(pool_of(model), chat(tools=tools))
        assert reply.choices[0].finish_reason == "tool_calls"
        (tool_call,) = reply.choices[0].message.tool_calls
        assert tool_call.function.name == "weather" and json.loads(tool_call.function.arguments) == {"city": "Oslo"}
        grammar = model.requests[0][0].sampling.grammar
        assert grammar is not None and grammar.lazy and grammar.param == "tools"

    asyncio.run(scenario())


def test_a_tool_aware_template_gets_tools_as_data_and_its_family_call_is_streamed() -> None:
    """A Llama-3-style template: tools reach the template, the grammar opens on `{"name"`, and a call in
    that family's format after streamed reasoning becomes tool-call deltas."""
    call = '{"name": "weather", "parameters": {"city": "Oslo"}}'
    model = ScriptedModel("m", [[(0, Piece("<think>hm"))], [(0, Piece("</think>"))], [(0, Piece(call[:9]))],
                                [(0, Piece(call[9:], "stop", usage=usage(9)))]])
    model.chat_template = "{% if tools %}<|python_tag|>{{ tools | tojson }}{% endif %}<think>"
    seen: list[Any] = []
    original = model.chat_prompt

    async def chat_prompt(messages: list[dict[str, Any]], **kwargs: Any) -> ChatPrompt:
        seen.append(kwargs)
        return await original(messages, **kwargs)

    model.chat_prompt = chat_prompt  # type: ignore[method-assign]
    tools = [Tool(function=FunctionDef(name="weather", parameters={"type": "object"}))]

    async def scenario() -> list[str]:
        stream = await started(stream_chat(pool_of(model), chat(tools=tools, stream=True)))
        return events(b"".join([chunk async for chunk in stream]))

    out = [json.loads(e) for e in asyncio.run(scenario())[:-1]]
    deltas = [e["choices"][0]["delta"] for e in out]
    assert seen[0]["tools"][0]["function"]["name"] == "weather"
    grammar = model.requests[0][0].sampling.grammar
    assert grammar is not None and grammar.lazy and grammar.trigger == '{"name"' and grammar.open == ""
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hm"
    assert "".join(d.get("content", "") for d in deltas) == ""
    (tool_call,) = [c for d in deltas for c in d.get("tool_calls", [])]
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Oslo"}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_model_that_dies_mid_stream_ends_it_with_an_error_event_then_done() -> None:
    crash = ModelCrashedError("The model `m` stopped while serving this request (its worker killed by signal 9).")
    model = ScriptedModel("m", [[(0, Piece("Once"))], [(0, Piece(" upon"))]], fail=crash)

    async def scenario() -> list[str]:
        stream = await started(stream_chat(pool_of(model), chat(stream=True)))
        return events(b"".join([chunk async for chunk in stream]))

    out = asyncio.run(scenario())
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in out[:-2])
    assert text == "Once upon"
    error = json.loads(out[-2])["error"]
    assert error["code"] == "model_crashed" and error["type"] == "server_error"
    assert out[-1] == "[DONE]"


def test_a_client_that_leaves_a_stream_leaves_the_generation_and_frees_the_turn() -> None:
    model = ScriptedModel("m", [[(0, Piece(f"t{i} "))] for i in range(100)])

    async def scenario() -> None:
        pool = pool_of(model)
        stream = await started(stream_chat(pool, chat(stream=True)))
        async for _ in stream:
            break
        await stream.aclose()  # what the server does when the client disconnects
        assert model.left_early
        row = next(r for r in pool.snapshot() if r["id"] == "m")
        assert row["running"] == 0  # the lease went back with the generator

    asyncio.run(scenario())


def test_a_stream_is_under_way_once_the_model_takes_it_and_passes_no_empty_write() -> None:
    """The model's empty first step (it has queued the request) lets the status line go out while the
    prompt is evaluated; that step is not written, and the first token is its own write."""
    evaluated = asyncio.Event()
    model = ScriptedModel("m", [[], [(0, Piece("Paris", finish_reason="stop", usage=usage(1)))]])
    replay = model.generate

    async def generate(requests: list[Request]) -> AsyncIterator[list[Indexed]]:
        async for step in replay(requests):
            if step:
                await evaluated.wait()  # the prompt is still being evaluated
            yield step

    model.generate = generate  # type: ignore[method-assign]

    async def scenario() -> list[bytes]:
        stream = await asyncio.wait_for(started(stream_chat(pool_of(model), chat(stream=True))), 5)
        evaluated.set()
        return [chunk async for chunk in stream]

    writes = asyncio.run(scenario())
    assert all(writes), "no empty write"
    out = events(b"".join(writes))
    assert json.loads(out[1])["choices"][0]["delta"]["content"] == "Paris" and out[-1] == "[DONE]"
