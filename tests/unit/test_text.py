from __future__ import annotations

import json

import pytest

from server.engine.text import StopMatcher, Utf8Stream
from server.services.generation.tools import ContentFilter, parse_calls


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher, out, hit = StopMatcher(stops), "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            return out, True
    return out + matcher.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        ([], ["a", "b"], ("ab", False)),
        (["STOP"], ["hello ", "ST", "OP", " more"], ("hello ", True)),
        (["STOP"], ["hello ", "ST", "ART"], ("hello START", False)),  # a false start is released
        (["\n\n", "END"], ["x\n", "\ny"], ("x", True)),
        (["END"], ["xEN"], ("xEN", False)),  # held back, then flushed at the end
        (["ab", "b"], ["cab"], ("c", True)),  # the earliest stop wins
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], expected: tuple[str, bool]) -> None:
    assert run(stops, pieces) == expected


def test_utf8_split_across_tokens_comes_out_whole() -> None:
    stream = Utf8Stream()
    data = "é€😀".encode()
    out = [stream.feed(data[i:i + 1]) for i in range(len(data))]
    assert "".join(out) + stream.flush() == "é€😀"
    assert out[0] == ""  # half a character is never emitted


def test_parse_calls_splits_content_and_call() -> None:
    content, calls = parse_calls('Let me check. <tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>')
    assert content == "Let me check."
    assert calls[0].name == "f" and json.loads(calls[0].arguments) == {"x": 1}
    assert parse_calls('<tool_call>{"name": "f", "argu')[1] == []  # cut short: not a call


def test_content_filter_holds_back_a_would_be_tag() -> None:
    f = ContentFilter()
    assert f.feed("Hi <too") == "Hi "
    assert f.feed("l_call>{") == ""
    assert f.remainder() == '<tool_call>{'  # never completed: it was content after all
    g = ContentFilter()
    assert g.feed("a <t") == "a " and g.feed("x") == "<tx"  # a false start is released
