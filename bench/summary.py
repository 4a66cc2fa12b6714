"""Raw results -> the rows of the table (ours against each baseline) and the checks. Pure: no I/O."""

from __future__ import annotations

import statistics
from typing import Any

from bench.measures import StreamResult, overlap, percentile, problem
from bench.report import Check, Row
from bench.workloads import Collected

OURS, DIRECT, LLAMA_SERVER, LLAMA_CPP = "ours", "direct", "llama_cpp.server", "llama-server"
# Issue targets, as ratios ours/baseline in one run.
SINGLE_TARGETS = {DIRECT: 1.0, LLAMA_CPP: 0.95}


def rate_over_rounds(rounds: list[list[StreamResult]]) -> float:
    """All tokens over all the rounds' wall times (each round from its first request to its last close)."""
    tokens = sum(r.tokens for group in rounds for r in group)
    wall = sum(max(r.ended for r in g) - min(r.started for r in g) for g in rounds if g)
    return tokens / wall if wall > 0 else 0.0


def paired_ratio(ours: list[StreamResult], base: list[StreamResult]) -> float:
    """Median over rounds of ours/baseline tokens/s, each pair measured back to back in one round:
    less sensitive to a background load that drifts during the run than a ratio of two medians."""
    ratios = [o.tokens_per_second / b.tokens_per_second for o, b in zip(ours, base) if b.tokens_per_second > 0]
    return statistics.median(ratios) if ratios else float("nan")


def alias_overlaps(rounds: list[list[StreamResult]], aliases: tuple[str, str]) -> list[float]:
    """Per round, how far the two aliases' token timelines overlap (see measures.overlap)."""
    out = []
    for group in rounds:
        times = [[t for r in group if r.alias == alias for t in r.token_times] for alias in aliases]
        out.append(overlap(times[0], times[1]))
    return out


