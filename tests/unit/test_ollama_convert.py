"""Ollama's requests in the core's terms, without a model: keep_alive durations, options, format, think,
tool history matched by function name, and the replies folded into one."""

from __future__ import annotations

import math

import msgspec
import pytest

from server.errors import InvalidRequestError
from server.protocol import ollama as wire
from server.services.ollama.convert import chat_conversation
from server.services.ollama.generate import whole
from server.services.ollama.models import keep_alive_seconds


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), (30, 30.0), (2.5, 2.5), ("5m", 300.0), ("1h30m", 5400.0),
    ("300ms", 0.3), ("1m30.5s", 90.5), ("-1", math.inf), (-1, math.inf), ("-5m", math.inf), ("3600", 3600.0),
    (1e308, math.inf), ("9999999999h", math.inf),  # past any expiry a date can hold: never
])
def test_keep_alive_durations(value: float | str | None, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == (pytest.approx(seconds) if seconds not in (None, math.inf) else seconds)


@pytest.mark.parametrize("value", ["soon", "5x", "m5", "", "5m junk", "nan"])
def test_keep_alive_refuses_what_is_no_duration(value: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        keep_alive_seconds(value)
    assert refused.value.param == "keep_alive"


def _chat(**body: object) -> wire.ChatRequest:
    return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "Hi"}], **body}, wire.ChatRequest)


def test_options_format_and_think() -> None:
    conv = chat_conversation("m", _chat(options={"temperature": 0.2, "top_k": 0, "min_p": 0.1, "num_predict": 7,
                                                 "stop": "END", "repeat_penalty": 1.3, "seed": 5, "num_ctx": 99},
                                        format={"type": "object"}, think=False))
    assert (conv.temperature, conv.top_k, conv.min_p, conv.max_tokens, conv.stop) == (0.2, None, 0.1, 7, ["END"])
    assert (conv.repeat_penalty, conv.seed, conv.response_format, conv.schema) == (1.3, 5, "json_schema",
                                                                                   {"type": "object"})
    assert conv.thinking is False and conv.reasoning_effort is None
    assert chat_conversation("m", _chat(options={"num_predict": -1})).max_tokens is None  # the alias's cap
    assert chat_conversation("m", _chat(format="json")).response_format == "json_object"
    assert chat_conversation("m", _chat(format="")).response_format is None
    assert chat_conversation("m", _chat(think="high")).reasoning_effort == "high"
    for bad in ({"think": "very"}, {"format": "yaml"}, {"options": {"num_predict": 0}},
                {"tool_choice": {"function": {}}}):
        with pytest.raises(InvalidRequestError):
            chat_conversation("m", _chat(**bad))


def test_tool_history_matched_by_name() -> None:
    conv = chat_conversation("m", _chat(messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_name": "weather", "content": "sunny"},
        {"role": "tool", "tool_name": "weather", "content": "rainy"},
    ], tool_choice={"type": "function", "function": {"name": "weather"}},
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]))
    calls = conv.messages[1].calls
    assert [c.arguments for c in calls] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert [m.call_id for m in conv.messages[2:]] == [calls[0].id, calls[1].id]  # each result its own call
    assert (conv.tool_choice, conv.forced, conv.tools[0].name) == ("required", "weather", "weather")


def test_replies_fold_into_one() -> None:
    parts = [{"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "Par", "thinking": "hm"},
              "done": False},
             {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "is"}, "done": False},
             {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "", "tool_calls": [
                 {"function": {"name": "f", "arguments": {}}}]}, "done": False},
             {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "eval_count": 3}]
    folded = whole(parts)
    assert folded["message"] == {"role": "assistant", "content": "Paris", "thinking": "hm",
                                 "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    assert folded["done"] is True and folded["eval_count"] == 3
