from __future__ import annotations

from litestar import Controller, post

from server.http.openapi import GENERATION_ERRORS
from server.pool import ModelPool
from server.protocol.tokenize import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from server.services.tokens import detokenize, tokenize


class TokensController(Controller):
    path = ""
    tags = ["tokens"]

    @post("/tokenize", status_code=200, summary="Tokenize a prompt with the alias's tokenizer",
          responses=GENERATION_ERRORS)
    async def tokenize(self, data: TokenizeRequest, pool: ModelPool) -> TokenizeResponse:
        return await tokenize(pool, data)

    @post("/detokenize", status_code=200, summary="Turn token ids back into text", responses=GENERATION_ERRORS)
    async def detokenize(self, data: DetokenizeRequest, pool: ModelPool) -> DetokenizeResponse:
        return await detokenize(pool, data)
