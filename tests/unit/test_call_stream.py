"""Tool calls streamed as they are written (server/services/generation/call_stream.py): whatever the pieces
the text arrives in, each call's pieces joined are the final call (same id, name, and arguments the same
JSON as the parse at the end finds), for every family's format."""

from __future__ import annotations

import json
import random

import pytest

from server.services.generation.call_stream import CallPiece
from server.services.generation.output import ChoiceOutput, OutputFormat
from server.services.generation.tool_formats import HERMES, LLAMA3, MISTRAL, ToolFormat

HERMES_TWO = ('Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris \\"Ville\\" {x}",\n'
              '  "days": [1, 2], "opts": {"unit": "C"}}}\n</tool_call>\n<tool_call>{"name": "get_time", '
              '"arguments": {}}</tool_call>')
MISTRAL_TWO = '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "}"}}]'
LLAMA3_ONE = '{"name": "lookup", "parameters": {"q": "caf\\u00e9 \\\\ ok", "n": null}}'
NAME_LAST = '<tool_call>{"arguments": {"k": true}, "name": "late"}</tool_call>'


def _run(fmt: ToolFormat, text: str, cuts: list[int]) -> tuple[str, list[CallPiece], list]:  # type: ignore[type-arg]
    output = ChoiceOutput(OutputFormat(tools=fmt))
    content, pieces = "", []
    for start, end in zip([0, *cuts], [*cuts, len(text)]):
        _, text_part, found = output.feed(text[start:end])
        content += text_part
        pieces += found
    _, rest, found, calls = output.finish()
    return content + rest, pieces + found, calls


@pytest.mark.parametrize(("fmt", "text", "names"), [
    (HERMES, HERMES_TWO, ["get_weather", "get_time"]), (MISTRAL, MISTRAL_TWO, ["a", "b"]),
    (LLAMA3, LLAMA3_ONE, ["lookup"]), (HERMES, NAME_LAST, ["late"]),
])
def test_pieces_join_into_the_final_calls_whatever_the_cuts(fmt: ToolFormat, text: str, names: list[str]) -> None:
    rng = random.Random(7)
    for trial in range(60):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(trial % 12, len(text) - 1)))
        if trial == 0:
            cuts = list(range(1, len(text)))  # one character at a time
        content, pieces, calls = _run(fmt, text, cuts)
        assert [c.name for c in calls] == names
        for i, call in enumerate(calls):
            mine = [p for p in pieces if p.call == i]
            assert (mine[0].id, mine[0].name) == (call.id, call.name)  # the head first, once
            assert all(p.id is None and p.name is None for p in mine[1:])
            assert "".join(p.arguments for p in mine) == call.arguments
        expected = json.loads(text[text.index("{"):]) if fmt is LLAMA3 else None
        if expected is not None:
            assert json.loads(calls[0].arguments) == expected["parameters"]
        assert content.strip() == ("Sure." if text is HERMES_TWO else "")


def test_arguments_stream_before_the_call_ends() -> None:
    output = ChoiceOutput(OutputFormat(tools=HERMES))
    _, _, pieces = output.feed('<tool_call>{"name": "f", "arguments": {"city": "Pa')
    assert [(p.id is not None, p.name, p.arguments) for p in pieces] == [(True, "f", '{"city":"Pa')]
    _, _, more = output.feed('ris", "n": 2}}</tool_call>')
    assert [p.arguments for p in more] == ['ris","n":2}']


def test_a_call_cut_short_is_content_at_the_end() -> None:
    output = ChoiceOutput(OutputFormat(tools=HERMES))
    output.feed('<tool_call>{"name": "f", "arguments": {"city": "Pa')
    _, rest, pieces, calls = output.finish()
    assert calls == [] and pieces == [] and rest.startswith("<tool_call>")
