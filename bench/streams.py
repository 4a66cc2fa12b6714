"""One streamed chat answer, timed token by token: over HTTP (SSE) or from an in-process `Llama`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.measures import StreamResult

# Counting: greedy decoding keeps going well past 64 tokens on this prompt, so every answer is cut by
# max_tokens (finish_reason "length") and has exactly max_tokens tokens, with no logit_bias needed.
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from 1 to 200, one number per line."},
]


@dataclass(frozen=True)
class ChatWork:
    """The one request every contender answers."""

    max_tokens: int = 64
    ban_end_of_turn: tuple[int, ...] = ()  # token ids given logit_bias -100 (an answer that never ends early)

    def body(self, alias: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": alias, "messages": MESSAGES, "max_tokens": self.max_tokens, "temperature": 0.0,
            "stream": True,
            # llama-cpp-python's server defaults to 1.1; its in-process call and our server to none.
            # Same sampling for everyone: none. (Our server ignores this non-OpenAI field.)
            "repeat_penalty": 1.0,
        }
        if self.ban_end_of_turn:
            body["logit_bias"] = {str(t): -100.0 for t in self.ban_end_of_turn}
        return body


async def stream_http(client: httpx.AsyncClient, contender: str, base_url: str, alias: str,
                      work: ChatWork) -> StreamResult:
    return await stream_body(client, contender, base_url, work.body(alias))


async def stream_body(client: httpx.AsyncClient, contender: str, base_url: str, body: dict[str, Any]) -> StreamResult:
    """POST one streamed chat request and time its events. A request whose kept-alive connection the
    server closed as it was sent (no response at all) is sent once more on a new connection, timed from
    then, as the openai SDK retries it: llama-server closes idle connections, and one such race used to
    cost a stream of the run (and fail the bench)."""
    retried = False
    while True:
        result = StreamResult(contender=contender, alias=body["model"], started=time.perf_counter())
        answered = False
        try:
            async with client.stream("POST", base_url + "/v1/chat/completions", json=body) as response:
                answered = True
                if response.status_code != 200:
                    await response.aread()
                    result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                    return result
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        _event(result, line[6:], time.perf_counter())
        except httpx.RemoteProtocolError as exc:
            if not answered and not retried:
                retried = True
                continue
            result.error = f"{type(exc).__name__}: {exc}"
        except httpx.HTTPError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.ended = time.perf_counter()
        return result


def _event(result: StreamResult, data: str, now: float) -> None:
    if data == "[DONE]":
        result.done = True
        return
    chunk = json.loads(data)
    if "error" in chunk:
        result.error = str(chunk["error"])[:200]
        return
    usage = chunk.get("usage")
    if usage and usage.get("completion_tokens") is not None:  # stream_options.include_usage
        result.usage_tokens = usage["completion_tokens"]
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            result.token_times.append(now)
            result.text += content
        elif delta.get("tool_calls"):  # output too, though not text (bench/constrained.py)
            result.token_times.append(now)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]


def stream_direct(llm: Any, work: ChatWork) -> StreamResult:
    """The same request as a plain `Llama.create_chat_completion(stream=True)` call in this process."""
    result = StreamResult(contender="direct", alias="-", started=time.perf_counter())
    kwargs: dict[str, Any] = {"max_tokens": work.max_tokens, "temperature": 0.0, "stream": True}
    if work.ban_end_of_turn:
        kwargs["logit_bias"] = {t: -100.0 for t in work.ban_end_of_turn}
    try:
        for chunk in llm.create_chat_completion(MESSAGES, **kwargs):
            now = time.perf_counter()
            choice = chunk["choices"][0]
            content = choice["delta"].get("content")
            if content:
                result.token_times.append(now)
                result.text += content
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        result.done = True
    except Exception as exc:  # recorded, not raised: one failure must not lose the whole run
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended = time.perf_counter()
    return result
