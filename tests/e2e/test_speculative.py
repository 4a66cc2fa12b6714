"""Issue 32: speculative decoding (prompt lookup) is on by default and never changes the output.

Each comparison sends a prompt once to put it in the cache, then with drafts off (`speculative.n_max: 0`)
and with the alias's default: both runs evaluate the same one prompt token and then generate, so any
difference would come from speculation. The metrics prove drafts were sent and verified."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ROOT, RunningServer

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# Texts the model tends to copy (our own files and sentences), and instructions around them.
SOURCES = [
    (ROOT / "server" / "engine" / "worker" / "tokens.py").read_text()[:1400],
    (ROOT / "server" / "engine" / "worker" / "ngram.py").read_text()[:1400],
    (ROOT / "tests" / "e2e" / "test_speculative.py").read_text()[:900],
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Monday: buy milk, eggs and bread. Tuesday: call the plumber about the kitchen sink. Wednesday: "
    "return the library books before noon. Thursday: pay the electricity bill. Friday: dinner with Anna.",
]
INSTRUCTIONS = [
    "Repeat the following text exactly:\n\n{text}",
    "{text}\n\nCopy the text above word for word.",
    "Rewrite this, changing nothing but the first word:\n\n{text}",
    "Here is a file:\n```\n{text}\n```\nReply with the same file.",
    "Summarise in one sentence:\n\n{text}",
]
FREE = ["Write a short poem about the sea.", "What is the capital of France?", "Tell me about dragons.",
        "Explain how a bicycle works.", "Give three tips for sleeping well."]


def prompts() -> list[str]:
    out = [instruction.format(text=text) for text in SOURCES for instruction in INSTRUCTIONS]  # 25
    out += [f"{question} (request {n})" for n in range(5) for question in FREE]  # 25 more
    return out


def chat(server: RunningServer, content: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "smollm2", "messages": [SYSTEM, {"role": "user", "content": content}], "max_tokens": 40,
            "temperature": 0, "logprobs": True, **extra}
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def counters(server: RunningServer) -> dict[str, float]:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    out = {}
    for name in ("draft_tokens", "accepted_tokens", "drafts"):
        found = re.search(rf'llm_spec_decode_num_{name}_total{{model="smollm2"}} (\S+)', text)
        out[name] = float(found.group(1)) if found else 0.0
    return out


def tokens_of(reply: dict[str, Any]) -> list[tuple[str, float]]:
    return [(t["token"], t["logprob"]) for t in reply["choices"][0]["logprobs"]["content"]]


def choice(reply: dict[str, Any], index: int) -> dict[str, Any]:
    """One choice of a reply as a reply of its own (usage: that choice's tokens)."""
    picked = reply["choices"][index]
    return {"choices": [picked], "usage": {"completion_tokens": len(picked["logprobs"]["content"])}}


def same_output(plain: dict[str, Any], drafted: dict[str, Any], what: str) -> None:
    a, b = tokens_of(plain), tokens_of(drafted)
    assert [t for t, _ in a] == [t for t, _ in b], f"{what}: tokens differ"
    worst = max((abs(x - y) for (_, x), (_, y) in zip(a, b)), default=0.0)
    assert worst <= 1e-3, f"{what}: logprobs differ by {worst}"
    assert plain["choices"][0]["message"]["content"] == drafted["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] == drafted["usage"]["completion_tokens"] == len(a)
    assert plain["choices"][0]["finish_reason"] == drafted["choices"][0]["finish_reason"]


def test_greedy_output_identical_with_and_without_drafts_across_50_prompts(server: RunningServer) -> None:
    before = counters(server)
    for number, content in enumerate(prompts()):
        chat(server, content, **{"speculative.n_max": 0})  # cached from now on
        plain = chat(server, content, **{"speculative.n_max": 0})
        drafted = chat(server, content)
        same_output(plain, drafted, f"prompt {number}")
    after = counters(server)
    drafted_tokens = after["draft_tokens"] - before["draft_tokens"]
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    assert drafted_tokens >= 100, "speculation never drafted: the comparison proved nothing"
    assert 0 < accepted <= drafted_tokens
    assert after["drafts"] > before["drafts"]


def test_seeded_sampling_and_schemas_are_unchanged_by_drafts(server: RunningServer) -> None:
    content = INSTRUCTIONS[0].format(text=SOURCES[3])
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    cases: list[dict[str, Any]] = [
        {"temperature": 0.9, "seed": 11},
        {"temperature": 0.7, "top_p": 0.9, "seed": 5, "logit_bias": {"28": 2}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "copy", "schema": schema}},
         "max_tokens": 80},
        {"stop": ["lazy dog. The quick"], "max_tokens": 80},  # a stop string met inside a draft
        {"n": 2, "temperature": 0.8, "seed": 3},  # two sequences drafting in one batch
    ]
    before = counters(server)
    for case in cases:
        chat(server, content, **case, **{"speculative.n_max": 0})
        plain = chat(server, content, **case, **{"speculative.n_max": 0})
        drafted = chat(server, content, **case)
        if "n" not in case:
            same_output(plain, drafted, json.dumps(case))
        for index in range(case.get("n", 0)):
            same_output(choice(plain, index), choice(drafted, index), json.dumps(case))
        if "response_format" in case and drafted["choices"][0]["finish_reason"] == "stop":
            assert "text" in json.loads(drafted["choices"][0]["message"]["content"])
    assert counters(server)["accepted_tokens"] > before["accepted_tokens"]


