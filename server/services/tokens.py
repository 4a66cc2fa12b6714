"""POST /tokenize and /detokenize (vLLM's shapes), on the alias's own tokenizer."""

from __future__ import annotations

from server.engine import LlamaEngine
from server.pool import ModelPool
from server.protocol.tokenize import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from server.services.common import run_on_model


async def tokenize(pool: ModelPool[LlamaEngine], request: TokenizeRequest) -> TokenizeResponse:
    pool.spec(request.model)

    def work(engine: LlamaEngine, _stop: object) -> TokenizeResponse:
        tokens = engine.tokenize(request.prompt, add_special=request.add_special_tokens)
        return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=engine.n_ctx)

    return await run_on_model(pool, request.model, work)


async def detokenize(pool: ModelPool[LlamaEngine], request: DetokenizeRequest) -> DetokenizeResponse:
    pool.spec(request.model)
    text = await run_on_model(pool, request.model, lambda engine, _stop: engine.detokenize(request.tokens))
    return DetokenizeResponse(prompt=text)
