"""The real server, the real model, the official openai client."""

from __future__ import annotations

import math
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer

CLASSIC = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the capital of France."},
]


def test_models_list_shows_every_alias(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2", "smollm2-embed"]
    card = client.models.retrieve("smollm2")
    assert card.id == "smollm2" and card.object == "model"
    assert card.model_extra and card.model_extra["n_ctx"] == 2048


def test_chat_answers_the_classic_question(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=CLASSIC)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.role == "assistant"
    assert reply.model == "smollm2" and reply.id.startswith("chatcmpl-")
    usage = reply.usage
    assert usage.prompt_tokens > 10 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_accepts_text_content_parts(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "Name the capital"}, {"type": "text", "text": " of France."}]
    reply = client.chat.completions.create(
        model="smollm2", messages=[CLASSIC[0], {"role": "user", "content": parts}], temperature=0
    )
    assert "Paris" in reply.choices[0].message.content


def test_chat_streams_role_then_content_then_finish_reason(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="smollm2", messages=CLASSIC, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_stream_is_sse_framed_and_ends_with_done(server: RunningServer) -> None:
    body = {"model": "smollm2", "messages": CLASSIC, "stream": True, "max_tokens": 8}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_a_stream_answers_its_status_line_while_the_prompt_is_evaluated(server: RunningServer) -> None:
    """Headers as soon as the model has queued the request, the first token after a long prompt's
    evaluation: a client knows it was accepted, and the first token is the only write it then waits for."""
    text = " ".join(f"item{i} is number {i * 7919 % 1000}." for i in range(30))  # ~350 tokens, unique
    body = {"model": "smollm2", "messages": [{"role": "user", "content": text}], "stream": True, "max_tokens": 2}
    warm = {"model": "smollm2", "messages": CLASSIC, "max_tokens": 1}  # the model's load is not the point
    assert httpx.post(server.base_url + "/v1/chat/completions", json=warm, timeout=120).status_code == 200
    started = time.perf_counter()
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as response:
        headers_at = time.perf_counter() - started
        assert response.status_code == 200
        first_at = next(time.perf_counter() - started for line in response.iter_lines() if line.startswith("data: "))
    assert headers_at < first_at / 2, (headers_at, first_at)


def test_a_client_that_hangs_up_after_the_status_line_stops_its_generation(server: RunningServer) -> None:
    """Headers now go out before the prompt is evaluated: a client that leaves in between is noticed
    there too, and its prompt and 800 tokens (well over 10 s here) are not worked through."""
    text = " ".join(f"entry{i} reads {i * 104729 % 1000}." for i in range(90))  # ~1,000 tokens, unique
    body = {"model": "smollm2", "messages": [{"role": "user", "content": text}], "stream": True,
            "max_tokens": 800, "temperature": 0, "logit_bias": {"2": -100}}
    request_id = f"hang-up-{time.time_ns()}"
    started = time.monotonic()
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120,
                      headers={"X-Request-ID": request_id}) as response:
        assert response.status_code == 200
    while time.monotonic() - started < 10:
        stopped = [line for line in server.log().splitlines()
                   if request_id in line and '"event":"generation_stopped"' in line]
        if stopped:
            break
        time.sleep(0.2)
    assert stopped and '"reason":"client_gone"' in stopped[0]


def test_max_tokens_and_stop_are_honoured(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count from 1 to 50."}], max_tokens=5, temperature=0
    )
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    stopped = client.chat.completions.create(model="smollm2", messages=CLASSIC, stop=["Paris"], temperature=0)
    assert "Paris" not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    ask = dict(model="smollm2", messages=[{"role": "user", "content": "Write a word."}], temperature=1.0,
               max_tokens=12, seed=1234)
    first = client.chat.completions.create(**ask).choices[0].message.content
    assert client.chat.completions.create(**ask).choices[0].message.content == first


def test_completions_single_and_list_prompts(client: openai.OpenAI) -> None:
    one = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert "Paris" in one.choices[0].text
    many = client.completions.create(model="smollm2", prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    assert "4" in many.choices[0].text and "d" in many.choices[1].text
    assert many.usage.completion_tokens == 8


def test_completions_echo_and_default_length(client: openai.OpenAI) -> None:
    echoed = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("The capital of France is")
    default = client.completions.create(model="smollm2", prompt="Once upon a time", temperature=0)
    assert default.usage.completion_tokens <= 256  # the alias default caps it


def test_completions_stream(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(
        model="smollm2", prompt=["The capital of France is", "1, 2, 3,"], max_tokens=6, temperature=0, stream=True
    ))
    by_index: dict[int, str] = {}
    finishes = {}
    for chunk in chunks:
        choice = chunk.choices[0]
        by_index[choice.index] = by_index.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert "Paris" in by_index[0] and "4" in by_index[1]
    assert finishes == {0: "length", 1: "length"}


def test_embeddings_in_input_order_and_normalised(client: openai.OpenAI) -> None:
    texts = ["Paris is the capital of France.", "The cat sat on the mat.", "Paris is the capital of France."]
    result = client.embeddings.create(model="smollm2-embed", input=texts)  # the client asks for base64
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert len(vectors[0]) == 576
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert math.sqrt(sum(x * x for x in vectors[1])) == pytest.approx(1.0, abs=1e-3)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens == result.usage.prompt_tokens
    as_floats = client.embeddings.create(model="smollm2-embed", input=texts[0], encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=CLASSIC)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_wrong_kind_of_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-embed", messages=CLASSIC)
    assert "embedding model" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="smollm2", input="x")
    assert "not an embedding model" in info.value.body["message"]


def test_bad_input_is_400_naming_the_field(client: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=CLASSIC, extra_body={"temperature": "hot"})
    assert info.value.body["param"] == "temperature" and info.value.body["type"] == "invalid_request_error"
    response = httpx.post(server.base_url + "/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=CLASSIC, audio={"voice": "alloy", "format": "mp3"})
    assert info.value.body["param"] == "audio"
