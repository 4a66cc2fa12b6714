"""POST /tokenize and /detokenize (vLLM's shapes), on the alias's own tokenizer."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from server.errors import InvalidRequestError
from server.pool import ModelPool
from server.protocol.chat import ChatCompletionRequest
from server.protocol.tokenize import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from server.services.chat.service import chat_prompt_tokens


async def tokenize(pool: ModelPool[Any], request: TokenizeRequest) -> TokenizeResponse:
    if (request.prompt is UNSET) == (request.messages is UNSET):
        raise InvalidRequestError("Give either `prompt` or `messages`.", param="prompt")
    if request.messages is not UNSET:
        return await _tokenize_chat(pool, request)
    pool.spec(request.model)
    async with pool.lease(request.model, max_tokens=0) as model:
        assert isinstance(request.prompt, str)
        tokens = await model.tokenize(request.prompt, add_special=request.add_special_tokens)
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=model.n_ctx)


async def _tokenize_chat(pool: ModelPool[Any], request: TokenizeRequest) -> TokenizeResponse:
    """The prompt a chat completion with these messages and tools would start from."""
    if not request.messages:
        raise InvalidRequestError("`messages` is empty.", param="messages")
    tokens, n_ctx = await chat_prompt_tokens(pool, ChatCompletionRequest(
        model=request.model, messages=request.messages, tools=request.tools,
        chat_template_kwargs=request.chat_template_kwargs))
    return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=n_ctx)


async def detokenize(pool: ModelPool[Any], request: DetokenizeRequest) -> DetokenizeResponse:
    pool.spec(request.model)
    async with pool.lease(request.model, max_tokens=0) as model:
        return DetokenizeResponse(prompt=await model.detokenize(request.tokens))
