"""`refusal` is in every chat message, as OpenAI sends it: null in a message, null in a choice's first delta."""

from __future__ import annotations

import json

import httpx

from tests.e2e.conftest import RunningServer

CLASSIC = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the capital of France."},
]


def test_message_carries_a_null_refusal(server: RunningServer) -> None:
    body = {"model": "smollm2", "messages": CLASSIC, "max_tokens": 4}
    message = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None


def test_first_delta_of_each_choice_carries_a_null_refusal(server: RunningServer) -> None:
    body = {"model": "smollm2", "messages": CLASSIC, "max_tokens": 4, "n": 2, "stream": True}
    deltas: dict[int, list[dict]] = {}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    deltas.setdefault(choice["index"], []).append(choice["delta"])
    assert set(deltas) == {0, 1}
    for choice_deltas in deltas.values():
        first, rest = choice_deltas[0], choice_deltas[1:]
        assert first == {"role": "assistant", "content": "", "refusal": None}
        assert rest and all("refusal" not in d for d in rest)  # OpenAI sends it once, with the role
