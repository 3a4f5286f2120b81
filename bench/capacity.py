"""Capacity across customers (issue 22): what the quota protocol costs replay, and how close
to the limit it gets with more partitions.

`python -m bench.capacity [--events N]`: the seeded workload (service.tools.workload.event_log,
seed 7) replayed in process through `Replayer` with examples/default/rulebook.yaml, then with
the same rulebook plus `capacity:` limits below demand: 2 web actions an hour and 100 mobile
actions in total (hourly limits in the dozens would not be reached by this workload).
 The clock starts before the first event is
applied and stops after the last (decoding is done before); each configuration runs three
times, interleaved, and the median counts. Printed as a table, written to
bench/results/capacity.json. Sent vs limit: per constraint and period, the sum of what every
partition spent (never above the limit) and how many periods reached it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.event import decode_event
from service.domain.rules import Rulebook, parse_rulebook
from service.replay.replayer import Replayer
from service.tools.workload import event_log

ROOT = Path(__file__).resolve().parent.parent
LIMITS = """
capacity:
  web_hourly: {channel: web, limit: 2, per: 1h, when_reached: fallback}
  mobile_total: {channel: mobile, limit: 100}
"""


def _run(rulebook: Rulebook, events: list[Any], partitions: int) -> tuple[float, Replayer]:
    replayer = Replayer(rulebook, partitions=partitions)
    apply = replayer.apply
    started = time.perf_counter()
    for event in events:
        apply(event)
    return time.perf_counter() - started, replayer


def _spent(replayer: Replayer) -> dict[str, Counter[int]]:
    spent: dict[str, Counter[int]] = {}
    for state in replayer.capacity.values():
        for (name, period), hold in state.holds.items():
            spent.setdefault(name, Counter())[period] += int(hold["s"])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    text = (ROOT / "examples" / "default" / "rulebook.yaml").read_text()
    plain = parse_rulebook(text, "default")
    limited = parse_rulebook(text + LIMITS, "default+capacity")
    raw = event_log(7, args.events, args.events // 4, datetime(2026, 3, 2, tzinfo=UTC))
    events = [decode_event(line) for line in raw]
    times: dict[str, list[float]] = {"plain": [], "capacity": []}
    for _ in range(3):
        times["plain"].append(_run(plain, events, 12)[0])
        times["capacity"].append(_run(limited, events, 12)[0])
    rate = {k: len(events) / statistics.median(v) for k, v in times.items()}
    closeness = []
    for partitions in (1, 4, 12, 48):
        _, replayer = _run(limited, events, partitions)
        for name, per_period in sorted(_spent(replayer).items()):
            limit = limited.capacity[name].limit
            assert max(per_period.values(), default=0) <= limit, (name, per_period)
            full = sum(1 for v in per_period.values() if v >= limit)
            closeness.append({"partitions": partitions, "constraint": name, "limit": limit,
                              "periods": len(per_period), "periods_at_limit": full,
                              "sent_max": max(per_period.values(), default=0),
                              "sent_min": min(per_period.values(), default=0)})
    print(f"{len(events):,} events, 12 partitions: replay {rate['plain']:,.0f} events/s "
          f"without limits, {rate['capacity']:,.0f} with 2 limits "
          f"(ratio {rate['capacity'] / rate['plain']:.3f})")
    print(f"{'partitions':>10} {'constraint':<14} {'limit':>6} {'periods':>8} "
          f"{'at limit':>9} {'sent min-max':>13}")
    for row in closeness:
        print(f"{row['partitions']:>10} {row['constraint']:<14} {row['limit']:>6} "
              f"{row['periods']:>8} {row['periods_at_limit']:>9} "
              f"{row['sent_min']:>6}-{row['sent_max']:<6}")
    out = ROOT / "bench" / "results" / "capacity.json"
    out.write_text(json.dumps({"events": len(events), "events_per_s": rate,
                               "ratio": rate["capacity"] / rate["plain"],
                               "seconds": times, "closeness": closeness}, indent=2) + "\n")


if __name__ == "__main__":
    main()
