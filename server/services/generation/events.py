"""What a generation produces, in no API's terms: each API (chat, completions, Responses, Messages) maps these
to its own wire format.

A stream is a list of events per decode step: `Started` once, with the first step (the model has taken
the request and rendered the prompt), then per choice its text, reasoning, the pieces of its tool calls
as they are written (`CallDelta`) and, at its end, its tool calls whole (`Calls`) and `Finished`. A whole
answer is one `Choice` per choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.engine import TokenLogprob, Usage


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call the model made: its id, the function's name and the arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Started:
    prompt_tokens: int | None  # the prompt as the model read it (template, tools and all); None: not known here


@dataclass(frozen=True, slots=True)
class Text:
    index: int
    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True, slots=True)
class Reasoning:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class CallDelta:
    """A piece of tool call `call` of choice `index` as it is written: its first piece has the call's id
    and function name, the others arguments text. Joined, a call's pieces are the `Calls` event's call."""

    index: int
    call: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Calls:
    index: int
    calls: list[Call]


@dataclass(frozen=True, slots=True)
class Finished:
    index: int
    reason: str  # "stop", "length" or "tool_calls"
    stop: str | None  # the stop string that ended it, if one did
    usage: Usage


Event = Started | Text | Reasoning | CallDelta | Calls | Finished


@dataclass
class Choice:
    """One choice of a whole (non-streamed) answer."""

    content: str | None
    reasoning: str | None  # None: the model does not think (no reasoning was split off)
    calls: list[Call]
    finish_reason: str
    stop: str | None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    usage: Usage | None = None


@dataclass
class Answer:
    """A whole answer: its choices and the usage of the request (the prompt counted once)."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    usages: list[Usage | None] = field(default_factory=list)  # each sequence's, as the engine reported it
