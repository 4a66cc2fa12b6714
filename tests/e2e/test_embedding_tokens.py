"""Embeddings of token ids (`[1, 2, 3]`, `[[1, 2], [3]]`): the model's own ids, as llama-server and vLLM
take them and as LangChain's OpenAIEmbeddings sends them. The ids of a text embed exactly as the text."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer

MODEL = "smollm2-embed"
TEXTS = ["The capital of France is Paris.", "Bananas are yellow."]


def token_ids(server: RunningServer, text: str) -> list[int]:
    answer = httpx.post(server.base_url + "/tokenize", json={"model": MODEL, "prompt": text}, timeout=60)
    return answer.json()["tokens"]


def test_token_ids_embed_as_their_text(server: RunningServer, client: openai.OpenAI) -> None:
    ids = [token_ids(server, text) for text in TEXTS]
    from_text = client.embeddings.create(model=MODEL, input=TEXTS)
    from_ids = client.embeddings.create(model=MODEL, input=ids)
    assert [d.index for d in from_ids.data] == [0, 1]
    for a, b in zip(from_text.data, from_ids.data):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-4
    # Different texts, different vectors: the comparison above is not between two constants.
    assert max(abs(x - y) for x, y in zip(from_ids.data[0].embedding, from_ids.data[1].embedding)) > 1e-2
    assert from_ids.usage.prompt_tokens == from_text.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_one_flat_list_of_ids_is_one_input(server: RunningServer, client: openai.OpenAI) -> None:
    ids = token_ids(server, TEXTS[0])
    flat = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    text = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert len(flat.data) == 1 and flat.usage.prompt_tokens == len(ids)
    assert max(abs(x - y) for x, y in zip(flat.data[0].embedding, text.data[0].embedding)) < 1e-4


@pytest.mark.parametrize("bad", [[1, 2, 10**9], [[1, 2], [49152]]])
def test_ids_outside_the_vocabulary_are_a_400(client: openai.OpenAI, bad: list) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=bad)
    assert info.value.body["param"] == "input" and "vocabulary" in info.value.body["message"]


@pytest.mark.parametrize("bad", [[[1, 2], [-1]], [10**20]])
def test_ids_that_are_no_token_id_at_all_are_a_400(client: openai.OpenAI, bad: list) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=bad)
    assert info.value.body["param"].startswith("input")


def test_ids_past_the_context_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=[[42] * 2049])  # the alias's n_ctx is 2048
    assert info.value.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("bad", [["text", [1, 2]], [[1, 2], 3], [[1, 2], []]])
def test_mixed_or_empty_token_inputs_are_a_400(client: openai.OpenAI, bad: list) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=bad)
    assert info.value.body["param"] == "input"
