"""What the capacity outbox costs an action's latency (issue 22): a call that spends capacity
leaves only after its batch's changelog is acknowledged and its store written.

`python -m bench.capacity_latency [--rate R] [--seconds S]`: the real worker
(`python -m service worker`, 4 partitions, RocksDB) on a fresh embedded broker, fed qualified
leads at a fixed rate, twice: with a rulebook whose only action is a call, and with the same
rulebook plus a `capacity:` limit on the call center far above the demand (every call spends
quota; none falls back). Latency as in bench/latency.py: the clock starts at each event's
scheduled send time and stops when a consumer of the actions topic holds its action;
percentiles after a 3 s warm-up. Printed as a table, written to
bench/results/capacity_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.latency import measure_latency
from bench.paths import ROOT
from bench.run import _fresh_broker, _touchflow_env

RULES = """\
version: "capacity-latency-1"
actions:
  call:
    channel: call_center
    basis: service
    when: [{event: {type: lead_qualified}}]
"""
LIMIT = """\
capacity:
  call_center: {channel: call_center, limit: 100000000, per: total}
"""
PARTITIONS = 4


def _leads(count: int) -> tuple[list[bytes], list[bytes | None]]:
    log: list[bytes] = []
    keys: list[bytes | None] = []
    for n in range(count):
        lead = f"lead-{n}"
        log.append(orjson.dumps({
            "event_id": f"q-{n}", "occurred_at": f"2026-03-02T09:{n // 6000 % 60:02d}:"
            f"{n // 100 % 60:02d}Z", "channel": "web", "type": "lead_qualified",
            "identity": {"customer_id": lead}, "properties": {}}))
        keys.append(f"customer_id:{lead}".encode())
    return log, keys


async def _measure(rate: float, seconds: float, tmp: Path) -> dict[str, Any]:
    log, keys = _leads(int(rate * seconds) + 1)
    out: dict[str, Any] = {}
    for name, text in (("no limit", RULES), ("capacity limit", RULES + LIMIT)):
        rules = tmp / f"{name.replace(' ', '_')}.yaml"
        rules.write_text(text)
        async with _fresh_broker(tmp, 0.0) as bootstrap:
            env, prefix = _touchflow_env(bootstrap, PARTITIONS, tmp)
            env["TOUCHFLOW_RULES"] = str(rules)
            print(f"  {name}: {rate:,.0f} leads/s for {seconds:g} s...", file=sys.stderr,
                  flush=True)
            out[name] = await measure_latency(bootstrap, env, prefix, ROOT, log, keys, rate,
                                              tmp / f"{name.replace(' ', '_')}.log", seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_measure(args.rate, args.seconds, Path(tmp)))
    print(f"{'rulebook':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, row in result.items():
        if not row.get("ok", True) or "p50_ms" not in row:
            print(f"{name:<16} {row}")
            continue
        print(f"{name:<16} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8} "
              f"{row['max_ms']:>8}")
    out = ROOT / "bench" / "results" / "capacity_latency.json"
    out.write_text(json.dumps({"rate": args.rate, "seconds": args.seconds,
                               "partitions": PARTITIONS, "runs": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
