"""A generation's plan: everything decided before the model is touched, and the prompt rendered once the
model is leased (what depends on its template: how tools and history are rendered, how output is parsed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from server.engine import ChatPrompt, Grammar, Model, Request
from server.errors import InvalidRequestError
from server.pool import ModelPool
from server.registry import ModelSpec
from server.services.generation import render as chat_render
from server.services.generation import tools
from server.services.generation.choices import choice_requests
from server.services.generation.common import require_kind
from server.services.generation.input import Conversation, named
from server.services.generation.output import OutputFormat
from server.services.generation.params import max_tokens, sampling_params
from server.services.generation.render import Rendering
from server.services.generation.schema_limits import check_schema
from server.services.limits import check_generation_request


class Plan(Protocol):
    """What the core runs: any API's plan. `n`: sequences in all; `per_prompt`: how many of them share one
    prompt (its tokens count once in the usage)."""

    @property
    def alias(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def per_prompt(self) -> int: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def logprobs(self) -> int | None: ...
    @property
    def names(self) -> Mapping[str, str]:
        """The core's field names in the calling API's terms (errors raised while it runs are renamed)."""
        ...

    async def prompt(self, model: Model) -> tuple[int | None, OutputFormat, list[Request]]:
        """The prompt's size (None: the worker tokenizes it), how output is read, and the engine requests."""
        ...


@dataclass(frozen=True)
class ChatPlan:
    conversation: Conversation
    spec: ModelSpec
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stop: list[str]
    sampling: Any
    logprobs: int | None
    tools: tools.ToolPlan | None
    response_grammar: Grammar | None
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def alias(self) -> str:
        return self.conversation.model

    @property
    def per_prompt(self) -> int:
        return self.n

    def render(self, model: Model) -> Rendering:
        return chat_render.render(self.conversation, self.spec, model.chat_template, self.messages, self.tools)

    async def prompt(self, model: Model) -> tuple[int | None, OutputFormat, list[Request]]:
        prompt, output, requests = await self.rendered(model)
        return len(prompt.tokens), output, requests

    async def rendered(self, model: Model) -> tuple[ChatPrompt, OutputFormat, list[Request]]:
        """The prompt rendered by the model, the format its output comes back in, and the engine requests."""
        rendering = self.render(model)
        prompt = await model.chat_prompt(rendering.messages, tools=rendering.tools,
                                         template_kwargs=rendering.variables, fit_context=True)
        reasoning_open = rendering.thinks and prompt.reasoning_open
        # A thinking model reasons first: a constraint applies from its `</think>` on.
        after = "</think>" if reasoning_open else ""
        grammar = self.response_grammar
        if self.tools is not None:
            grammar = self.tools.grammar(rendering.tool_format, after=after)
        elif grammar is not None and after:
            grammar = msgspec.structs.replace(grammar, after=after)
        sampling = msgspec.structs.replace(self.sampling, grammar=grammar)
        output = OutputFormat(tools=rendering.tool_format if self.tools is not None else None,
                              thinks=rendering.thinks, reasoning_open=reasoning_open,
                              strip_echo=any(m.role == "tool" for m in self.conversation.messages))
        requests = choice_requests(prompt.tokens, self.n, self.max_tokens, self.stop + prompt.stop, sampling,
                                   self.logprobs)
        return prompt, output, requests


def plan_conversation(pool: ModelPool[Any], conversation: Conversation,
                      names: Mapping[str, str] | None = None) -> ChatPlan:
    """Every check that needs no model, then the plan. `names`: the core's field names in the calling API's
    terms, for errors raised now and while the plan runs."""
    with named(names or {}):
        return _plan(pool, conversation, dict(names or {}))


def _plan(pool: ModelPool[Any], conversation: Conversation, names: dict[str, str]) -> ChatPlan:
    alias = conversation.model
    spec = pool.spec(alias)
    require_kind(alias, spec, embedding=False)
    check_generation_request(alias, spec, conversation)
    tool_plan = tools.plan_tools(conversation)
    if tool_plan is not None and conversation.response_format is not None:
        raise InvalidRequestError("response_format cannot be combined with tool calls; set tool_choice to none.",
                                  param="response_format")
    chat_render.check_variables(conversation)
    return ChatPlan(
        conversation=conversation,
        spec=spec,
        messages=[{"role": m.role, "content": m.content or ""} for m in conversation.messages],
        n=conversation.n,
        max_tokens=max_tokens(alias, spec, {"max_tokens": conversation.max_tokens}, fallback=None),
        stop=list(conversation.stop),
        sampling=sampling_params(spec, conversation),
        logprobs=conversation.logprobs,
        tools=tool_plan,
        response_grammar=_grammar(conversation),
        names=names,
    )


def _grammar(conversation: Conversation) -> Grammar | None:
    if conversation.response_format == "json_object":
        return Grammar()  # any JSON object
    if conversation.response_format == "json_schema":
        schema = conversation.schema
        if schema is msgspec.UNSET:  # OpenAI's Responses schema requires it; a format with none asks nothing
            raise InvalidRequestError("A json_schema response format needs its `schema`; for any JSON object "
                                      "use the json_object format.", param="response_format")
        check_schema(schema, param="response_format")
        return Grammar(schema=msgspec.json.encode(schema).decode())
    return None
