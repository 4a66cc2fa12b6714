"""The benchmark's own arithmetic and detectors, on made-up results: nothing here is timed."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from pathlib import Path

import httpx
import pytest

from bench.loadgen import parse_wrk
from bench.measures import StreamResult, overlap, percentile, problem, total_rate
from bench.report import Check, Row, ratio, table, targets_met, to_json, write_json
from bench.streams import _event, stream_body
from bench.summary import DIRECT as DIRECT_NAME
from bench.summary import LLAMA_SERVER, OURS, summarise
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


# -- at defaults (issue 11): workload generation and the table ----------------------------------------


def test_cells_cover_every_kind_and_count_and_refuse_unknown_kinds() -> None:
    from bench.prompts import Cell, cells

    assert cells(("unique", "seeded"), (1, 16)) == [Cell("unique", 1), Cell("unique", 16), Cell("seeded", 1),
                                                    Cell("seeded", 16)]
    assert len(cells()) == 9
    with pytest.raises(ValueError):
        cells(("fresh",))
    with pytest.raises(ValueError):
        cells(counts=(0,))


def test_unique_prompts_never_repeat_within_a_run_and_are_the_same_next_run() -> None:
    from bench.prompts import StreamWork, bodies, cells

    work = StreamWork()
    seen = []
    for index, cell in enumerate(cells(("unique",), (1, 4, 16))):
        for round_no in range(3):
            seen += [b["messages"][1]["content"] for b in bodies(cell, index, round_no, "m", work)]
    assert len(seen) == 3 * (1 + 4 + 16) == len(set(seen))
    again = [b["messages"][1]["content"] for b in bodies(cells(("unique",), (1,))[0], 0, 0, "m", work)]
    assert again == seen[:1]
    assert seen[0].split(":")[0] != seen[1].split(":")[0]  # they part ways early, not only at the end


def test_shared_and_seeded_bodies() -> None:
    from bench.prompts import Cell, StreamWork, bodies

    work = StreamWork(max_tokens=64, temperature=0.7, ban=(2,))
    shared = bodies(Cell("shared", 4), 3, 1, "bench", work)
    seeded = bodies(Cell("seeded", 4), 4, 1, "bench", work)
    assert len({str(b["messages"]) for b in shared + seeded}) == 1
    assert all("seed" not in b for b in shared)
    assert len({b["seed"] for b in seeded}) == 4
    first = shared[0]
    assert (first["model"], first["max_tokens"], first["temperature"], first["stream"]) == ("bench", 64, 0.7, True)
    assert first["logit_bias"] == {"2": -100.0} and first["stream_options"] == {"include_usage": True}


def test_request_numbers_stay_in_range() -> None:
    from bench.prompts import request_number

    assert request_number(2, 3, 15) == 4315
    with pytest.raises(ValueError):
        request_number(0, 0, 100)  # would collide with the next round's first


def test_embedding_inputs_differ_per_client_and_request() -> None:
    from bench.prompts import embedding_inputs

    batches = [embedding_inputs(c, r) for c in range(4) for r in range(4)]
    assert all(len(b) == 8 for b in batches)
    assert len({text for b in batches for text in b}) == 4 * 4 * 8


def test_usage_chunk_gives_the_servers_token_count() -> None:
    result = StreamResult(contender=OURS, alias="a", started=0.0)
    _event(result, '{"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":64,"total_tokens":94}}', 1.0)
    assert result.usage_tokens == 64 and result.token_times == []


def _group(contender: str, streams: int, tokens: int = 64, ttft: float = 0.1, spacing: float = 0.01,
           start: float = 0.0) -> list[StreamResult]:
    return [stream(contender, times=[start + ttft + i * spacing for i in range(tokens)], tokens=tokens, start=start)
            for _ in range(streams)]


def test_defaults_table_like_the_issue() -> None:
    from bench.defaults_table import cell_result, table, targets_met
    from bench.prompts import Cell

    fast = cell_result(Cell("unique", 4), {LLAMA_SERVER: [_group(LLAMA_SERVER, 4)],
                                           OURS: [_group(OURS, 4, spacing=0.02, ttft=0.2)]}, 64)
    ours_rate = fast.by_contender[OURS].tokens_per_second
    assert ours_rate == pytest.approx(4 * 64 / (0.2 + 63 * 0.02 + 0.01))
    rate, ttft = fast.ratios(OURS, LLAMA_SERVER)
    assert ttft == pytest.approx(2.0) and rate == pytest.approx(ours_rate / fast.by_contender[LLAMA_SERVER].tokens_per_second)
    level = cell_result(Cell("seeded", 1), {LLAMA_SERVER: [_group(LLAMA_SERVER, 1)], OURS: [_group(OURS, 1)]}, 64)
    text = table([fast, level], OURS, LLAMA_SERVER)
    lines = text.splitlines()
    assert "unique per request" in lines[2] and "| 4 " in lines[2] and "MISSED" in lines[2] and "(TTFT 200)" in lines[2]
    assert "shared prompt, `seed` set" in lines[3] and "| 1.00 " in lines[3] and lines[3].rstrip(" |").endswith("met")
    assert not targets_met([fast, level], OURS, LLAMA_SERVER) and targets_met([level], OURS, LLAMA_SERVER)


def test_defaults_table_marks_incomplete_streams_and_missing_contenders() -> None:
    from bench.defaults_table import cell_result, table
    from bench.prompts import Cell

    short = _group(OURS, 2)
    short[1] = stream(OURS, tokens=10, finish=None)
    result = cell_result(Cell("shared", 2), {OURS: [short]}, 64)
    assert result.by_contender[OURS].complete == 1
    assert "no finish_reason after 10 tokens" in result.by_contender[OURS].problems[0]
    assert result.ratios(OURS, LLAMA_SERVER) == (None, None)
    assert "[1 incomplete]" in table([result], OURS, LLAMA_SERVER)


def test_rounds_add_up_their_own_wall_times() -> None:
    from bench.defaults_table import figures, inputs_per_second

    # Two rounds of one stream each, 1 s apart: the gap between rounds is not counted.
    f = figures([_group(OURS, 1, tokens=10, spacing=0.1, ttft=0.0), _group(OURS, 1, tokens=10, spacing=0.1,
                                                                              ttft=0.0, start=5.0)], 10)
    assert f.tokens_per_second == pytest.approx(20 / (2 * (0.9 + 0.01)))
    assert f.ttft_ms_p50 == pytest.approx(0.0)
    assert inputs_per_second(64, 1.0, 3.0) == 32 and inputs_per_second(1, 1.0, 1.0) == 0.0


def test_llama_server_settings_from_its_log() -> None:
    from bench.servers import settings_from_log

    log = ("0.00.870.055 I cmn          init: llama threadpool init, n_threads = 2\n"
           "0.04.372.112 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 8192, kv_unified = 'true'\n")
    settings = settings_from_log(log)
    assert settings["n_threads"] == "2" and settings["kv_unified"] == "true"
    assert str(settings["n_threads_batch"]).startswith("2 ")
    assert settings_from_log("") == {}


def test_proc_stat_parsing_and_own_cpu_time() -> None:
    import os

    from bench.loadgen import cpu_seconds, parse_stat

    line = "4242 (python -m (x)) S 4200 4242 4242 0 -1 4194304 100 0 0 0 1234 56 0 0 20 0 3 0 1 2 3"
    assert parse_stat(line) == (4242, 4200, 1234 + 56)
    assert cpu_seconds(os.getpid()) > 0
    assert math.isnan(cpu_seconds(2**22 + 12345))  # no such process


def test_defaults_summary_reports_every_part_and_its_targets() -> None:
    from bench.defaults import DefaultsPlan, summarise_defaults
    from bench.prompts import Cell, StreamWork
    from bench.servers import BARE, LLAMA_CPP

    streams = {Cell("shared", 1): {LLAMA_CPP: [_group(LLAMA_CPP, 1)], OURS: [_group(OURS, 1)]}}
    embeddings = {OURS: [{"inputs_per_second": 9.0, "errors": []}],
                  LLAMA_CPP: [{"inputs_per_second": 10.0, "errors": []}]}
    models = {name: {"requests_per_second": rps, "cpu_us_per_request": cpu, "generator": "wrk"}
              for name, rps, cpu in ((OURS, 850.0, 120.0), (BARE, 1000.0, 100.0), (LLAMA_CPP, 5000.0, 40.0))}
    outcome = summarise_defaults(streams, embeddings, models, {OURS: {"n_threads": 1}}, StreamWork(), DefaultsPlan())
    assert "- ours: n_threads 1" in outcome.text and "one shared prompt" in outcome.text
    assert "0.90x" in outcome.text and "0.85x" in outcome.text and "server CPU time per request" in outcome.text
    assert outcome.ok and not outcome.document["targets_met"]  # embeddings 0.90x < 0.95x
    assert outcome.document["cells"][0]["prompts"] == "shared"


# -- the thread sweep (issue 11's "no cliff"): ratios to the best setting, verdict, table ---------------


def _sweep_cells(rates: dict[str, tuple[float, float]]):
    """Two cells (unique and shared, 4 streams) where each setting's 4 streams of 64 tokens take the
    time that gives it the made-up tokens/s: name -> (unique tok/s, shared tok/s)."""
    from bench.defaults_table import cell_result
    from bench.prompts import Cell

    out = []
    for column, kind in enumerate(("unique", "shared")):
        by = {}
        for name, pair in rates.items():
            spacing = (4 * 64 / pair[column] - 0.01) / 63  # ttft 0: the round lasts 63 spacings plus 0.01
            by[name] = [_group(name, 4, ttft=0.0, spacing=spacing)]
        out.append(cell_result(Cell(kind, 4), by, 64))
    return out


def test_sweep_grid_and_memory_decision() -> None:
    from bench.sweep_table import Setting, fits_at_once, grid

    assert grid((2, 1)) == [Setting(1, 1), Setting(1, 2), Setting(2, 1), Setting(2, 2)]
    assert Setting(1, 2).name == "t1/b2" and len(grid((1, 2, 3))) == 9
    with pytest.raises(ValueError):
        grid((0, 1))
    mib = 2**20
    assert fits_at_once(4, 4096 * mib, 512 * mib) and not fits_at_once(5, 4096 * mib, 512 * mib)
    assert not fits_at_once(1, 0, 512 * mib)  # memory unknown: one server at a time


def test_sweep_ratios_to_the_best_setting_and_verdict() -> None:
    from bench.sweep_table import Setting, best, ratio_to_best, targets_met, verdict

    settings = [Setting(1, 1), Setting(1, 2), Setting(2, 1), Setting(2, 2)]
    results = _sweep_cells({"t1/b1": (100.0, 150.0), "t1/b2": (185.0, 160.0),
                            "t2/b1": (160.0, 200.0), "t2/b2": (200.0, 190.0)})
    unique, shared = results
    assert best(unique)[0] == "t2/b2" and best(shared)[0] == "t2/b1"
    assert best(unique)[1] == pytest.approx(200.0)
    assert ratio_to_best(unique, "t1/b1") == pytest.approx(0.5)
    assert ratio_to_best(shared, "t2/b2") == pytest.approx(0.95)
    assert ratio_to_best(unique, "t9/b9") is None
    assert verdict(results, "t2/b2") == "met"  # 1.00x and 0.95x
    assert verdict(results, "t1/b1") == "MISSED: unique x4 0.50x, shared x4 0.75x"
    assert verdict(results, "t1/b2") == "MISSED: shared x4 0.80x"  # 0.925x in unique: met there
    assert verdict(results, "t2/b1") == "MISSED: unique x4 0.80x"
    assert not targets_met(results, settings)
    level = _sweep_cells({"t1/b1": (190.0, 180.0), "t2/b2": (200.0, 200.0)})
    assert targets_met(level, [Setting(1, 1), Setting(2, 2)])
    assert verdict(level, "t1/b2") == "-" and not targets_met(level, [Setting(1, 2)])  # not measured


def test_sweep_table_marks_the_default_and_the_misses() -> None:
    from bench.sweep_table import Setting, rows, summary_lines, table

    settings = [Setting(1, 1), Setting(2, 2)]
    results = _sweep_cells({"t1/b1": (100.0, 190.0), "t2/b2": (200.0, 200.0)})
    lines = table(results, settings, default=Setting(2, 2)).splitlines()
    assert "unique per request x4" in lines[0] and "one shared prompt x4" in lines[0] and ">= 0.9x" in lines[0]
    assert lines[2].startswith("| 1 / 1 ") and "(default)" not in lines[2] and "100.0 (TTFT 0)" in lines[2]
    assert "| 0.50 " in lines[2] and "| 0.95 " in lines[2] and "MISSED: unique x4 0.50x" in lines[2]
    assert lines[3].startswith("| 2 / 2 (default) ") and lines[3].rstrip(" |").endswith("met")
    text = "\n".join(summary_lines(results, settings, Setting(2, 2)))
    assert "best in unique per request x4: t2/b2 at 200.0 tok/s" in text
    assert "default t2/b2: met" in text and text.endswith(": MISSED")
    assert "not one of the settings swept" in "\n".join(summary_lines(results, settings, Setting(3, 3)))
    document = rows(results, settings, Setting(2, 2))
    assert [r["default"] for r in document] == [False, True]
    assert document[0]["cells"][0]["ratio_to_best"] == pytest.approx(0.5)
    assert document[0]["verdict"].startswith("MISSED") and document[1]["verdict"] == "met"


def test_sweep_summary_fails_threads_not_applied_and_short_streams() -> None:
    from bench.defaults import OURS
    from bench.prompts import Cell, StreamWork
    from bench.sweep import SweepPlan, summarise_sweep
    from bench.sweep_table import Setting

    settings = [Setting(1, 1), Setting(2, 2)]
    streams = {Cell("shared", 4): {"t1/b1": [_group("t1/b1", 4)], "t2/b2": [_group("t2/b2", 4)]}}
    reported = {"default": {"n_threads": 2, "n_threads_batch": 2}, "t1/b1": {"n_threads": 1, "n_threads_batch": 1},
                "t2/b2": {"n_threads": 2, "n_threads_batch": 2}}
    plan = SweepPlan(values=(1, 2))
    outcome = summarise_sweep(streams, reported, settings, plan, StreamWork(), at_once=True)
    assert outcome.ok and outcome.document["targets_met"] and outcome.document["default"] == {
        "n_threads": 2, "n_threads_batch": 2}
    assert "2 / 2 (default)" in outcome.text and "all up at once" in outcome.text
    wrong = {**reported, "t1/b1": {"n_threads": 2, "n_threads_batch": 2}}
    outcome = summarise_sweep(streams, wrong, settings, plan, StreamWork(), at_once=False)
    assert not outcome.ok and "threads not as given: t1/b1" in outcome.text
    short = {Cell("shared", 4): {**streams[Cell("shared", 4)], "t1/b1": [[stream(OURS, tokens=10, finish=None)]]}}
    outcome = summarise_sweep(short, reported, settings, plan, StreamWork(), at_once=False)
    assert not outcome.ok and "incomplete stream" in outcome.text and not outcome.document["targets_met"]


def test_small_cells_run_more_rounds_until_they_have_enough_streams() -> None:
    from bench.defaults import DefaultsPlan, rounds_for
    from bench.prompts import Cell

    plan = DefaultsPlan(rounds=2, min_streams=8)
    assert [rounds_for(plan, Cell("unique", n)) for n in (1, 3, 4, 16)] == [8, 3, 2, 2]
    assert rounds_for(DefaultsPlan(rounds=5, min_streams=8), Cell("shared", 4)) == 5
    assert rounds_for(DefaultsPlan(rounds=2, min_streams=50), Cell("seeded", 1)) == 20


def _sse_after(failures: int) -> tuple[httpx.AsyncClient, list[int]]:
    """A client whose first `failures` requests die as a closed kept-alive connection does."""
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "length"}],
                 "usage": {"completion_tokens": 1}}
        return httpx.Response(200, text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), calls


def test_a_stream_refused_on_a_stale_connection_is_sent_once_more() -> None:
    async def run(failures: int) -> tuple[object, int]:
        client, calls = _sse_after(failures)
        async with client:
            result = await stream_body(client, "x", "http://test", {"model": "m"})
        return result, len(calls)

    result, calls = asyncio.run(run(1))
    assert calls == 2 and result.done and result.error is None and result.text == "hi"  # type: ignore[attr-defined]
    result, calls = asyncio.run(run(2))  # once only: a server that keeps refusing is an error
    assert calls == 2 and not result.done and "RemoteProtocolError" in (result.error or "")  # type: ignore[attr-defined]


def test_contenders_get_huge_pages_only_at_equal_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench restarts itself with the huge-pages tunable for its direct call; a contender at its own
    defaults gets the caller's environment back, one at equal settings the tunable our workers get."""
    from bench.servers import CALLERS_TUNABLES, EngineSettings, engine_env, user_env

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    monkeypatch.setenv(CALLERS_TUNABLES, "glibc.malloc.arena_max=2")
    assert user_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2" and CALLERS_TUNABLES not in user_env()
    engine = EngineSettings(model=Path("m.gguf"), n_ctx=2048, n_threads=2, n_threads_batch=2)
    assert engine_env(engine)["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    monkeypatch.setenv(CALLERS_TUNABLES, "")
    assert "GLIBC_TUNABLES" not in user_env()
