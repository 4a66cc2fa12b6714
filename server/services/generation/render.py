"""A chat request as the model's chat template will see it: messages, tools and template variables, and
the formats its output will come back in (tool calls, reasoning).

A template that mentions `tools` renders them itself (native); one that does not gets them described in
the system message (server/services/generation/tools.py). A template that writes `<think>` has its reasoning split
off (server/services/generation/reasoning.py, per the alias's `reasoning_format`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequestError, UnsupportedParameterError
from server.registry import ModelSpec
from server.services.generation import reasoning, tool_formats, tools
from server.services.generation.input import Conversation
from server.services.generation.tool_formats import HERMES, ToolFormat

# Names the renderer itself passes to a template: a template variable may not replace them.
RESERVED = frozenset({"messages", "tools", "tool_choice", "functions", "function_call", "eos_token", "bos_token",
                      "raise_exception", "add_generation_prompt", "strftime_now"})


@dataclass(frozen=True)
class Rendering:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # for the template to render; None: described, or no tools
    variables: dict[str, Any]
    tool_format: ToolFormat  # how calls are written: the template's family, or the described tags
    thinks: bool  # split `<think>` reasoning off the answer


@functools.lru_cache(maxsize=32)  # asked on every chat request, of the few templates a server has loaded
def handles_tools(template: str | None) -> bool:
    return template is not None and re.search(r"\btools\b", template) is not None


def check_variables(conversation: Conversation) -> None:
    """Refusals that need no model: reserved variable names."""
    clash = sorted(RESERVED & set(conversation.template_kwargs or {}))
    if clash:
        raise InvalidRequestError(f"chat_template_kwargs may not set {', '.join(clash)}: the server passes "
                                  "these to the template itself.", param="chat_template_kwargs")


def render(conversation: Conversation, spec: ModelSpec, template: str | None, messages: list[dict[str, Any]],
           plan: tools.ToolPlan | None) -> Rendering:
    """`template`: the model's Jinja template (None: a named llama-cpp-python chat format)."""
    if template is None and conversation.template_kwargs:
        raise InvalidRequestError("chat_template_kwargs needs a Jinja chat template; this alias uses the chat "
                                  f"format `{spec.chat_format}`.", param="chat_template_kwargs")
    if handles_tools(template):
        assert template is not None
        fmt = tool_formats.family(template)
        rendered = tools.native_history(messages, conversation.messages, fmt)
        tool_list = tools.template_tools(plan) if plan is not None else None
    else:
        fmt, tool_list = HERMES, None
        rendered = tools.described_history(messages, conversation.messages, plan)
    variables = {**spec.chat_template_kwargs, **(conversation.template_kwargs or {})}
    effort = conversation.reasoning_effort
    if effort is not None:
        if template is not None and "reasoning_effort" in template:
            variables.setdefault("reasoning_effort", effort)
        elif template is not None and "enable_thinking" in template:
            variables.setdefault("enable_thinking", effort != "none")
        else:
            raise UnsupportedParameterError("reasoning_effort is not supported with this model: its chat template "
                                            "has no reasoning setting.", param="reasoning_effort")
    if conversation.thinking is not None and template is not None and "enable_thinking" in template:
        variables.setdefault("enable_thinking", conversation.thinking)  # a model that cannot choose: as it is
    return Rendering(messages=rendered, tools=tool_list, variables=variables, tool_format=fmt,
                     thinks=reasoning.thinks(template, spec.reasoning_format))
