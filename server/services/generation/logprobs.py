"""Engine logprobs -> OpenAI's two shapes (chat's per-token list, completions' parallel arrays)."""

from __future__ import annotations

from server.engine import TokenLogprob
from server.protocol.chat_response import ChoiceLogprobs, TopLogprob
from server.protocol.chat_response import TokenLogprob as WireTokenLogprob
from server.protocol.completions import CompletionLogprobs


def chat_logprobs(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        WireTokenLogprob(
            token=e.token, logprob=e.logprob, bytes=e.bytes,
            top_logprobs=[TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in e.top],
        )
        for e in entries
    ])


def completion_logprobs(entries: list[TokenLogprob], start_offset: int) -> CompletionLogprobs:
    offsets, offset = [], start_offset
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t.token: t.logprob for t in e.top} for e in entries],
        text_offset=offsets,
    )
