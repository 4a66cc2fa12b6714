"""The engine with the real model, below the HTTP layer: grammars, context checks, stop flag."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.engine import LlamaEngine, Request, SamplingParams
from server.errors import ContextLengthError, EngineError
from server.registry import ModelSpec
from server.services.tools import OPEN, parse_calls, plan_tools
from server.protocol.chat import ChatCompletionRequest, ChatMessage, Tool, FunctionDef

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    if not MODEL.exists():
        pytest.fail("run `make models` first")
    loaded = LlamaEngine("t", ModelSpec(path=str(MODEL), n_ctx=512))
    yield loaded
    loaded.close()


def text_of(engine: LlamaEngine, request: Request, stop: threading.Event | None = None) -> tuple[str, str | None]:
    text, finish = "", None
    for piece in engine.generate(request, stop or threading.Event()):
        text += piece.text
        finish = piece.finish_reason or finish
    return text, finish


def test_lazy_grammar_constrains_only_after_the_trigger(engine: LlamaEngine) -> None:
    """The examples show calls without `days`; once the model writes the tag, the grammar demands it."""
    tool = Tool(function=FunctionDef(name="get_weather", parameters={
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}))
    plan = plan_tools(ChatCompletionRequest(model="t", messages=[ChatMessage(role="user", content="x")],
                                            tools=[tool]))
    assert plan is not None and plan.lazy
    example = f'{OPEN}{{"name": "get_weather", "arguments": {{"city": "Rome"}}}}</tool_call>'
    prompt = engine.tokenize(f"Weather lookups.\nQ: Rome?\nA: {example}\nQ: Oslo?\nA: {example.replace('Rome', 'Oslo')}"
                             "\nQ: Paris?\nA:")
    sampling = SamplingParams(temperature=0.0, grammar=plan.grammar, grammar_trigger=OPEN)
    text, _ = text_of(engine, Request(prompt=prompt, max_tokens=60, stop=["\nQ:"], sampling=sampling))
    assert OPEN in text, text
    _, calls = parse_calls(text)
    arguments = json.loads(calls[0].function.arguments)
    assert set(arguments) == {"city", "days"} and isinstance(arguments["days"], int)


def test_context_is_checked_before_decoding(engine: LlamaEngine) -> None:
    prompt = engine.tokenize("hello " * 10)
    with pytest.raises(ContextLengthError) as info:
        list(engine.generate(Request(prompt=prompt, max_tokens=600, stop=[], sampling=SamplingParams()),
                             threading.Event()))
    assert "512" in info.value.message and "600" in info.value.message


def test_a_set_stop_flag_ends_generation_without_a_finish(engine: LlamaEngine) -> None:
    stop = threading.Event()
    pieces = []
    for piece in engine.generate(Request(prompt=engine.tokenize("Once upon a time"), max_tokens=200, stop=[],
                                         sampling=SamplingParams(temperature=0.0)), stop):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    # The decode loop runs on its own thread: a token or two may already be on their way.
    assert 3 <= len(pieces) <= 6 and all(p.finish_reason is None for p in pieces)


def test_usage_counts_cached_prefix(engine: LlamaEngine) -> None:
    prompt = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 3)
    request = Request(prompt=prompt, max_tokens=4, stop=[], sampling=SamplingParams(temperature=0.0))
    first = list(engine.generate(request, threading.Event()))[-1].usage
    second = list(engine.generate(request, threading.Event()))[-1].usage
    assert first.completion_tokens == second.completion_tokens == 4
    assert second.cached_tokens == len(prompt) - 1 and second.prompt_tokens == len(prompt)


def test_tiny_batches_chunk_prompts_and_starve_nobody() -> None:
    """Three sequences share a batch of 3 tokens: prompts go in chunks, every sequence still finishes,
    with the same text as when it ran alone."""
    small = LlamaEngine("s", ModelSpec(path=str(MODEL), n_ctx=256, n_parallel=3, n_batch=3))
    try:
        prompts = [small.tokenize(t) for t in ("Once upon a time", "The capital of France is", "1, 2, 3,")]
        requests = [Request(prompt=p, max_tokens=6, stop=[], sampling=SamplingParams(temperature=0.0))
                    for p in prompts]
        alone = ["".join(piece.text for piece in small.generate(r, threading.Event())) for r in requests]
        together = [""] * 3
        finished = set()
        for index, piece in small.generate_many(requests, threading.Event()):
            together[index] += piece.text
            if piece.finish_reason:
                finished.add(index)
        assert finished == {0, 1, 2}
        assert together == alone
    finally:
        small.close()


def test_a_failed_decode_fails_its_batch_and_the_loop_serves_the_next_request(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.engine.slots as slots

    real_decode = slots.llama_cpp.llama_decode
    failures = iter([True])

    def flaky_decode(ctx: object, batch: object) -> int:
        return -1 if next(failures, False) else real_decode(ctx, batch)

    monkeypatch.setattr(slots.llama_cpp, "llama_decode", flaky_decode)
    request = Request(prompt=engine.tokenize("Once upon a time"), max_tokens=3, stop=[],
                      sampling=SamplingParams(temperature=0.0))
    with pytest.raises(EngineError, match="llama_decode failed"):
        list(engine.generate(request, threading.Event()))
    pieces = list(engine.generate(request, threading.Event()))  # the decode thread is still there
    assert pieces[-1].finish_reason == "length" and pieces[-1].usage.completion_tokens == 3
