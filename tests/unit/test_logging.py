"""The JSON log line: every event is one parseable object, whatever its values."""

from __future__ import annotations

import json

from server.logging import JsonLine


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
