"""`--rounds N`: the throughput rows run N times, interleaved, and reported by their medians.

On a shared machine one run of a row can be far off the next (bench/README.md, "Why the
harness is built this way"). Running the pipelines round-robin (ceiling, naive, touchflow,
ceiling, naive, ...) keeps each round's rows close together in time, so a round's ratios
share its conditions; the table then shows each row's median rate, and the ratios are the
medians of the per-round ratios, with their range in the note.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.harness import Measurement

__all__ = ["combine_rounds"]


def _median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median rate (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda m: m.rate)
    return ordered[(len(ordered) - 1) // 2]


def combine_rounds(rounds: Sequence[Sequence[tuple[str, Measurement]]], *,
                   naive: str = "naive faust", ceiling: str | Sequence[str] = "raw aiokafka",
                   ) -> tuple[list[tuple[str, Measurement]], dict[str, Any]]:
    """Rows of the median runs (their notes listing every round's rate), and the per-round
    ratios: {name: {"rates": [...], "vs_naive": [...], "vs_ceiling": [...], medians}}.
    `ceiling` may name several rows: each round's ceiling is the fastest of them that ran.
    A row that failed in any round is reported as its failed run."""
    ceilings = (ceiling,) if isinstance(ceiling, str) else tuple(ceiling)
    played = [dict(r) for r in rounds]
    names = [name for name, _ in rounds[0]] if rounds else []
    rows: list[tuple[str, Measurement]] = []
    summary: dict[str, Any] = {}
    for name in names:
        runs = [r[name] for r in played if name in r]
        failed = [m for m in runs if not m.ok]
        if failed:
            rows.append((name, failed[0]))
            continue
        chosen = _median_run(runs)
        rates = [m.rate for m in runs]
        entry: dict[str, Any] = {"rates": [round(r, 1) for r in rates],
                                 "median_rate": round(statistics.median(rates), 1)}
        for label, references in (("vs_naive", (naive,)), ("vs_ceiling", ceilings)):
            ratios = []
            for r in played:
                mine = r.get(name)
                best = max((r[ref].rate for ref in references if ref in r and r[ref].ok),
                           default=0.0)
                if mine is not None and mine.ok and best:
                    ratios.append(mine.rate / best)
            if ratios and name not in references:
                entry[label] = [round(x, 3) for x in ratios]
                entry[f"median_{label}"] = round(statistics.median(ratios), 3)
        summary[name] = entry
        spread = ", ".join(f"{r:,.0f}" for r in rates)
        note = f"median of {len(runs)} rounds: {spread}/s"
        if "vs_naive" in entry:
            ratios_text = ", ".join(f"{x:.2f}x" for x in entry["vs_naive"])
            note += f"; vs naive per round {ratios_text}"
        rows.append((name, Measurement(events=chosen.events, seconds=chosen.seconds,
                                       cpu_seconds=chosen.cpu_seconds, ok=True,
                                       note=(chosen.note + "; " if chosen.note else "") + note)))
    return rows, summary
