"""Per-alias request limits the services apply before generating (models.yaml `max_tokens_limit`)."""

from __future__ import annotations

from server.errors import InvalidRequestError
from server.registry import ModelSpec


def limit_max_tokens(alias: str, spec: ModelSpec, requested: int | None, *, param: str = "max_tokens") -> int | None:
    """The max_tokens to generate with. `requested` is the request's value, or the alias default when the
    request left it out (None: neither). Above the alias's ceiling: a 400 naming `param`. Nothing asked
    for: the ceiling itself, so "up to the end of the context" never runs past it."""
    limit = spec.max_tokens_limit
    if limit is None:
        return requested
    if requested is None:
        return limit
    if requested > limit:
        raise InvalidRequestError(
            f"`{param}` is {requested}, above the limit of {limit} for the model `{alias}`.", param=param,
            code="invalid_value",
        )
    return requested
