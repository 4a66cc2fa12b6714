"""Hostile input against the real server and model: each request is refused with a 4xx in OpenAI's
envelope before anything native runs, and the server stays up (issue 12)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import MODEL, RunningServer, start_server, stop_server

YAML = """
pool: {{max_resident: 3}}
models:
  smollm2:
    path: {model}
    n_ctx: 512
    n_parallel: 2
    max_sequences_per_request: 6
    sampling: {{temperature: 0.0}}
  smollm2-embed:
    path: {model}
    n_ctx: 512
    embedding: true
    pooling_type: mean
  broken:
    path: {broken}
"""
POSTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize"]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("hostile")
    # GGUF magic, version 3, then garbage: the first key claims to be 2**63 bytes long.
    (folder / "broken.gguf").write_bytes(b"GGUF\x03\0\0\0" + b"\xff" * 64)
    (folder / "models.yaml").write_text(YAML.format(model=MODEL, broken=folder / "broken.gguf"))
    running = start_server(folder / "models.yaml", folder / "server.log")
    yield running
    stop_server(running)


def post(server: RunningServer, path: str, body: object = None, content: bytes | None = None,
         timeout: float = 60) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(server.base_url + path, content=content, headers={"content-type": "application/json"},
                      timeout=timeout)


def refused(response: httpx.Response, param: str | None = None) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    return error


def alive(server: RunningServer) -> None:
    assert server.process.poll() is None, server.log()
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200


# Row 1: an empty embeddings input reached llama.cpp, answered 500 and left the model to segfault on unload.

@pytest.mark.parametrize("text_input", ["", ["a", ""], [""], []])
def test_empty_embedding_inputs_are_refused_before_llama_cpp(hostile: RunningServer, text_input: object) -> None:
    refused(post(hostile, "/v1/embeddings", {"model": "smollm2-embed", "input": text_input}), "input")
    unloaded = httpx.post(hostile.base_url + "/admin/models/smollm2-embed/unload", timeout=30)
    assert unloaded.status_code == 200
    alive(hostile)
    reply = post(hostile, "/v1/embeddings", {"model": "smollm2-embed", "input": ["a", "b"]})
    assert reply.status_code == 200 and len(reply.json()["data"]) == 2


# Rows 2, 3 and 13: schemas that made the grammar builder overflow the C stack or grow without bound.

HUGE_SCHEMAS = {
    "maxLength 30000": {"type": "string", "maxLength": 30000},
    "minLength 1e9": {"type": "string", "minLength": 1_000_000_000},
    "maxItems 1e6": {"type": "array", "items": {"type": "integer"}, "maxItems": 1_000_000},
    "nested quantifiers": {"type": "string", "pattern": "^((a{100}){100}){100}$"},
    "many repetitions": {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000}
                                                         for i in range(20)}},
    "deep": json.loads('{"type": "array", "items": ' * 100 + '{"type": "string"}' + "}" * 100),
}


@pytest.mark.parametrize("name", list(HUGE_SCHEMAS))
def test_response_format_schemas_past_the_limits_are_400_at_once(hostile: RunningServer, name: str) -> None:
    body = {"model": "smollm2", "messages": HI, "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": HUGE_SCHEMAS[name]}}}
    started = time.monotonic()
    error = refused(post(hostile, "/v1/chat/completions", body, timeout=10), "response_format")
    assert time.monotonic() - started < 2
    assert "limit" in error["message"]
    alive(hostile)


@pytest.mark.parametrize("name", ["maxLength 30000", "minLength 1e9"])
def test_tool_parameter_schemas_past_the_limits_are_400_naming_tools(hostile: RunningServer, name: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"s": HUGE_SCHEMAS[name]}, "required": ["s"]}}}
    body = {"model": "smollm2", "messages": HI, "max_tokens": 4, "tools": [tool], "tool_choice": "required"}
    error = refused(post(hostile, "/v1/chat/completions", body, timeout=10), "tools")
    assert "limit" in error["message"]
    alive(hostile)


def test_an_invalid_tool_schema_is_400_naming_tools(hostile: RunningServer) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "s": {"$ref": "#/definitions/nowhere"}}}}}
    body = {"model": "smollm2", "messages": HI, "max_tokens": 4, "tools": [tool], "tool_choice": "required"}
    refused(post(hostile, "/v1/chat/completions", body), "tools")


def test_a_schema_within_the_limits_still_constrains_the_output(hostile: RunningServer) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 1000}}, "required": ["name"]}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Give a name as JSON."}], "max_tokens": 40,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    reply = post(hostile, "/v1/chat/completions", body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("{")


# Row 4: a body nested 1000 deep, or bytes that are not UTF-8, answered 500.

@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("raw", [
    b'{"model": "smollm2", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"model": "smollm2", "prompt": "\xff\xfe", "input": "\xc3\x28", "messages": [], "tokens": []}',
    b'{"model": "smo\xffllm2", "prompt": "x"}',
    b'{"model": "smollm2", "prompt": "\\ud800", "input": "\\udfff", "tokens": [1]}',
], ids=["nested-1000", "nested-100000", "invalid-utf8", "invalid-utf8-model", "lone-surrogates"])
def test_nested_or_undecodable_bodies_are_400(hostile: RunningServer, path: str, raw: bytes) -> None:
    response = post(hostile, path, content=raw)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_server_is_alive_after_the_bodies(hostile: RunningServer) -> None:
    alive(hostile)
    assert '"level":"error"' not in hostile.log()


# Row 6: garbage after the GGUF magic made the footprint estimate raise, and /metrics and /admin/pool with it.

def test_monitoring_answers_while_a_broken_file_is_registered(hostile: RunningServer) -> None:
    assert httpx.get(hostile.base_url + "/metrics").status_code == 200
    pool = httpx.get(hostile.base_url + "/admin/pool")
    assert pool.status_code == 200
    broken = next(m for m in pool.json()["models"] if m["id"] == "broken")
    assert broken["estimated_bytes"] > 0
    response = post(hostile, "/v1/completions", {"model": "broken", "prompt": "x", "max_tokens": 1})
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_load_failed"
    alive(hostile)
    assert httpx.get(hostile.base_url + "/metrics").status_code == 200


# Row 10: sequences per request (prompts x n), and the other lists a request can send.

def test_sequences_past_the_alias_cap_are_refused(hostile: RunningServer) -> None:
    error = refused(post(hostile, "/v1/completions", {"model": "smollm2", "prompt": ["a"] * 4, "n": 2}), "n")
    assert "8 sequences" in error["message"] and "limit of 6" in error["message"]
    refused(post(hostile, "/v1/completions", {"model": "smollm2", "prompt": ["a"] * 7}), "prompt")
    refused(post(hostile, "/v1/chat/completions", {"model": "smollm2", "messages": HI, "n": 7}), "n")
    ok = post(hostile, "/v1/completions", {"model": "smollm2", "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 6


@pytest.mark.parametrize(("extra", "param"), [
    ({"stop": ["x" * 1025]}, "stop"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    ({"n": 17}, "n"),
])
def test_lists_past_their_limits_are_refused(hostile: RunningServer, extra: dict, param: str) -> None:  # type: ignore[type-arg]
    for path, body in [("/v1/completions", {"model": "smollm2", "prompt": "x"}),
                       ("/v1/chat/completions", {"model": "smollm2", "messages": HI})]:
        refused(post(hostile, path, {**body, **extra, "max_tokens": 1}), param)


def test_too_many_tools_are_refused(hostile: RunningServer) -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    refused(post(hostile, "/v1/chat/completions", {"model": "smollm2", "messages": HI, "tools": tools}), "tools")


# Row 11: an embedding input past 512 tokens (n_batch) was cut to 512 without a word.

def test_an_embedding_input_is_embedded_whole_or_refused(server: RunningServer) -> None:
    """The shipped models.yaml: smollm2-embed has n_ctx 2048."""
    head = "The quick brown fox jumps over the lazy dog. " * 60  # about 600 tokens
    texts = [head + "It was a sunny day.", head + "Rain fell all night long over the hills."]
    tokens = [len(post(server, "/tokenize", {"model": "smollm2-embed", "prompt": t}).json()["tokens"])
              for t in texts]
    assert min(tokens) > 520
    reply = post(server, "/v1/embeddings", {"model": "smollm2-embed", "input": texts})
    assert reply.status_code == 200, reply.text
    first, second = (item["embedding"] for item in reply.json()["data"])
    assert first != second  # the tails past token 512 count
    assert reply.json()["usage"]["prompt_tokens"] == sum(tokens)
    too_long = post(server, "/v1/embeddings", {"model": "smollm2-embed", "input": head * 5})
    assert refused(too_long, "input")["code"] == "context_length_exceeded"


# Integers past what the worker wire (msgpack, int64) takes: found by the fuzzer, answered 500.

@pytest.mark.parametrize(("path", "body", "param"), [
    ("/detokenize", {"model": "smollm2", "tokens": [1, -(10**30)]}, "tokens[1]"),
    ("/detokenize", {"model": "smollm2", "tokens": [10**20]}, "tokens[0]"),
    ("/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "seed": 10**30},
     "seed"),
    ("/v1/completions", {"model": "smollm2", "prompt": "x", "max_tokens": 10**20}, "max_tokens"),
    ("/v1/completions", {"model": "smollm2", "prompt": "x", "logit_bias": {str(10**25): 1}}, "logit_bias"),
])
def test_integers_out_of_range_are_400(hostile: RunningServer, path: str, body: dict, param: str) -> None:  # type: ignore[type-arg]
    refused(post(hostile, path, body), param)


# Issue 34: special tokens by the hundred thousand. llama.cpp's tokenizer takes time in the square of
# their number (in-process, 20,000 `<|im_end|>` took 10 s), in the worker, while every other request of the
# alias waited: now a prompt that cannot fit the context is refused from a count of its special tokens
# before it is tokenized, and one that can is tokenized in linear time.

def test_a_prompt_of_special_tokens_past_the_context_is_refused_untokenized(hostile: RunningServer) -> None:
    prompt = "<|im_end|>x" * 380_000  # 4.2 MB, under the body limit
    response = post(hostile, "/v1/completions", {"model": "smollm2", "prompt": prompt, "max_tokens": 1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "at least 380000" in error["message"]
    assert "at least" in post(hostile, "/v1/completions", {"model": "smollm2", "prompt": "word " * 200_000,
                                                           "max_tokens": 1}).json()["error"]["message"]
    alive(hostile)


def test_special_tokens_within_the_context_are_the_model_s_own(hostile: RunningServer) -> None:
    text = "<|im_start|>user\nhi<|im_end|>\n" * 40
    tokens = post(hostile, "/tokenize", {"model": "smollm2", "prompt": text, "add_special_tokens": False})
    assert tokens.json()["tokens"][:4] == [1, 4093, 198, 6004] and tokens.json()["count"] == 40 * 6
