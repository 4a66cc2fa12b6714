"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API on the generation core.

A message request becomes the core's `Conversation` (system prompt first, content blocks flattened to
text, `tool_use` blocks to assistant tool calls, `tool_result` blocks to tool messages), so prompts,
tools, grammars and limits work exactly as on the chat route; the core's answer is mapped to content
blocks. Streams: see services/anthropic_stream.py.

A thinking model's reasoning (the core's `Reasoning`) comes back as a `thinking` block before the
text, with an empty signature. The request's `thinking` setting is accepted; whether a model thinks is
its template's and the alias's `chat_template_kwargs` business.
"""

from __future__ import annotations

import json
from typing import Any

from msgspec import UNSET

from server.errors import InvalidRequestError
from server.pool import ModelPool
from server.protocol import anthropic as wire
from server.protocol.anthropic_response import (
    Content,
    CountTokensResponse,
    MessageResponse,
    MessageUsage,
    StopReason,
    TextContent,
    ThinkingContent,
    ToolUseContent,
)
from server.services.generation import run
from server.services.generation.common import new_id
from server.services.generation.events import Call
from server.services.generation.input import Conversation, Message, ToolSpec
from server.services.generation.params import sent
from server.services.generation.plan import plan_conversation
from server.telemetry.metrics import Metrics

BLOCK_SEPARATOR = "\n\n"  # between text blocks of one message: each block is a paragraph of its own


def conversation(request: wire.CountTokensRequest, n_ctx: int | None = None) -> Conversation:
    """The request in the core's terms: it renders the same prompt and samples the same way as a chat
    request would. Anthropic clients (Claude Code among them) send max_tokens sized for Claude, often past a
    local model's whole context: such a value means "as much as fits", as llama-server treats it, instead of
    a 400 on every request."""
    choice = request.tool_choice
    out = Conversation(
        model=request.model,
        messages=_messages(request),
        tools=_tools(request.tools) if request.tools is not UNSET else [],
        tool_choice=_tool_choice(choice),
        forced=choice.name if isinstance(choice, wire.ToolChoiceTool) else None,
    )
    if isinstance(request, wire.MessagesRequest):
        out.max_tokens = request.max_tokens if n_ctx is None or request.max_tokens < n_ctx else None
        out.temperature = sent(request.temperature)
        out.top_p = sent(request.top_p)
        out.top_k = sent(request.top_k)
        out.stop = [s for s in request.stop_sequences or [] if s] if request.stop_sequences is not UNSET else []
        output_format = request.output_config.format if request.output_config else None
        if output_format is not None:
            out.response_format, out.schema = "json_schema", output_format.schema
    return out



# The core's field names as this API calls them.
NAMES = {"prompt": "messages", "response_format": "output_config.format"}


async def create_message(pool: ModelPool[Any], request: wire.MessagesRequest,
                         metrics: Metrics | None = None) -> MessageResponse:
    plan = plan_conversation(pool, conversation(request, pool.spec(request.model).n_ctx), NAMES)
    answer = await run.complete(pool, plan, metrics)
    choice = answer.choices[0]
    content: list[Content] = []
    if choice.reasoning:
        content.append(ThinkingContent(thinking=choice.reasoning))
    if choice.content:
        content.append(TextContent(text=choice.content))
    for call in choice.calls:
        content.append(ToolUseContent(id=tool_use_id(call.id), name=call.name, input=json.loads(call.arguments)))
    reason, sequence = stop_reason(choice.finish_reason, choice.stop, request.stop_sequences)
    return MessageResponse(id=new_message_id(), content=content, model=request.model, stop_reason=reason,
                           stop_sequence=sequence,
                           usage=message_usage(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens))


async def count_tokens(pool: ModelPool[Any], request: wire.CountTokensRequest) -> CountTokensResponse:
    tokens, _ = await run.rendered_prompt(pool, plan_conversation(pool, conversation(request), NAMES))
    return CountTokensResponse(input_tokens=len(tokens))


def new_message_id() -> str:
    return new_id("msg").replace("-", "_")


def tool_use_id(call_id: str) -> str:
    """Anthropic's prefix on the core's call id; a `tool_result` sends it back as it is."""
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(finish_reason: str | None, stop: str | None,
                stop_sequences: list[str] | Any) -> tuple[StopReason, str | None]:
    """Anthropic's stop_reason (and the stop sequence hit) for a chat finish_reason. A stop string the chat
    template added (end-of-turn text) ends the turn like the end token; only the client's own are named."""
    if finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if stop is not None and stop_sequences and stop in stop_sequences:
        return "stop_sequence", stop
    return "end_turn", None


