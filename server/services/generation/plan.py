"""A generation's plan: everything decided before the model is touched, and the prompt rendered once the
model is leased (what depends on its template: how tools and history are rendered, how output is parsed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from server.engine import ChatPrompt, Grammar, Model, Request
from server.protocol.chat import ChatCompletionRequest
from server.registry import ModelSpec
from server.services.generation import render as chat_render
from server.services.generation import tools
from server.services.generation.choices import choice_requests
from server.services.generation.output import OutputFormat
from server.services.generation.render import Rendering


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

    async def prompt(self, model: Model) -> tuple[int | None, OutputFormat, list[Request]]:
        """The prompt's size (None: the worker tokenizes it), how output is read, and the engine requests."""
        ...


@dataclass(frozen=True)
class ChatPlan:
    request: ChatCompletionRequest
    spec: ModelSpec
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stop: list[str]
    sampling: Any
    logprobs: int | None
    tools: tools.ToolPlan | None
    response_grammar: Grammar | None

    @property
    def alias(self) -> str:
        return self.request.model

    @property
    def per_prompt(self) -> int:
        return self.n

    def render(self, model: Model) -> Rendering:
        return chat_render.render(self.request, self.spec, model.chat_template, self.messages, self.tools)

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
                              strip_echo=any(m.role == "tool" for m in self.request.messages))
        requests = choice_requests(prompt.tokens, self.n, self.max_tokens, self.stop + prompt.stop, sampling,
                                   self.logprobs)
        return prompt, output, requests
