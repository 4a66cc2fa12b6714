"""POST /v1/responses and the stored responses, on the generation core.

`prepare` turns the request (and the stored conversation of its `previous_response_id`) into the core's
`Conversation`; the core generates; `finished` maps the answer to a Response object, stored when `store`
is true (OpenAI's default).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from server.errors import InvalidRequestError, ServerError, UnsupportedParameterError
from server.pool import ModelPool
from server.protocol.responses import ResponseRequest
from server.protocol.responses_response import (
    DeletedResponse,
    FunctionCallOutput,
    IncompleteDetails,
    InputItemList,
    InputTokensDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningOutput,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
)
from server.response_store import ResponseStore, StoredResponse
from server.services.generation import run
from server.services.generation.events import Choice
from server.services.generation.input import Conversation
from server.services.generation.params import given
from server.services.generation.plan import plan_conversation
from server.services.responses.input import conversation as conversation_of
from server.services.responses.input import function_tools, input_items, new_item_id
from server.telemetry.metrics import Metrics

# Parameters accepted only at values that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"include": [], "truncation": "disabled", "service_tier": ("auto", "default")}
UNSUPPORTED = ("background", "conversation", "prompt", "max_tool_calls", "top_logprobs")
# The core's field names as this API calls them.
NAMES = {"prompt": "input", "messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format"}


class ResponseNotFoundError(ServerError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


@dataclass(frozen=True)
class Prepared:
    generation: Conversation  # what the core generates
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]  # the stored chain, then this input
    response: ResponseObject  # in_progress, empty output: what `response.created` shows


def _refuse_unsupported(request: ResponseRequest) -> None:
    for name in UNSUPPORTED:
        if given(getattr(request, name)):
            raise UnsupportedParameterError(f"The parameter `{name}` is not supported by this server.", param=name)
    for name, neutral in NEUTRAL.items():
        value = getattr(request, name)
        if given(value) and value != neutral and not (isinstance(neutral, tuple) and value in neutral):
            raise UnsupportedParameterError(f"The parameter `{name}` is not supported by this server "
                                            f"with the value {msgspec.json.encode(value).decode()}.", param=name)
    reasoning = request.reasoning
    if given(reasoning) and not (isinstance(reasoning, dict) and all(v is None for v in reasoning.values())):
        raise UnsupportedParameterError("The parameter `reasoning` is not supported by this server.",
                                        param="reasoning")
    if request.text is not None and given(request.text.verbosity) and request.text.verbosity != "medium":
        raise UnsupportedParameterError("`text.verbosity` is not supported by this server.", param="text.verbosity")


async def prepare(store: ResponseStore, request: ResponseRequest, n_ctx: int | None = None) -> Prepared:
    """`n_ctx`: the alias's context; a `max_output_tokens` at or past it means "as much as fits"."""
    _refuse_unsupported(request)
    tools = function_tools(request)
    items = input_items(request)
    history: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        previous = await store.get(request.previous_response_id)
        if previous is None:
            raise ResponseNotFoundError(f"Previous response with id '{request.previous_response_id}' not found.",
                                        param="previous_response_id", code="previous_response_not_found")
        history = previous.context
    conversation = history + items
    if request.store is not False:
        await store.ensure()  # a store that cannot be opened fails now, not after the generation
    generation = conversation_of(request, tools, conversation, n_ctx)
    fmt = request.text.format if request.text is not None and given(request.text.format) else None
    response = ResponseObject(
        id=new_item_id("resp"), created_at=int(time.time()), status="in_progress", model=request.model,
        instructions=request.instructions, max_output_tokens=request.max_output_tokens,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        previous_response_id=request.previous_response_id, store=request.store is not False,
        temperature=request.temperature, top_p=request.top_p,
        user=request.user if request.user is not None else msgspec.UNSET,
        text={"format": msgspec.to_builtins(fmt) if fmt is not None else {"type": "text"}},
        tool_choice=msgspec.to_builtins(request.tool_choice) if request.tool_choice is not None else "auto",
        tools=[{"description": None, "parameters": None, "strict": None, **msgspec.to_builtins(t)} for t in tools],
        metadata=request.metadata or {},
    )
    return Prepared(generation=generation, input_items=items, conversation=conversation, response=response)


