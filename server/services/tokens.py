"""POST /tokenize and /detokenize (vLLM's shapes), on the alias's own tokenizer."""

from __future__ import annotations

from typing import Any

from server.pool import ModelPool
from server.protocol.tokenize import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse


async def tokenize(pool: ModelPool[Any], request: TokenizeRequest) -> TokenizeResponse:
    pool.spec(request.model)
    async with pool.lease(request.model, max_tokens=0) as model:
        tokens = await model.tokenize(request.prompt, add_special=request.add_special_tokens)
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=model.n_ctx)


async def detokenize(pool: ModelPool[Any], request: DetokenizeRequest) -> DetokenizeResponse:
    pool.spec(request.model)
    async with pool.lease(request.model, max_tokens=0) as model:
        return DetokenizeResponse(prompt=await model.detokenize(request.tokens))
