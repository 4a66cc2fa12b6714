"""Litestar's Request, with every undecodable JSON body reported as malformed JSON (a 400).

Litestar turns msgspec's DecodeError into a 400, but msgspec raises two other errors on hostile
bodies that Litestar lets through as 500s: UnicodeDecodeError for bytes that are not UTF-8 (JSON
text must be), and RecursionError for arrays or objects nested past the interpreter's recursion
limit (about 1,000 levels).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException

UNDECODABLE = (UnicodeDecodeError, RecursionError)


def undecodable_message(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON is nested too deeply"
    return f"JSON text must be UTF-8 ({exc})"


class JsonRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        try:
            return await super().json()
        except UNDECODABLE as exc:
            raise SerializationException(undecodable_message(exc)) from exc
