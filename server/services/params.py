"""Merging a request's sampling parameters with the alias's defaults, and refusing what we don't do."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from server.engine import GenerationParams
from server.errors import UnsupportedParameterError
from server.registry import ModelSpec


def given(value: Any) -> bool:
    return value is not UNSET and value is not None


def pick(request_value: Any, default: Any) -> Any:
    """The request's value when it sent one (null counts as not sent), else the alias default."""
    return request_value if given(request_value) else default


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def generation_params(spec: ModelSpec, request: Any, max_tokens: Any, fallback_max_tokens: int | None) -> GenerationParams:
    defaults = spec.sampling
    return GenerationParams(
        max_tokens=pick(max_tokens, defaults.max_tokens) or fallback_max_tokens,
        temperature=pick(request.temperature, defaults.temperature),
        top_p=pick(request.top_p, defaults.top_p),
        top_k=defaults.top_k,
        min_p=defaults.min_p,
        repeat_penalty=defaults.repeat_penalty,
        presence_penalty=pick(request.presence_penalty, defaults.presence_penalty),
        frequency_penalty=pick(request.frequency_penalty, defaults.frequency_penalty),
        stop=stop_list(request.stop),
        seed=request.seed,
    )


def refuse_unsupported(request: Any, names: tuple[str, ...], neutral: dict[str, Any]) -> None:
    """A 400 naming the first parameter we do not implement, unless its value changes nothing."""
    for name in names:
        value = getattr(request, name)
        if not given(value) or value == neutral.get(name, object()):
            continue
        raise UnsupportedParameterError(f"The parameter `{name}` is not supported by this server.", param=name)
