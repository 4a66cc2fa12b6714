"""The thread sweep's arithmetic and its table (issue 11's "no cliff" target). Pure: no I/O.

Every (n_threads, n_threads_batch) pair is one contender of the at-defaults cells (bench/defaults_table.py
computes its figures); here each setting is compared with the best setting of the same cell, and the
target is met when every setting reaches SWEEP_TARGET of it in every cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.defaults_table import CellResult, cell_text
from bench.report import ratio

SWEEP_TARGET = 0.9  # tokens/s of every setting against the best setting of the same cell, at least


@dataclass(frozen=True)
class Setting:
    n_threads: int
    n_threads_batch: int

    @property
    def name(self) -> str:
        """The contender's name in the cells and in the JSON."""
        return f"t{self.n_threads}/b{self.n_threads_batch}"


def grid(values: tuple[int, ...]) -> list[Setting]:
    """Every pair of the values, n_threads the slower-moving: (1, 1), (1, 2), ..., (2, 1), ..."""
    if not values or any(v < 1 for v in values):
        raise ValueError(f"thread counts must be at least 1, got {values}")
    ordered = sorted(set(values))
    return [Setting(t, b) for t in ordered for b in ordered]


def fits_at_once(settings: int, available_bytes: int, per_server_bytes: int) -> bool:
    """Whether every setting's server may stay up for the whole sweep: they take at most half of the
    memory now available, the rest left to the machine (and to whatever else runs on it)."""
    return settings * per_server_bytes <= available_bytes // 2


def best(result: CellResult) -> tuple[str, float] | None:
    """The setting with the most tokens/s in this cell, and that figure (None when nothing ran)."""
    if not result.by_contender:
        return None
    name = max(result.by_contender, key=lambda n: result.by_contender[n].tokens_per_second)
    return name, result.by_contender[name].tokens_per_second


def ratio_to_best(result: CellResult, name: str) -> float | None:
    """The setting's tokens/s over the best setting's in this cell; None where it or the best is missing."""
    top = best(result)
    if top is None or name not in result.by_contender:
        return None
    return ratio(result.by_contender[name].tokens_per_second, top[1])


def _cell_name(result: CellResult) -> str:
    return f"{result.cell.prompts} x{result.cell.streams}"


def verdict(results: list[CellResult], name: str) -> str:
    """'met' when the setting reaches the target in every cell, else which cells it misses."""
    ratios = [(r, ratio_to_best(r, name)) for r in results]
    if not ratios or any(value is None for _, value in ratios):
        return "-"
    misses = [f"{_cell_name(r)} {value:.2f}x" for r, value in ratios if value is not None and value < SWEEP_TARGET]
    return "met" if not misses else "MISSED: " + ", ".join(misses)


def targets_met(results: list[CellResult], settings: list[Setting]) -> bool:
    return bool(results) and all(verdict(results, s.name) == "met" for s in settings)


def table(results: list[CellResult], settings: list[Setting], default: Setting | None) -> str:
    """Markdown: per setting, tokens/s over all streams (TTFT p50 in ms) and the ratio to the best setting
    in each cell, then the verdict; the row our defaults resolve to is marked."""
    header = ("n_threads / n_threads_batch",
              *(h for r in results for h in (f"{r.cell.label} x{r.cell.streams}", "ratio to best")),
              f"target >= {SWEEP_TARGET}x the best")
    lines = [header]
    for setting in settings:
        label = f"{setting.n_threads} / {setting.n_threads_batch}" + (" (default)" if setting == default else "")
        cells: list[str] = []
        for result in results:
            value = ratio_to_best(result, setting.name)
            cells += [cell_text(result.by_contender.get(setting.name)), "-" if value is None else f"{value:.2f}"]
        lines.append((label, *cells, verdict(results, setting.name)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    return "\n".join([render(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(render(line) for line in lines[1:])])


def summary_lines(results: list[CellResult], settings: list[Setting], default: Setting | None) -> list[str]:
    """The best setting of each cell, where the default stands, and the overall verdict."""
    lines = []
    for result in results:
        top = best(result)
        if top is not None:
            lines.append(f"- best in {result.cell.label} x{result.cell.streams}: {top[0]} at {top[1]:.1f} tok/s")
    if default is None:
        lines.append("- default: not reported by the server")
    elif default not in settings:
        lines.append(f"- default {default.name}: not one of the settings swept")
    else:
        lines.append(f"- default {default.name}: {verdict(results, default.name)}")
    met = targets_met(results, settings)
    lines.append(f"- no cliff (every setting >= {SWEEP_TARGET}x the best in every cell): {'met' if met else 'MISSED'}")
    return lines


def rows(results: list[CellResult], settings: list[Setting], default: Setting | None) -> list[dict[str, object]]:
    """The table as JSON rows: one per setting, with its figures and ratio per cell."""
    out: list[dict[str, object]] = []
    for setting in settings:
        cells = []
        for result in results:
            f = result.by_contender.get(setting.name)
            cells.append({"prompts": result.cell.prompts, "streams": result.cell.streams,
                          "tokens_per_second": None if f is None else f.tokens_per_second,
                          "ttft_ms_p50": None if f is None else f.ttft_ms_p50,
                          "complete": None if f is None else f.complete,
                          "streams_sent": None if f is None else f.streams,
                          "problems": [] if f is None else list(f.problems),
                          "ratio_to_best": ratio_to_best(result, setting.name)})
        out.append({"n_threads": setting.n_threads, "n_threads_batch": setting.n_threads_batch,
                    "default": setting == default, "cells": cells, "verdict": verdict(results, setting.name)})
    return out
