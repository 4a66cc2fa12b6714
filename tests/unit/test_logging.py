"""The JSON log line: every event is one parseable object, whatever its values."""

from __future__ import annotations

import json

import pytest
import structlog

from server.telemetry.logging import RUNNING, AccessLog, JsonLine, RunningRequest, configure_logging


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class Custom:
    def __structlog__(self) -> str:
        return "custom"


def test_values_json_has_no_type_for_become_text() -> None:
    line = JsonLine()(None, "info", {"event": "request", "status": 200, "duration_s": 0.0001,
                                     "what": Opaque(), "who": Custom(), "when": {"nested": [1, 2.5]}})
    assert json.loads(line) == {"event": "request", "status": 200, "duration_s": 0.0001, "what": "<opaque>",
                                "who": "custom", "when": {"nested": [1, 2.5]}}
    assert "\n" not in line


def test_the_access_line_is_the_line_the_structlog_pipeline_writes(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    try:
        bound = RUNNING.set(RunningRequest('a"b'))
        fields = {"method": "GET", "route": "/v1/\\x\"y", "model": "-", "status": 200, "duration_s": 0.0012}
        structlog.get_logger("server.access.check").info("request", **fields)
        structlog.get_logger("server.access.check").info("request", **fields, prompt_tokens=5, completion_tokens=7)
        finished = ('a"b', False, "GET", '/v1/\\x"y', "-", 200, 0.00123, None, None, False)
        AccessLog("info").requests([finished, (*finished[:7], 5, 7, False), ("ab12", *finished[1:])])
        AccessLog("info").requests([(*finished[:1], True, *finished[2:])])  # a probe: debug, not written at info
        AccessLog("debug").requests([(*finished[:1], True, *finished[2:])])
    finally:
        RUNNING.reset(bound)
        structlog.reset_defaults()
    pipeline, with_tokens, fast, fast_tokens, own_id, probe = capsys.readouterr().out.splitlines()
    assert json.loads(own_id)["request_id"] == "ab12"
    assert pipeline.split('"timestamp"')[0] == fast.split('"timestamp"')[0]  # the same bytes up to the time
    assert with_tokens.split('"timestamp"')[0] == fast_tokens.split('"timestamp"')[0]
    assert json.loads(fast)["route"] == '/v1/\\x"y'
    assert json.loads(probe)["level"] == "debug"
    assert json.loads(fast)["timestamp"].endswith("Z")
