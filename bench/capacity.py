"""Capacity across customers: what the quota protocol costs replay, and how close
to the limit it gets with more partitions.

`python -m bench.capacity [--events N]`: the seeded workload (service.tools.workload.event_log,
seed 7) replayed in process through `Replayer` with examples/default/rulebook.yaml, then with
the same rulebook plus `capacity:` limits below demand: 2 web actions an hour and 100 mobile
actions in total (hourly limits in the dozens would not be reached by this workload).
 The clock starts before the first event is
applied and stops after the last (decoding is done before); each configuration runs three
times, interleaved, and the median counts. Printed as a table, written to
bench/results/capacity.json. Sent vs limit: per constraint and period, the sum of what every
partition spent (never above the limit) and how many periods reached it. Then, with the same
in-process replay: examples/lead_scoring_capacity (20 calls an hour; 40 leads from 10:00, 12
from 11:00), calls per hour at 1, 4, 12 and 48 partitions; and skewed demand, 60 leads in an
hour whose profiles all live on one of 12 partitions against the same 20 calls an hour.
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
from service.domain.partitioning import partition_for_key
from service.domain.rules import Rulebook, load_rulebook, parse_rulebook
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


def _example(partitions: int) -> dict[str, int]:
    """Calls sent per hour (local hour of the lead's click) in the lead-scoring example."""
    folder = ROOT / "examples" / "lead_scoring_capacity"
    rulebook = load_rulebook(folder / "rulebook.yaml")
    replayer = Replayer(rulebook, partitions=partitions)
    calls: Counter[str] = Counter()
    for line in (folder / "events.jsonl").read_bytes().splitlines():
        if line.strip():
            event = decode_event(line)
            for action in replayer.apply(event).actions:
                if action["action"] == "sales_callback":
                    calls[event.occurred_at[11:13]] += 1
    return dict(sorted(calls.items()))


SKEWED = """
version: "skewed-1"
actions:
  call: {channel: call_center, basis: service, when: [{event: {type: lead_qualified}}],
         priority: 10, group: follow_up}
  mail: {channel: email, basis: service, when: [{event: {type: lead_qualified}}],
         group: follow_up}
capacity:
  call_center: {channel: call_center, limit: 20, per: 1h, when_reached: fallback}
"""


def _skewed(partitions: int = 12, leads: int = 60) -> int:
    """Calls sent to `leads` qualified leads in one hour whose profiles all live on
    partition 0 (the limit is 20 calls an hour)."""
    replayer = Replayer(parse_rulebook(SKEWED, "skewed"), partitions=partitions)
    hot = [name for name in (f"hot-{n}" for n in range(100_000))
           if partition_for_key(f"customer_id:{name}".encode(), partitions) == 0][:leads]
    calls = 0
    for n, name in enumerate(hot):
        event = decode_event(json.dumps({
            "event_id": f"q-{name}", "channel": "web", "type": "lead_qualified",
            "occurred_at": f"2026-03-10T10:{n % 60:02d}:00+00:00",
            "identity": {"customer_id": name}, "properties": {}}))
        calls += sum(a["action"] == "call" for a in replayer.apply(event).actions)
    return calls


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
    example = {partitions: _example(partitions) for partitions in (1, 4, 12, 48)}
    print("lead_scoring_capacity (20 calls an hour), calls sent per hour:")
    print(f"{'partitions':>10} {'10:00 (40 leads)':>17} {'11:00 (12 leads)':>17}")
    for partitions, calls in example.items():
        print(f"{partitions:>10} {calls.get('10', 0):>17} {calls.get('11', 0):>17}")
    skewed = _skewed()
    print(f"skewed: 60 leads in an hour, all on one of 12 partitions: {skewed} calls of 20")
    out = ROOT / "bench" / "results" / "capacity.json"
    out.write_text(json.dumps({"events": len(events), "events_per_s": rate,
                               "ratio": rate["capacity"] / rate["plain"],
                               "seconds": times, "closeness": closeness,
                               "example_calls_per_hour": example,
                               "skewed_calls": skewed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
