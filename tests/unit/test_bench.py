"""The benchmark's own arithmetic and detectors, on made-up results: nothing here is timed."""

from __future__ import annotations

import json
import statistics
import math

import pytest

from bench.loadgen import parse_wrk
from bench.measures import StreamResult, overlap, percentile, problem, total_rate
from bench.report import Check, Row, ratio, table, targets_met, to_json, write_json
from bench.streams import _event
from bench.summary import DIRECT as DIRECT_NAME, LLAMA_SERVER, OURS, summarise
from bench.workloads import Collected


def stream(contender: str = OURS, alias: str = "a", start: float = 0.0, times: list[float] | None = None,
           tokens: int = 64, finish: str | None = "length", done: bool = True) -> StreamResult:
    times = times if times is not None else [start + 0.1 + i * 0.01 for i in range(tokens)]
    return StreamResult(contender=contender, alias=alias, started=start, ended=(times[-1] if times else start) + 0.01,
                        token_times=times, text="x" * tokens, finish_reason=finish, done=done, tokens=tokens)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
    assert percentile([7], 95) == 7
    assert math.isnan(percentile([], 50))


def test_a_complete_stream_has_no_problem() -> None:
    assert problem(stream(), 64) is None


@pytest.mark.parametrize(("result", "reason"), [
    (stream(tokens=20, finish=None), "no finish_reason after 20 tokens"),  # cut short, [DONE] sent early
    (stream(done=False), "stream ended without [DONE]"),
    (stream(tokens=63), "63/64 tokens"),
])
def test_truncation_is_detected(result: StreamResult, reason: str) -> None:
    assert reason in (problem(result, 64) or "")


def test_error_is_a_problem() -> None:
    result = stream()
    result.error = "HTTP 500"
    assert problem(result, 64) == "error: HTTP 500"


def test_sse_events_fill_the_result() -> None:
    result = StreamResult(contender=OURS, alias="a", started=0.0)
    for data in ('{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
                 '{"choices":[{"delta":{"content":"1, 2"},"finish_reason":null}]}',
                 '{"choices":[{"delta":{},"finish_reason":"length"}]}', "[DONE]"):
        _event(result, data, 1.5)
    assert (result.text, result.token_times, result.finish_reason, result.done) == ("1, 2", [1.5], "length", True)


def test_total_rate_counts_wall_time_of_the_group() -> None:
    a = stream(start=0.0, times=[1.0], tokens=10)
    b = stream(start=0.5, times=[1.99], tokens=30)
    assert total_rate([a, b]) == pytest.approx(40 / 2.0)


def test_overlap_parallel_and_serial() -> None:
    parallel = overlap([0.0, 1.0, 2.0], [0.1, 1.1, 1.9])
    assert parallel.fraction == pytest.approx(1.0) and parallel.both_progress()
    serial = overlap([0.0, 1.0], [1.5, 2.5])
    assert serial.fraction == 0.0 and not serial.both_progress()
    assert not overlap([], [1.0]).both_progress()


def test_ratio_and_target() -> None:
    assert ratio(50, 100) == 0.5
    assert ratio(1, 0) is None
    assert Row("w", "m", "u", 99.0, "direct", 100.0, target=1.0).target_met is False
    assert Row("w", "m", "u", 101.0, "direct", 100.0, target=1.0).target_met is True
    assert Row("w", "ttft", "ms", 9.0, "direct", 10.0, higher_is_better=False, target=1.0).target_met is True
    assert Row("w", "m", "u", 1.0, "direct", 0.0, target=1.0).target_met is False
    assert Row("w", "m", "u", 1.0, "direct", 2.0).target_met is None


def test_table_and_json_show_misses(tmp_path) -> None:
    rows = [Row("single", "tok/s", "tok/s", 90.0, "direct", 100.0, target=1.0)]
    checks = [Check("no stream truncated", True, "4/4")]
    text = table(rows, checks)
    assert "0.90x" in text and "MISSED" in text and "no stream truncated" in text
    assert not targets_met(rows, checks)
    document = to_json(rows, checks, machine={"cores": 2}, extra=math.nan)
    write_json(tmp_path / "r.json", document)
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["rows"][0]["ratio"] == pytest.approx(0.9) and loaded["extra"] is None and not loaded["targets_met"]


def test_parse_wrk() -> None:
    output = """Running 5s test @ http://127.0.0.1:1/v1/models
  1 threads and 16 connections
  12345 requests in 5.01s, 3.00MB read
  Non-2xx or 3xx responses: 7
Requests/sec:   2464.07
Transfer/sec:    613.40KB
"""
    result = parse_wrk(output)
    assert (result.requests, result.errors, result.requests_per_second, result.seconds) == (12345, 7, 2464.07, 5.01)
    with pytest.raises(ValueError):
        parse_wrk("nothing useful")


def _two_alias_round(contender: str, *, parallel: bool) -> list[StreamResult]:
    a = stream(contender, "a", start=0.0)
    b_start = 0.0 if parallel else 1.0
    return [a, stream(contender, "b", start=b_start)]


def test_summary_flags_truncation_and_serial_aliases() -> None:
    collected = Collected()
    collected.single = {OURS: [stream(), stream()], LLAMA_SERVER: [stream(LLAMA_SERVER)]}
    collected.two_alias = {OURS: [_two_alias_round(OURS, parallel=False)],
                           LLAMA_SERVER: [_two_alias_round(LLAMA_SERVER, parallel=True)]}
    collected.concurrent = {OURS: [[stream(), stream(tokens=10, finish=None)]]}
    rows, checks, details = summarise(collected, 64, ("a", "b"))
    by_name = {c.name: c for c in checks}
    assert not by_name["no stream truncated"].ok
    assert "no finish_reason after 10 tokens" in by_name["no stream truncated"].detail
    assert not by_name["both aliases progress at once"].ok
    assert details["concurrent_one_alias"][OURS]["complete"][0] == 1
    assert any(r.workload.startswith("single stream") and r.baseline_name == LLAMA_SERVER for r in rows)


def test_summary_passes_a_clean_parallel_run() -> None:
    collected = Collected()
    collected.two_alias = {OURS: [_two_alias_round(OURS, parallel=True)]}
    _, checks, _ = summarise(collected, 64, ("a", "b"))
    assert all(c.ok for c in checks)


def test_profile_summary_groups_threads_and_functions() -> None:
    from bench.profile import summarise as summarise_profile

    lines = [
        'process 1:"python -m server";thread (11): generate;run (t.py:3);decode (llama.py:10) 90',
        'process 1:"python -m server";thread (12): generate;run (t.py:4);put (threads.py:40) 6',
        'process 1:"python -m server";thread (10): MainThread;loop (a.py:1) 4',
        "",
    ]
    summary = summarise_profile(lines)
    assert summary.samples == 100
    assert summary.threads == [("thread generate", 96), ("thread MainThread", 4)]
    assert summary.self_time[0] == ("decode (llama.py)", 90)
    assert ("run (t.py)", 96) in summary.inclusive
    assert "90.0%  decode (llama.py)" in summary.text()


def test_paired_ratio_compares_runs_of_the_same_round() -> None:
    from bench.summary import paired_ratio

    ours = [stream(times=[0.1, 1.0]), stream(times=[0.1, 2.0])]  # slower in round 2, the busy one
    base = [stream(DIRECT_NAME, times=[0.1, 0.5]), stream(DIRECT_NAME, times=[0.1, 1.0])]
    assert paired_ratio(ours, base) == pytest.approx(statistics.median([0.51 / 1.01, 1.01 / 2.01]))
