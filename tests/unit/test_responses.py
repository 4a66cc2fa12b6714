"""Responses API pieces without a model: the SQLite store, input mapping, pagination and the event mapper."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server.engine import Usage as EngineUsage
from server.errors import InvalidRequestError, UnsupportedParameterError
from server.protocol.responses import ResponseRequest
from server.protocol.responses_response import OutputMessage, ReasoningOutput
from server.response_store import ResponseStore, StoredResponse, StoreUnavailableError
from server.services.generation.events import Call, CallDelta, Calls, Finished, Reasoning, Started, Text
from server.services.responses.input import input_items, messages
from server.services.responses.service import page
from server.services.responses.stream import EventMapper


def record(response_id: str) -> StoredResponse:
    return StoredResponse(id=response_id, response={"id": response_id, "output": []},
                          input_items=[{"id": "msg_1", "type": "message"}], context=[{"id": "msg_1"}])


def test_store_round_trip_in_wal_mode_shared_by_two_stores(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "responses.sqlite3")
    one, other = ResponseStore(path, 0), ResponseStore(path, 0)
    asyncio.run(one.put(record("resp_a")))
    got = asyncio.run(other.get("resp_a"))  # another process would open the file the same way
    assert got is not None and got.response["id"] == "resp_a" and got.input_items[0]["id"] == "msg_1"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert asyncio.run(other.delete("resp_a")) is True
    assert asyncio.run(one.get("resp_a")) is None
    assert asyncio.run(one.delete("resp_a")) is False


def test_another_process_shares_the_store(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    store = ResponseStore(path, 0)
    asyncio.run(store.put(record("resp_here")))
    other = (
        "import asyncio, sys\n"
        "from server.response_store import ResponseStore, StoredResponse\n"
        "store = ResponseStore(sys.argv[1], 0)\n"
        "assert asyncio.run(store.get('resp_here')) is not None\n"
        "asyncio.run(store.put(StoredResponse(id='resp_there', response={}, input_items=[], context=[])))\n"
    )
    subprocess.run([sys.executable, "-c", other, path], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])
    assert asyncio.run(store.get("resp_there")) is not None


def test_store_forgets_responses_past_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = ResponseStore(path, retention_seconds=3600)
    asyncio.run(store.put(record("resp_old")))
    assert asyncio.run(store.get("resp_old")) is not None
    with sqlite3.connect(path) as conn:  # two hours pass
        conn.execute("UPDATE responses SET created_at = created_at - 7200")
    assert asyncio.run(store.get("resp_old")) is None  # expired at once, swept or not
    store._last_purge = 0.0  # the last sweep was long ago
    asyncio.run(store.put(record("resp_new")))
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM responses")] == ["resp_new"]


def test_unwritable_store_is_a_503_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = ResponseStore(str(blocker / "responses.sqlite3"), 0)
    with pytest.raises(StoreUnavailableError) as failed:
        asyncio.run(store.get("resp_x"))
    assert failed.value.status_code == 503 and "--responses-db" in failed.value.message


def test_input_items_map_to_the_cores_messages() -> None:
    request = ResponseRequest(model="m", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "Weather"}, {"type": "input_text", "text": "?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ])
    items = input_items(request)
    assert [i["id"][:3] for i in items] == ["msg", "msg", "fc_", "fc_", "fco"]
    mapped = messages("Be brief.", items)
    assert [m.role for m in mapped] == ["system", "user", "assistant", "tool"]
    assert mapped[1].content == "Weather?"
    assistant = mapped[2]
    assert assistant.content == "Let me check." and [c.id for c in assistant.calls] == ["c1", "c2"]
    assert mapped[3].call_id == "c1" and mapped[3].content == "sunny"


def test_unsupported_input_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedParameterError) as refused:
        input_items(ResponseRequest(model="m", input=[{"type": "input_file", "file_id": "f"}]))
    assert refused.value.param == "input[0].type"
    with pytest.raises(InvalidRequestError) as bad:
        input_items(ResponseRequest(model="m", input=[{"type": "function_call", "name": "f"}]))
    assert bad.value.param == "input[0]"


def test_input_item_pages() -> None:
    items = [{"id": f"i{n}"} for n in range(5)]
    newest = page(items, limit=2, order="desc", after=None, before=None)
    assert [i["id"] for i in newest.data] == ["i4", "i3"] and newest.has_more
    following = page(items, limit=2, order="desc", after=newest.last_id, before=None)
    assert [i["id"] for i in following.data] == ["i2", "i1"] and following.has_more
    oldest = page(items, limit=10, order="asc", after=None, before="i2")
    assert [i["id"] for i in oldest.data] == ["i0", "i1"] and not oldest.has_more
    with pytest.raises(InvalidRequestError):
        page(items, limit=2, order="asc", after="nope", before=None)


USAGE = EngineUsage(prompt_tokens=5, completion_tokens=2, cached_tokens=0)


def test_event_mapper_closes_text_before_a_call_and_numbers_events() -> None:
    mapper = EventMapper()
    events = mapper.events([Started(5), Text(0, "Hi")])
    events += mapper.events([CallDelta(0, 0, "call_1", "f", '{"a":')])  # the call as it is written
    events += mapper.events([CallDelta(0, 0, None, None, "1}"), Calls(0, [Call("call_1", "f", '{"a":1}')]),
                             Finished(0, "tool_calls", None, USAGE)])
    events += mapper.close()
    assert [e.type for e in events] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.output_index for e in events][-1] == 1
    message, function_call = mapper.items
    assert message.content[0].text == "Hi"  # type: ignore[union-attr]
    assert function_call.arguments == '{"a":1}' and function_call.call_id == "call_1"  # type: ignore[union-attr]
    assert mapper.finish_reason == "tool_calls" and mapper.usage == (5, 2, 0)


def test_event_mapper_gives_an_empty_answer_its_message() -> None:
    mapper = EventMapper()
    mapper.events([Started(5), Finished(0, "stop", None, USAGE)])
    assert [e.type for e in mapper.close()][:2] == ["response.output_item.added", "response.content_part.added"]
    [message] = mapper.items
    assert isinstance(message, OutputMessage) and message.content[0].text == "" and message.status == "completed"


def test_event_mapper_streams_reasoning_as_its_own_item_before_the_message() -> None:
    mapper = EventMapper()
    events = mapper.events([Started(5), Reasoning(0, "Hm")])
    events += mapper.events([Reasoning(0, ", Paris."), Text(0, "Paris")])
    events += mapper.events([Finished(0, "stop", None, USAGE)]) + mapper.close()
    assert [e.type for e in events] == [
        "response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
    ]
    reasoning, message = mapper.items
    assert isinstance(reasoning, ReasoningOutput) and reasoning.content[0].text == "Hm, Paris."
    assert events[3].text == "Hm, Paris." and events[5].output_index == 1
    assert isinstance(message, OutputMessage) and message.content[0].text == "Paris"


def test_reasoning_sent_back_as_input_is_accepted_and_not_prompted() -> None:
    items = input_items(ResponseRequest(model="m", input=[
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "x"}]},
        {"type": "message", "role": "assistant", "content": "hello"},
    ]))
    assert [i["type"] for i in items] == ["message", "reasoning", "message"]
    assert [m.role for m in messages(None, items)] == ["user", "assistant"]
