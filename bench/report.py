"""Rows of ours-against-a-baseline numbers, the checks that must hold, and their table and JSON forms."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    unit: str
    ours: float
    baseline_name: str
    baseline: float
    higher_is_better: bool = True
    target: float | None = None  # the least acceptable ratio ours/baseline (or the most, when lower is better)

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.baseline)

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        if self.ratio is None:
            return False
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target


@dataclass(frozen=True)
class Check:
    """A yes/no property of one run (no stream truncated, both aliases progress at once)."""

    name: str
    ok: bool
    detail: str


def ratio(ours: float, baseline: float) -> float | None:
    """ours/baseline, or None when there is nothing to divide by (a baseline of 0 or not a number)."""
    if baseline == 0 or math.isnan(baseline) or math.isnan(ours):
        return None
    return ours / baseline


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    sign = ">=" if row.higher_is_better else "<="
    verdict = "met" if row.target_met else "MISSED"
    return f"{sign} {row.target:.2f}x {verdict}"


def table(rows: list[Row], checks: list[Check]) -> str:
    """A plain-text table (also valid Markdown), then one line per check."""
    header = ("workload", "metric", "ours", "baseline", "value", "ours/base", "target")
    lines = [header]
    for row in rows:
        r = row.ratio
        lines.append((
            row.workload, f"{row.metric} ({row.unit}, {'higher' if row.higher_is_better else 'lower'} is better)",
            _number(row.ours), row.baseline_name, _number(row.baseline),
            "-" if r is None else f"{r:.2f}x", _target(row),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [render(line) for line in lines[1:]]
    out.append("")
    out += [f"- {'ok    ' if c.ok else 'FAILED'} {c.name}: {c.detail}" for c in checks]
    return "\n".join(out)


def targets_met(rows: list[Row], checks: list[Check]) -> bool:
    return all(r.target_met is not False for r in rows) and all(c.ok for c in checks)


def to_json(rows: list[Row], checks: list[Check], **sections: Any) -> dict[str, Any]:
    return {
        **sections,
        "rows": [{**asdict(r), "ratio": r.ratio, "target_met": r.target_met} for r in rows],
        "checks": [asdict(c) for c in checks],
        "targets_met": targets_met(rows, checks),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN is not JSON: a number nobody measured is null.
    path.write_text(json.dumps(_no_nan(document), indent=2) + "\n")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value
