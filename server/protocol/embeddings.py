from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import TokenId


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    # A string, or a list of strings, or token ids ([1, 2, 3]), or lists of token ids ([[1, 2], [3]]): the
    # model's own ids, as llama-server and vLLM take them (LangChain's OpenAIEmbeddings sends these).
    # msgspec allows one list type in a union, so the list's items are checked to be all of one kind
    # by the service (server/services/limits.py).
    input: str | Annotated[list[str | TokenId | list[TokenId]], Meta(min_length=1)]
    # The official openai client asks for base64 unless told otherwise, and decodes it itself.
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None | UnsetType = UNSET
    user: str | None = None


class Embedding(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
