"""The Messages API's mapping to and from the chat service, without a model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import msgspec
import pytest

from server.engine import Usage as EngineUsage
from server.engine.text import StopMatcher
from server.errors import InvalidRequestError, ModelCrashedError
from server.http.streaming import anthropic_sse
from server.protocol.anthropic import CountTokensRequest, MessagesRequest
from server.services.anthropic.service import conversation, message_usage, stop_reason
from server.services.anthropic.stream import EventMapper, frame
from server.services.generation.events import Call, CallDelta, Calls, Event, Finished, Reasoning, Started, Text


def request(**fields: object) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, MessagesRequest)


def test_system_blocks_and_a_tool_round_trip_become_the_cores_messages() -> None:
    chat = conversation(request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "22 C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "down", "is_error": True},
                {"type": "text", "text": "Thanks."},
            ]},
        ],
        tools=[{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "weather"},
        stop_sequences=["END"], top_k=5, temperature=0.5,
    ))
    shape = [(m.role, m.content) for m in chat.messages]
    assert shape == [
        ("system", "Be brief.\n\nBe kind."),
        ("user", "Weather in Paris?"),
        ("assistant", "Let me look."),
        ("tool", "22 C"),
        ("tool", "Error: down"),
        ("user", "Thanks."),
    ]
    call = chat.messages[2].calls[0]
    assert (call.id, call.name) == ("toolu_1", "weather")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert [m.call_id for m in chat.messages[3:5]] == ["toolu_1", "toolu_2"]
    assert chat.tools[0].parameters == {"type": "object"} and chat.tools[0].description == "Weather now"
    assert (chat.tool_choice, chat.forced) == ("required", "weather")
    assert (chat.stop, chat.top_k, chat.temperature, chat.max_tokens) == (["END"], 5, 0.5, 32)


@pytest.mark.parametrize(("sent", "chat"), [("auto", "auto"), ("any", "required"), ("none", "none")])
def test_tool_choice_types(sent: str, chat: str) -> None:
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    assert conversation(request(tools=tools, tool_choice={"type": sent})).tool_choice == chat


def test_count_tokens_needs_no_max_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"}
    chat = conversation(msgspec.convert(body, CountTokensRequest))
    assert [m.role for m in chat.messages] == ["system", "user"]


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}],
     "messages[0].content[0]"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                    "content": [{"type": "document", "source": {}}]}]}],
     "messages[0].content[0].content[0]"),
    ([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}],
     "messages[0].content[0]"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "r"}]}], "messages[1].content[0]"),
])
def test_blocks_a_text_model_cannot_take_are_refused_by_name(messages: list[object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        conversation(request(messages=messages))
    assert caught.value.param == param


def test_server_tools_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="web_search_20250305") as caught:
        conversation(request(tools=[{"type": "web_search_20250305", "name": "web_search", "input_schema": {}}]))
    assert caught.value.param == "tools[0]"


def test_output_config_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = conversation(request(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert (chat.response_format, chat.schema) == ("json_schema", schema)


@pytest.mark.parametrize(("finish", "stop", "expected"), [
    ("stop", None, ("end_turn", None)),
    ("stop", "<|im_end|>", ("end_turn", None)),  # the template's own stop string ends the turn
    ("stop", "END", ("stop_sequence", "END")),
    ("length", None, ("max_tokens", None)),
    ("tool_calls", None, ("tool_use", None)),
])
def test_stop_reason(finish: str, stop: str | None, expected: tuple[str, str | None]) -> None:
    assert stop_reason(finish, stop, ["END"]) == expected


def test_usage_splits_cached_prompt_tokens_like_anthropic() -> None:
    got = message_usage(30, 5, 20)
    assert (got.input_tokens, got.cache_read_input_tokens, got.output_tokens) == (10, 20, 5)


def events_of(mapper: EventMapper, steps: list[list[Event]]) -> list[dict]:  # type: ignore[type-arg]
    return [msgspec.to_builtins(e) for step in steps for e in mapper.events(step)]


def test_stream_events_for_text_then_a_tool_call() -> None:
    usage = EngineUsage(prompt_tokens=9, completion_tokens=4, cached_tokens=0)
    steps: list[list[Event]] = [
        [Started(9), Text(0, "Let")],
        [Text(0, " me")],
        [CallDelta(0, 0, "call_abc", "weather", '{"city":')],  # the call as it is written
        [CallDelta(0, 0, None, None, '"Paris"}'), Calls(0, [Call("call_abc", "weather", '{"city":"Paris"}')]),
         Finished(0, "tool_calls", None, usage)],
    ]
    events = events_of(EventMapper("m", []), steps)
    assert [e["type"] for e in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert events[0]["message"]["usage"]["input_tokens"] == 9  # the prompt's size, from the start
    assert [e["index"] for e in events[2:10]] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert events[3]["delta"] == {"type": "text_delta", "text": "Let"}
    assert events[6]["content_block"] == {"type": "tool_use", "id": "toolu_abc", "name": "weather", "input": {}}
    assert [events[i]["delta"]["partial_json"] for i in (7, 8)] == ['{"city":', '"Paris"}']
    assert events[10]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[10]["usage"]["input_tokens"] == 9 and events[10]["usage"]["output_tokens"] == 4


def test_stream_names_the_stop_sequence_and_frames_events() -> None:
    mapper = EventMapper("m", ["END"])
    usage = EngineUsage(prompt_tokens=9, completion_tokens=2, cached_tokens=3)
    steps: list[list[Event]] = [[Started(9), Text(0, "ok")], [Finished(0, "stop", "END", usage)]]
    events = [e for step in steps for e in mapper.events(step)]
    assert frame(events[-2]).startswith(b'event: message_delta\ndata: {"type":"message_delta"')
    delta = msgspec.to_builtins(events[-2])
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert (delta["usage"]["input_tokens"], delta["usage"]["cache_read_input_tokens"]) == (6, 3)


def test_a_failure_mid_stream_is_an_error_event_in_anthropics_shape() -> None:
    async def failing() -> AsyncGenerator[bytes, None]:
        yield b"event: ping\ndata: {}\n\n"
        raise ModelCrashedError("The worker died.")

    async def read() -> list[bytes]:
        return [part async for part in anthropic_sse(failing())]

    parts = asyncio.run(read())
    assert parts[0].startswith(b"event: ping")
    name, data = parts[1].decode().strip().split("\n")
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "The worker died."}}


def test_stop_matcher_tells_which_stop_string_hit() -> None:
    matcher = StopMatcher(["zz", "END"])
    assert matcher.feed("abc EN") == ("abc ", False) and matcher.matched is None
    assert matcher.feed("D more") == ("", True) and matcher.matched == "END"


def test_a_max_tokens_past_the_whole_context_means_as_much_as_fits() -> None:
    assert conversation(request(max_tokens=32000), n_ctx=2048).max_tokens is None  # Claude Code's size
    assert conversation(request(max_tokens=200), n_ctx=2048).max_tokens == 200


def test_reasoning_streams_as_a_thinking_block_before_the_text() -> None:
    usage = EngineUsage(prompt_tokens=9, completion_tokens=4, cached_tokens=0)
    steps: list[list[Event]] = [
        [Started(9), Reasoning(0, "France...")],
        [Reasoning(0, " Paris.")],
        [Text(0, "Paris"), Finished(0, "stop", None, usage)],
    ]
    events = events_of(EventMapper("m", []), steps)
    blocks = [e for e in events if e["type"].startswith("content_block")]
    assert [(e["type"], e["index"]) for e in blocks] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
    ]
    assert blocks[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert blocks[2]["delta"] == {"type": "thinking_delta", "thinking": " Paris."}
    assert blocks[4]["content_block"] == {"type": "text", "text": ""}
