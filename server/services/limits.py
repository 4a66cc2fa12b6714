"""Request limits the services apply before any native call: one place for every bound on what a
request can make the server do.

Per alias (models.yaml): `max_tokens_limit`, and `max_sequences_per_request` (prompts x n: each
sequence takes a slot's turn and its KV cache; 100 prompts x n=16 held a 4-token chat behind it
for 17.5 s). For every request, the sizes below. The wire types bound `n` (1-16) and the number of
`stop` strings (16); a JSON schema's bounds are in services/schema_limits.py. Each refusal is a 400
naming the parameter and the limit.
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequestError
from server.registry import ModelSpec

MAX_STOP_CHARS = 1024          # one stop string
MAX_LOGIT_BIAS = 1024          # entries in logit_bias
MAX_TOOLS = 128                # OpenAI's own limit on functions
MAX_EMBEDDING_INPUTS = 2048    # OpenAI's own limit on `input` items


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


def check_generation_request(alias: str, spec: ModelSpec, request: Any) -> None:
    """The sizes of a chat or completions request: sequences (prompts x n), stop strings, logit_bias, tools."""
    prompt = getattr(request, "prompt", None)
    prompts = len(prompt) if isinstance(prompt, list) else 1
    n = request.n or 1
    limit = spec.max_sequences_per_request
    if prompts * n > limit:
        param = "prompt" if prompts > limit else "n"
        shape = f"{prompts} prompt(s) x n={n}" if prompt is not None else f"n={n}"
        raise InvalidRequestError(
            f"This request asks for {prompts * n} sequences ({shape}), above the limit of {limit} per request "
            f"for the model `{alias}`. Split it into several requests.", param=param, code="invalid_value")
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    longest = max((len(s) for s in stops), default=0)
    if longest > MAX_STOP_CHARS:
        raise InvalidRequestError(f"A stop string of {longest} characters is above the limit of {MAX_STOP_CHARS}.",
                                  param="stop", code="invalid_value")
    if request.logit_bias and len(request.logit_bias) > MAX_LOGIT_BIAS:
        raise InvalidRequestError(f"logit_bias has {len(request.logit_bias)} entries, above the limit of "
                                  f"{MAX_LOGIT_BIAS}.", param="logit_bias", code="invalid_value")
    tools = getattr(request, "tools", None)
    if tools and len(tools) > MAX_TOOLS:
        raise InvalidRequestError(f"{len(tools)} tools is above the limit of {MAX_TOOLS}.", param="tools",
                                  code="invalid_value")


def check_embedding_inputs(request: Any) -> list[str | list[int]]:
    """The inputs as a list of texts or of token id lists: one kind only, none empty (llama.cpp fails on an
    input with no tokens and leaves the model broken), at most MAX_EMBEDDING_INPUTS of them. Token ids
    are checked against the vocabulary by the model itself."""
    raw = request.input
    if isinstance(raw, str):
        inputs: list[Any] = [raw]
    elif raw and all(isinstance(item, int) for item in raw):
        inputs = [raw]  # one input given as token ids
    else:
        inputs = raw
    kinds = {type(item) for item in inputs}
    if len(kinds) > 1:
        raise InvalidRequestError("`input` mixes kinds: send a string, a list of strings, a list of token ids, "
                                  "or a list of lists of token ids.", param="input", code="invalid_value")
    if not inputs:
        raise InvalidRequestError("`input` must not be an empty list.", param="input", code="invalid_value")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequestError(f"`input` has {len(inputs)} items, above the limit of {MAX_EMBEDDING_INPUTS}.",
                                  param="input", code="invalid_value")
    empty = next((i for i, item in enumerate(inputs) if not item), None)
    if empty is not None:
        where = "`input`" if inputs is not raw else f"`input[{empty}]`"  # not raw: one input, wrapped
        what = "an empty string" if isinstance(inputs[empty], str) else "an empty list of token ids"
        raise InvalidRequestError(f"{where} is {what}; every input needs something to embed.",
                                  param="input", code="invalid_value")
    return inputs

