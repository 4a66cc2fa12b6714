"""Native tool-call formats and the reasoning split, on text: the parsers the chat route runs on output."""

from __future__ import annotations

import json

import pytest

from server.services.generation import tool_formats
from server.services.generation.output import ChoiceOutput, OutputFormat, whole
from server.services.generation.reasoning import ReasoningSplitter, split, thinks
from server.services.generation.tool_formats import HERMES, LLAMA3, MISTRAL


@pytest.mark.parametrize(("template", "expected"), [
    ("{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>", HERMES),
    ("{% if tools %}<|python_tag|>{% endif %}", LLAMA3),
    ("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]", MISTRAL),
    ("{% if tools %}{{ tools }}{% endif %}", HERMES),  # nothing family-specific: the tags we describe
])
def test_family_is_read_from_the_template(template: str, expected: tool_formats.ToolFormat) -> None:
    assert tool_formats.family(template) is expected


@pytest.mark.parametrize(("fmt", "text"), [
    (HERMES, 'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    (LLAMA3, 'Checking. {"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (LLAMA3, 'Checking. <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (MISTRAL, 'Checking. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
])
def test_each_family_parses_into_content_and_a_call(fmt: tool_formats.ToolFormat, text: str) -> None:
    content, calls = tool_formats.parse(fmt, text)
    assert content == "Checking."
    (call,) = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}


def test_several_calls_and_ids_per_family() -> None:
    text = '[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]'
    _, calls = tool_formats.parse(MISTRAL, text)
    assert [c.name for c in calls] == ["a", "b"]
    assert all(len(c.id) == 9 and c.id.isalnum() for c in calls)  # Mistral templates check the length
    _, calls = tool_formats.parse(HERMES, '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
                                          '<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert [c.name for c in calls] == ["a", "b"] and calls[0].id.startswith("call_")
    mapped = MISTRAL.history_id("call_0123456789abcdef")
    assert len(mapped) == 9 and mapped.isalnum() and mapped == MISTRAL.history_id("call_0123456789abcdef")
    assert MISTRAL.history_id("abcdefghi") == "abcdefghi" and HERMES.history_id("call_1") == "call_1"


@pytest.mark.parametrize(("fmt", "text"), [
    (HERMES, '<tool_call>{"name": "f", "argu'),  # cut short by max_tokens
    (HERMES, '<tool_call>{"name": "f", "arguments": {}}'),  # never closed
    (LLAMA3, '{"nome": "f"}'),
    (MISTRAL, "[TOOL_CALLS] not json"),
])
def test_what_is_not_a_complete_call_stays_content(fmt: tool_formats.ToolFormat, text: str) -> None:
    assert tool_formats.parse(fmt, text) == (text, [])


def test_reasoning_splits_off_when_the_prompt_opened_it() -> None:
    assert split("The user wants a city.\n</think>\n\nParis", open_at_start=True) == ("The user wants a city.", "Paris")
    assert split("<think>hm</think>Paris", open_at_start=False) == ("hm", "Paris")
    assert split("Paris", open_at_start=False) == (None, "Paris")
    assert split("still thinking", open_at_start=True) == ("still thinking", "")  # cut short: all reasoning


def test_reasoning_streams_with_tags_split_across_pieces() -> None:
    splitter = ReasoningSplitter(open_at_start=False)
    pieces = ["<th", "ink>ab", "c</th", "ink>", "\n", "Par", "is"]
    out = [splitter.feed(p) for p in pieces] + [splitter.finish()]
    assert "".join(r for r, _ in out) == "abc"
    assert "".join(c for _, c in out) == "Paris"
    assert out[0] == ("", "")  # `<th` might open a tag: held


def test_streamed_tool_call_after_reasoning() -> None:
    output = ChoiceOutput(OutputFormat(tools=HERMES, thinks=True, reasoning_open=True))
    deltas = [output.feed(p) for p in ["look", " up</think>", "<tool_", 'call>{"name": "f", "arguments": {}}',
                                       "</tool_call>"]]
    thought, rest, pieces, calls = output.finish()
    assert "".join(r for r, _, _ in deltas) + thought == "look up"
    assert "".join(c for _, c, _ in deltas) + rest == ""
    assert calls[0].name == "f"
    streamed = [p for _, _, ps in deltas for p in ps] + pieces
    assert (streamed[0].id, streamed[0].name) == (calls[0].id, "f")
    assert "".join(p.arguments for p in streamed) == calls[0].arguments == "{}"
    assert whole(OutputFormat(tools=LLAMA3, thinks=True), '<think>x</think>{"name": "f", "parameters": {}}')[0] == "x"


def test_which_templates_think() -> None:
    assert thinks("{{ '<think>\\n' }}", "auto") and not thinks("{{ '<think>' }}", "none")
    assert not thinks("plain", "auto") and thinks("plain", "deepseek") and not thinks(None, "auto")


def test_streamed_reasoning_is_trimmed_as_the_whole_answer_is() -> None:
    text = "\n  The capital\n is Paris.  \n</think>\n\nParis"
    for cut in range(len(text) + 1):
        splitter = ReasoningSplitter(open_at_start=True)
        parts = [splitter.feed(text[:cut]), splitter.feed(text[cut:]), splitter.finish()]
        assert ("".join(p[0] for p in parts), "".join(p[1] for p in parts)) == split(text, open_at_start=True), cut
    cut_short = ReasoningSplitter(open_at_start=True)
    said = cut_short.feed("\nThe capital \n")[0] + cut_short.finish()[0]
    assert said == split("\nThe capital \n", open_at_start=True)[0] == "The capital"