def message_usage(prompt_tokens: int, completion_tokens: int, cached: int) -> MessageUsage:
    """Anthropic counts prompt tokens read from the cache apart from `input_tokens` (llama-server does too)."""
    return MessageUsage(input_tokens=prompt_tokens - cached, output_tokens=completion_tokens,
                        cache_read_input_tokens=cached)


def _messages(request: wire.CountTokensRequest) -> list[Message]:
    out: list[Message] = []
    system = request.system
    if isinstance(system, list):
        system = BLOCK_SEPARATOR.join(block.text for block in system)
    if system:
        out.append(Message(role="system", content=system))
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str):
            out.append(Message(role=message.role, content=message.content))
        else:
            out += _blocks(message.role, message.content, f"messages[{i}].content")
    return out


def _blocks(role: str, blocks: list[wire.ContentBlock], where: str) -> list[Message]:
    """One Anthropic message as the core's messages: its tool results first (each a tool message), then the
    text and tool calls."""
    texts: list[str] = []
    calls: list[Call] = []
    results: list[Message] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        if isinstance(block, wire.TextBlock):
            texts.append(block.text)
        elif isinstance(block, (wire.ThinkingBlock, wire.RedactedThinkingBlock)):
            continue  # earlier turns' thinking is not part of the prompt (Anthropic drops it too)
        elif isinstance(block, wire.ToolUseBlock):
            if role != "assistant":
                raise InvalidRequestError(f"`{at}`: tool_use blocks belong in assistant messages.", param=at)
            calls.append(Call(id=block.id, name=block.name, arguments=json.dumps(block.input)))
        elif isinstance(block, wire.ToolResultBlock):
            if role != "user":
                raise InvalidRequestError(f"`{at}`: tool_result blocks belong in user messages.", param=at)
            results.append(Message(role="tool", call_id=block.tool_use_id, content=_result_text(block, at)))
        else:
            _refuse_media(block, at)
    text = BLOCK_SEPARATOR.join(texts)
    if role == "assistant":
        return [Message(role="assistant", content=text or None, calls=calls)]
    return results + ([Message(role="user", content=text)] if texts or not results else [])


def _result_text(block: wire.ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        text = block.content
    else:
        for k, part in enumerate(block.content):
            if not isinstance(part, wire.TextBlock):
                _refuse_media(part, f"{where}.content[{k}]")
        text = BLOCK_SEPARATOR.join(part.text for part in block.content if isinstance(part, wire.TextBlock))
    return f"Error: {text}" if block.is_error else text


def _refuse_media(block: Any, where: str) -> None:
    kind = "image" if isinstance(block, wire.ImageBlock) else "document"
    raise InvalidRequestError(f"`{where}` is an {kind} block; this server's models read text only: send the "
                              "content as text blocks.", param=where)


def _tools(tools: list[wire.Tool]) -> list[ToolSpec]:
    out = []
    for i, tool in enumerate(tools):
        if tool.type is not UNSET and tool.type != "custom":
            raise InvalidRequestError(f"`tools[{i}]` is the server tool `{tool.type}`, which this server does not "
                                      "run; give client tools (name, description, input_schema).", param=f"tools[{i}]")
        out.append(ToolSpec(name=tool.name, description=tool.description if isinstance(tool.description, str)
                            else "", parameters=tool.input_schema if isinstance(tool.input_schema, dict) else None))
    return out


def _tool_choice(choice: wire.ToolChoice | Any) -> str | None:
    if isinstance(choice, (wire.ToolChoiceTool, wire.ToolChoiceAny)):
        return "required"
    if isinstance(choice, wire.ToolChoiceNone):
        return "none"
    if isinstance(choice, wire.ToolChoiceAuto):
        return "auto"
    return None  # not sent: auto when there are tools, as on the chat route
