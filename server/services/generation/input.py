"""What a conversation generation is asked for, in no API's terms: each API (chat, Responses, Messages) maps
its request onto a `Conversation`; the core plans and runs it (generation/plan.py, generation/run.py).

Field names are the core's own: an error about one names it (`messages`, `max_tokens`, `response_format`,
`tools`...) and each API renames it into its own (`input` and `max_output_tokens` on Responses).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec

from server.errors import ServerError
from server.services.generation.events import Call


class Message(msgspec.Struct, frozen=True, kw_only=True):
    role: str  # system, user, assistant or tool
    content: str | None = None
    calls: list[Call] = []  # an assistant's tool calls
    call_id: str | None = None  # a tool result: the call it answers
    name: str | None = None  # a participant's name (not a tool result's)


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call: its parameters as a JSON schema (None: no parameters)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class Conversation(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    tool_choice: str | None = None  # "auto", "required" or "none"; None: auto when there are tools
    forced: str | None = None  # the one function a call must name (a named tool choice)
    response_format: str | None = None  # "json_object" or "json_schema"; None: text
    schema: Any = msgspec.UNSET  # json_schema's schema (UNSET: none was given)
    n: int = 1
    max_tokens: int | None = None
    stop: list[str] = []
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = None  # top logprobs per token (0: the chosen token's only); None: none
    template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    thinking: bool | None = None  # switch a thinking template's thinking on or off; None: its default
    speculative_n_max: int | None = None  # most drafted tokens a step (None: the alias's; 0: no drafts)
    prediction: str | None = None  # text the answer is expected to repeat (drafts are drawn from it)


@contextmanager
def named(names: Mapping[str, str]) -> Iterator[None]:
    """Errors raised inside name the caller's field where `names` maps the core's."""
    try:
        yield
    except ServerError as exc:
        exc.param = names.get(exc.param or "", exc.param)
        raise
