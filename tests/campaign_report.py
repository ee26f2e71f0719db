"""Summarise a fault-campaign report (MASSAGER_CAMPAIGN_REPORT): per plant fault, what latched, worst truth.

``python -m tests.campaign_report FILE`` prints a Markdown table for docs/safety.md: examples run, plants
drawn, and per fault the codes latched, the slowest latch, the hottest pad and the worst zone pressure
relative to its trip, all from the plant's truth.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def summary(lines: list[dict[str, Any]]) -> str:
    """The report's Markdown summary."""
    faults = [line for line in lines if line["kind"] == "fault"]
    healthy = [line for line in lines if line["kind"] == "healthy"]
    seeds = {line["seed"] for line in lines}
    out = [
        f"{len(faults)} fault examples, {len(healthy)} healthy sessions "
        f"({sum(line['minutes'] for line in healthy):.0f} simulated minutes), {len(seeds)} plants drawn.",
        "",
        "| plant fault | examples | latched (code: count) | none latched | slowest latch | hottest pad "
        "| worst zone vs trip |",
        "|---|---|---|---|---|---|---|",
    ]
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in faults:
        by_fault[line["fault"]].append(line)
    for name in sorted(by_fault):
        rows = by_fault[name]
        codes = Counter(row["code"] for row in rows if row["code"] is not None)
        latches = [row["latch_s"] for row in rows if row["latch_s"] is not None]
        out.append(
            f"| `{name}` | {len(rows)} | "
            + (", ".join(f"{code} {n}" for code, n in codes.most_common()) or "-")
            + f" | {sum(1 for row in rows if row['code'] is None)} | "
            + (f"{max(latches):.2f} s" if latches else "-")
            + f" | {max(row['pad_max_c'] for row in rows):.1f} °C"
            + f" | {max(row['over_trip_mmhg'] for row in rows):+.1f} mmHg |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Print the summary of the report file named on the command line."""
    if len(argv) != 1:
        print("usage: python -m tests.campaign_report REPORT.jsonl", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.exists():
        print(f"campaign report: {path} does not exist (no example ran?)", file=sys.stderr)
        return 1
    lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines() if text.strip()]
    print(summary(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