def response_usage(prompt_tokens: int, completion_tokens: int, cached: int) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached),
        output_tokens=completion_tokens,
        output_tokens_details=OutputTokensDetails(),
        total_tokens=prompt_tokens + completion_tokens,
    )


def finished(prepared: Prepared, output: list[OutputItem], usage: tuple[int, int, int] | None,
             finish_reason: str | None) -> ResponseObject:
    """`usage`: prompt, completion and cached tokens."""
    response = msgspec.structs.replace(prepared.response, output=output, completed_at=int(time.time()),
                                       usage=response_usage(*usage) if usage is not None else None)
    if finish_reason == "length":
        return msgspec.structs.replace(response, status="incomplete",
                                       incomplete_details=IncompleteDetails(reason="max_output_tokens"))
    return msgspec.structs.replace(response, status="completed")


async def save(store: ResponseStore, prepared: Prepared, response: ResponseObject) -> None:
    if not response.store:
        return
    output = msgspec.to_builtins(response.output)
    await store.put(StoredResponse(id=response.id, response=msgspec.to_builtins(response),
                                   input_items=prepared.input_items, context=prepared.conversation + output))


def _output(choice: Choice) -> list[OutputItem]:
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    items: list[OutputItem] = []
    if choice.reasoning:
        items.append(ReasoningOutput(id=new_item_id("rs"), status=status,  # type: ignore[arg-type]
                                     content=[ReasoningText(text=choice.reasoning)]))
    if choice.content or not choice.calls:
        items.append(OutputMessage(id=new_item_id("msg"), status=status,  # type: ignore[arg-type]
                                   content=[OutputText(text=choice.content or "")]))
    items += [FunctionCallOutput(id=new_item_id("fc"), call_id=c.id, name=c.name, arguments=c.arguments,
                                 status="completed") for c in choice.calls]
    return items


async def create_response(pool: ModelPool[Any], store: ResponseStore, request: ResponseRequest,
                          metrics: Metrics | None = None) -> ResponseObject:
    prepared = await prepare(store, request, pool.spec(request.model).n_ctx)
    answer = await run.complete(pool, plan_conversation(pool, prepared.generation, NAMES), metrics)
    choice = answer.choices[0]
    usage = (answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens)
    response = finished(prepared, _output(choice), usage, choice.finish_reason)
    await save(store, prepared, response)
    return response


async def stored(store: ResponseStore, response_id: str) -> StoredResponse:
    record = await store.get(response_id)
    if record is None:
        raise ResponseNotFoundError(f"No response found with id '{response_id}'.", param="response_id")
    return record


async def delete_response(store: ResponseStore, response_id: str) -> DeletedResponse:
    if not await store.delete(response_id):
        raise ResponseNotFoundError(f"No response found with id '{response_id}'.", param="response_id")
    return DeletedResponse(id=response_id)


def page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None,
         before: str | None) -> InputItemList:
    """OpenAI's cursor pagination over a response's input items: `after`/`before` name an item id."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    for cursor, name in ((after, "after"), (before, "before")):
        if cursor is not None and cursor not in ids:
            raise InvalidRequestError(f"No input item with id '{cursor}' in this response.", param=name)
    start = ids.index(after) + 1 if after is not None else 0
    end = ids.index(before) if before is not None else len(ordered)
    window = ordered[start:end]
    data = window[:limit]
    return InputItemList(data=data, first_id=data[0]["id"] if data else None,
                         last_id=data[-1]["id"] if data else None, has_more=len(window) > limit)