def complete_count(streams: list[StreamResult], expected_tokens: int) -> tuple[int, list[str]]:
    problems = [p for p in (problem(r, expected_tokens) for r in streams) if p]
    return len(streams) - len(problems), problems


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def summarise(c: Collected, expected_tokens: int,
              aliases: tuple[str, str]) -> tuple[list[Row], list[Check], dict[str, Any]]:
    rows: list[Row] = []
    details: dict[str, Any] = {}

    single = {name: runs for name, runs in c.single.items() if runs}
    rate = {n: statistics.median(r.tokens_per_second for r in runs) for n, runs in single.items()}
    ttfts = {n: [r.ttft for r in runs if r.ttft is not None] for n, runs in single.items()}
    details["single_stream"] = {
        n: {"tokens_per_second_median": rate[n], "tokens_per_second": [r.tokens_per_second for r in runs],
            "ttft_ms_p50": _ms(percentile(ttfts[n], 50)), "ttft_ms_p95": _ms(percentile(ttfts[n], 95)),
            "requests": len(runs)}
        for n, runs in single.items()
    }
    for base in (DIRECT, LLAMA_SERVER, LLAMA_CPP):
        if OURS in single and base in single:
            details["single_stream"][OURS][f"paired_ratio_vs_{base}"] = paired_ratio(single[OURS], single[base])
    if OURS in single:
        for base in (DIRECT, LLAMA_CPP, LLAMA_SERVER):
            if base not in single:
                continue
            target = SINGLE_TARGETS.get(base)
            rows.append(Row("single stream, 64 tokens", "tokens/s per stream, median", "tok/s",
                            rate[OURS], base, rate[base], target=target))
            for q in (50, 95):
                rows.append(Row("single stream, 64 tokens", f"time to first token p{q}", "ms",
                                _ms(percentile(ttfts[OURS], q)), base, _ms(percentile(ttfts[base], q)),
                                higher_is_better=False))

    conc = {n: rate_over_rounds(rounds) for n, rounds in c.concurrent.items()}
    details["concurrent_one_alias"] = {n: {"total_tokens_per_second": conc[n],
                                           "complete": complete_count([r for g in rounds for r in g], expected_tokens)}
                                       for n, rounds in c.concurrent.items()}
    conc_ttft = {n: [r.ttft for g in rounds for r in g if r.ttft is not None] for n, rounds in c.concurrent.items()}
    for n in details["concurrent_one_alias"]:
        details["concurrent_one_alias"][n]["ttft_ms_p50"] = _ms(percentile(conc_ttft[n], 50))
    for base, target in ((LLAMA_CPP, 0.9), (LLAMA_SERVER, None)):
        if OURS in conc and base in conc:
            rows.append(Row("4 streams at once, one alias", "total tokens/s", "tok/s", conc[OURS], base,
                            conc[base], target=target))
    if OURS in conc and LLAMA_CPP in conc:
        rows.append(Row("4 streams at once, one alias", "time to first token p50", "ms",
                        _ms(percentile(conc_ttft[OURS], 50)), LLAMA_CPP, _ms(percentile(conc_ttft[LLAMA_CPP], 50)),
                        higher_is_better=False, target=1.2))

    alt = {n: rate_over_rounds(rounds) for n, rounds in c.alternating.items()}
    one = {n: rate_over_rounds(rounds) for n, rounds in c.single_alias.items()}
    details["alternating"] = {n: {"alternating_tokens_per_second": alt[n], "single_alias_tokens_per_second": one.get(n)}
                              for n in alt}
    if OURS in alt:
        rows.append(Row("sequential, two aliases alternating", "tokens/s", "tok/s", alt[OURS],
                        "ours, one alias", one[OURS], target=0.97))
        if LLAMA_SERVER in alt:
            rows.append(Row("sequential, two aliases alternating", "tokens/s", "tok/s", alt[OURS], LLAMA_SERVER,
                            alt[LLAMA_SERVER]))

    two = {n: rate_over_rounds(rounds) for n, rounds in c.two_alias.items()}
    laps = {n: alias_overlaps(rounds, aliases) for n, rounds in c.two_alias.items()}
    details["two_aliases_at_once"] = {
        n: {"total_tokens_per_second": two[n], "overlap_fraction": [o.fraction for o in laps[n]],
            "overlap_seconds": [o.seconds for o in laps[n]],
            "complete": complete_count([r for g in c.two_alias[n] for r in g], expected_tokens)}
        for n in two
    }
    if OURS in two and LLAMA_SERVER in two:
        rows.append(Row("two aliases, 2 clients each at once", "total tokens/s", "tok/s", two[OURS], LLAMA_SERVER,
                        two[LLAMA_SERVER]))
        rows.append(Row("two aliases, 2 clients each at once", "timeline overlap, min over rounds", "fraction",
                        min(o.fraction for o in laps[OURS]), LLAMA_SERVER,
                        min(o.fraction for o in laps[LLAMA_SERVER])))

    models = {n: m["requests_per_second"] for n, m in c.models.items()}
    if OURS in models and LLAMA_SERVER in models:
        rows.append(Row("GET /v1/models under load", f"requests/s ({c.models[OURS]['generator']})", "req/s",
                        models[OURS], LLAMA_SERVER, models[LLAMA_SERVER]))
    details["models_route"] = c.models

    return rows, _checks(c, expected_tokens, laps.get(OURS, [])), details


def _checks(c: Collected, expected_tokens: int, ours_overlaps: list[Any]) -> list[Check]:
    by_contender: dict[str, list[StreamResult]] = {}
    for result in c.streams():
        by_contender.setdefault(result.contender, []).append(result)
    counts = {n: complete_count(s, expected_tokens) for n, s in by_contender.items()}
    checks = []
    if OURS in counts:
        done, problems = counts[OURS]
        others = ", ".join(f"{n} {counts[n][0]}/{len(by_contender[n])}" for n in counts if n != OURS)
        detail = f"ours {done}/{len(by_contender[OURS])} streams complete"
        detail += f" (for comparison: {others})" if others else ""
        if problems:
            detail += "; ours: " + "; ".join(sorted(set(problems))[:3])
        checks.append(Check("no stream truncated", not problems, detail))
    if ours_overlaps:
        checks.append(Check(
            "both aliases progress at once", all(o.both_progress() for o in ours_overlaps),
            "ours: token timelines of the two aliases overlap "
            + ", ".join(f"{o.fraction:.0%} ({o.tokens_inside[0]}+{o.tokens_inside[1]} events inside)"
                        for o in ours_overlaps),
        ))
    return checks
