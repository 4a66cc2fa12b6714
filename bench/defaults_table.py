"""The at-defaults comparison's arithmetic and its table, laid out as issue 11's. Pure: no I/O.

Per cell: tokens/s over all streams (all tokens over the wall time of each round, from its first request
sent to its last stream closed, summed over rounds) and the time to first token p50 over every stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.measures import StreamResult, percentile, problem
from bench.prompts import Cell
from bench.report import ratio
from bench.summary import rate_over_rounds

# Issue 11's targets, as ratios ours / llama-server (both at their own defaults) in one run.
RATE_TARGET = 0.95  # tokens/s, at least
TTFT_TARGET = 1.2  # time to first token p50, at most
EMBEDDING_TARGET = 0.95  # inputs/s against llama-server, at least
MODELS_TARGET = 0.8  # GET /v1/models requests/s against a bare Litestar app on granian, at least


@dataclass(frozen=True)
class Figures:
    """One contender in one cell."""

    tokens_per_second: float
    ttft_ms_p50: float
    streams: int
    complete: int  # streams with max_tokens tokens, a finish_reason, [DONE] and no error
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    by_contender: dict[str, Figures]

    def ratios(self, ours: str, base: str) -> tuple[float | None, float | None]:
        """(tokens/s ours/base, TTFT p50 ours/base), None where a side is missing."""
        if ours not in self.by_contender or base not in self.by_contender:
            return None, None
        o, b = self.by_contender[ours], self.by_contender[base]
        return ratio(o.tokens_per_second, b.tokens_per_second), ratio(o.ttft_ms_p50, b.ttft_ms_p50)


def figures(rounds: list[list[StreamResult]], expected_tokens: int) -> Figures:
    streams = [r for group in rounds for r in group]
    ttfts = [r.ttft for r in streams if r.ttft is not None]
    problems = tuple(p for p in (problem(r, expected_tokens) for r in streams) if p)
    return Figures(tokens_per_second=rate_over_rounds([g for g in rounds if g]),
                   ttft_ms_p50=percentile(ttfts, 50) * 1000.0, streams=len(streams),
                   complete=len(streams) - len(problems), problems=problems)


def cell_result(cell: Cell, rounds_by_contender: dict[str, list[list[StreamResult]]],
                expected_tokens: int) -> CellResult:
    return CellResult(cell, {name: figures(rounds, expected_tokens) for name, rounds in rounds_by_contender.items()})


def cell_text(f: Figures | None) -> str:
    if f is None:
        return "-"
    ttft = "-" if f.ttft_ms_p50 != f.ttft_ms_p50 else f"{f.ttft_ms_p50:,.0f}"  # NaN: no stream had a token
    text = f"{f.tokens_per_second:.1f} (TTFT {ttft})"
    return text if f.complete == f.streams else text + f" [{f.streams - f.complete} incomplete]"


def _verdict(rate: float | None, ttft: float | None) -> str:
    if rate is None:
        return "-"
    misses = []
    if rate < RATE_TARGET:
        misses.append(f"tok/s < {RATE_TARGET}")
    if ttft is None or ttft > TTFT_TARGET:
        misses.append(f"TTFT > {TTFT_TARGET}")
    return "met" if not misses else "MISSED: " + ", ".join(misses)


def table(results: list[CellResult], ours: str, base: str) -> str:
    """Markdown: tokens/s over all streams (TTFT p50 in ms) per cell, the ratios and the verdict."""
    header = ("prompts", "streams", base, f"{ours} (defaults)", "tok/s ratio", "TTFT ratio",
              f"target >= {RATE_TARGET}x, TTFT <= {TTFT_TARGET}x")
    lines = [header]
    for result in results:
        rate, ttft = result.ratios(ours, base)
        lines.append((result.cell.label, str(result.cell.streams), cell_text(result.by_contender.get(base)),
                      cell_text(result.by_contender.get(ours)), "-" if rate is None else f"{rate:.2f}",
                      "-" if ttft is None else f"{ttft:.2f}", _verdict(rate, ttft)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([render(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(render(line) for line in lines[1:])])


def targets_met(results: list[CellResult], ours: str, base: str) -> bool:
    return all(_verdict(*r.ratios(ours, base)) == "met" for r in results)


def inputs_per_second(inputs: int, started: float, ended: float) -> float:
    """Embedding inputs over the wall time of the whole workload."""
    return inputs / (ended - started) if ended > started else 0.0