def test_request_can_turn_drafts_off_and_bad_values_are_refused(server: RunningServer) -> None:
    content = INSTRUCTIONS[0].format(text=SOURCES[3])
    before = counters(server)
    chat(server, content, **{"speculative.n_max": 0})
    chat(server, content, **{"speculative.n_max": 0})
    assert counters(server) == before
    for bad in (-1, 10_000, "many"):
        response = httpx.post(server.base_url + "/v1/chat/completions", timeout=30, json={
            "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "speculative.n_max": bad})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("key", ["n_max: -1", "ngram_size: 0", "sizes: 3"])
def test_bad_speculative_settings_are_refused_at_start(tmp_path: Path, key: str) -> None:
    from server.registry import RegistryError, parse_registry

    text = f"models:\n  a:\n    path: x.gguf\n    speculative: {{{key}}}\n"
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, base_dir=tmp_path)
    assert "models.a.speculative" in str(caught.value.problems)


DRAFTED = """
models:
  drafted:
    path: "{model}"
    n_ctx: 1024
    n_parallel: 2
    speculative: {draft_model: drafter, ngram: false}
  drafter:
    path: "{model}"
    n_ctx: 1024
"""


def test_a_draft_model_alias_drafts_in_the_same_worker_without_changing_the_output(make_server: Any) -> None:
    from tests.e2e.conftest import MODEL

    server = make_server(DRAFTED.replace("{model}", str(MODEL)))
    contents = [FREE[0], FREE[3], INSTRUCTIONS[4].format(text=SOURCES[4])]
    for content in contents:
        body = {"model": "drafted", "messages": [SYSTEM, {"role": "user", "content": content}], "max_tokens": 40,
                "temperature": 0, "logprobs": True}
        url = server.base_url + "/v1/chat/completions"
        httpx.post(url, json={**body, "speculative.n_max": 0}, timeout=120)
        plain = httpx.post(url, json={**body, "speculative.n_max": 0}, timeout=120).json()
        drafted = httpx.post(url, json=body, timeout=120).json()
        same_output(plain, drafted, content)
    metrics = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = re.search(r'llm_spec_decode_num_accepted_tokens_total{model="drafted"} (\S+)', metrics)
    assert found and float(found.group(1)) >= 20  # the model drafts itself: its guesses are right
    pool = httpx.get(server.base_url + "/admin/pool", timeout=10).json()
    loaded = {entry["id"] for entry in pool["models"] if entry["loaded"]}
    assert loaded == {"drafted"}  # the draft model is inside that alias's worker, not loaded as an alias


@pytest.mark.parametrize("draft", ["nobody", "a", "e"])
def test_a_draft_model_must_be_another_chat_alias(tmp_path: Path, draft: str) -> None:
    from server.registry import RegistryError, parse_registry
    from tests.e2e.conftest import MODEL

    text = (f"models:\n  a:\n    path: {MODEL}\n    speculative: {{draft_model: {draft}}}\n"
            f"  e:\n    path: {MODEL}\n    embedding: true\n")
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, base_dir=tmp_path)
    assert any("models.a.speculative.draft_model" in p for p in caught.value.problems)


def test_predicted_output_is_drafted_from_and_reported_in_usage(server: RunningServer) -> None:
    content = INSTRUCTIONS[3].format(text=SOURCES[0][:600])
    first = chat(server, content, **{"speculative.n_max": 0})
    assert "completion_tokens_details" not in first["usage"]  # unchanged without a prediction
    plain = chat(server, content, **{"speculative.n_max": 0})
    answer = plain["choices"][0]["message"]["content"]
    predicted = chat(server, content, prediction={"type": "content", "content": answer})
    same_output(plain, predicted, "prediction")
    details = predicted["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] >= predicted["usage"]["completion_tokens"] // 2
    assert details["rejected_prediction_tokens"] >= 0
    # Streamed, as parts: the usage chunk carries the same details.
    body = {"model": "smollm2", "messages": [SYSTEM, {"role": "user", "content": content}], "max_tokens": 40,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "prediction": {"type": "content", "content": [{"type": "text", "text": answer}]}}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer
    assert chunks[-1]["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] > 0
    bad = httpx.post(server.base_url + "/v1/chat/completions", timeout=30, json={
        "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "audio"}})
    assert bad.status_code == 400


def test_a_draft_model_counts_in_its_alias_memory_estimate(tmp_path: Path) -> None:
    from server.registry import kv_bytes, parse_registry
    from tests.e2e.conftest import MODEL

    text = (f"models:\n  a:\n    path: {MODEL}\n    speculative: {{draft_model: b}}\n"
            f"  b:\n    path: {MODEL}\n")
    models = parse_registry(text, base_dir=tmp_path).models
    assert models["a"].speculative.draft_path == str(MODEL)
    assert kv_bytes(models["a"]) == 2 * kv_bytes(models["b"])
