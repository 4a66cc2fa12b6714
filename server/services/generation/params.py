"""Merging a request's sampling parameters with the alias's defaults, and refusing what we don't do."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from server.engine import SamplingParams
from server.errors import InvalidRequestError, UnsupportedParameterError
from server.protocol.common import INT32_MAX
from server.registry import ModelSpec
from server.services.limits import limit_max_tokens


def given(value: Any) -> bool:
    return value is not UNSET and value is not None


def sent(value: Any) -> Any:
    """A request field as the core takes it: None where the client left it out."""
    return None if value is UNSET else value


def pick(request_value: Any, default: Any) -> Any:
    """The request's value when it sent one (null counts as not sent), else the alias default."""
    return request_value if given(request_value) else default


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def max_tokens(alias: str, spec: ModelSpec, candidates: dict[str, Any], *, fallback: int | None) -> int | None:
    """The first value the request sent (by parameter name), else the alias default, else `fallback`
    (None: the rest of the context); never above the alias's `max_tokens_limit`."""
    for name, value in candidates.items():
        if given(value):
            return limit_max_tokens(alias, spec, value, param=name)
    return limit_max_tokens(alias, spec, spec.sampling.max_tokens or fallback)


def logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    """OpenAI sends token ids as string keys. Range against the vocabulary is checked once loaded."""
    if not raw:
        return {}
    try:
        bias = {int(token): value for token, value in raw.items()}
    except ValueError as exc:
        raise InvalidRequestError("logit_bias keys must be token ids (integers as strings).",
                                  param="logit_bias") from exc
    bad = next((t for t in bias if not 0 <= t <= INT32_MAX), None)
    if bad is not None:
        raise InvalidRequestError(f"logit_bias names token {bad}, which is no token id.", param="logit_bias")
    return bias


def sampling_params(spec: ModelSpec, request: Any) -> SamplingParams:
    defaults = spec.sampling
    return SamplingParams(
        temperature=pick(request.temperature, defaults.temperature),
        top_p=pick(request.top_p, defaults.top_p),
        top_k=pick(getattr(request, "top_k", None), defaults.top_k),
        min_p=pick(getattr(request, "min_p", None), defaults.min_p),
        repeat_penalty=pick(getattr(request, "repeat_penalty", None), defaults.repeat_penalty),
        presence_penalty=pick(request.presence_penalty, defaults.presence_penalty),
        frequency_penalty=pick(request.frequency_penalty, defaults.frequency_penalty),
        seed=request.seed,
        logit_bias=logit_bias(request.logit_bias),
        draft_max=getattr(request, "speculative_n_max", None),
        prediction=getattr(request, "prediction", None),
    )


def refuse_unsupported(request: Any, names: tuple[str, ...], neutral: dict[str, Any] | None = None) -> None:
    """A 400 naming the first parameter we do not implement, unless its value asks for nothing."""
    neutral = neutral or {}
    for name in names:
        value = getattr(request, name)
        if not given(value) or (name in neutral and value == neutral[name]):
            continue
        raise UnsupportedParameterError(f"The parameter `{name}` is not supported by this server.", param=name)
