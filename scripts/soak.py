"""`make soak`: run a worker for a while at a steady rate and report whether it stays healthy.

Starts the embedded broker, one worker (RocksDB store) as a subprocess and the simulator at
`--rate` events/s (choose about half of the measured capacity, see `make bench`), then every
`--sample` seconds records the worker's resident memory, the dead-letter count and the total
consumer lag from its /metrics. At the end it prints the RSS slope (least squares, MiB/min),
dead-letter growth and the maximum lag, writes them as JSON, and exits non-zero when memory
grows faster than `--max-slope` MiB/min after warm-up, the dead-letter topic grows, or lag is
unbounded (still growing over the last third). Not part of CI: it takes `--minutes`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points) or 1.0
    return sum((x - mx) * (y - my) for x, y in points) / den


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--max-slope", type=float, default=2.0, help="MiB per minute")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from service.tools.embedded import EmbeddedBroker
    from service.tools.simulator import simulate

    data = tempfile.mkdtemp(prefix="touchflow-soak-")
    with EmbeddedBroker() as broker:
        env = dict(os.environ, TOUCHFLOW_BROKER=broker.url, TOUCHFLOW_DATA_DIR=data,
                   TOUCHFLOW_METRICS_PORT="0", TOUCHFLOW_METRICS_HOST="127.0.0.1",
                   TOUCHFLOW_SESSION_TIMEOUT_MS="6000", TOUCHFLOW_PARTITIONS="4",
                   PYTHONPATH=str(ROOT))
        log_path = Path(data) / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "service", "worker"], cwd=ROOT,
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = ""
            for _ in range(300):
                match = re.search(r"on (http://[0-9.:]+)/metrics", log_path.read_text())
                if match:
                    base = match.group(1)
                    break
                time.sleep(0.1)
            samples: list[dict[str, float]] = []

            async def run() -> None:
                traffic = asyncio.create_task(simulate(
                    broker.bootstrap, "touchpoints.events", rate=args.rate, seed=11,
                    customers=args.customers, limit=None))
                started = time.monotonic()
                try:
                    while time.monotonic() - started < args.minutes * 60:
                        await asyncio.sleep(args.sample)
                        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                            text = response.read().decode()
                        sample = {
                            "t_min": (time.monotonic() - started) / 60,
                            "rss_mib": _rss_mib(worker.pid),
                            "deadletters": _metric_sum(text, "touchflow_deadletters_total"),
                            "lag": _metric_sum(text, "touchflow_consumer_lag_messages"),
                            "events": _metric_sum(text, "touchflow_events_total"),
                        }
                        samples.append(sample)
                        print(json.dumps(sample), flush=True)
                finally:
                    traffic.cancel()
                    await asyncio.gather(traffic, return_exceptions=True)

            asyncio.run(run())
        finally:
            worker.terminate()
            worker.wait(30)
    warm = [s for s in samples if s["t_min"] >= min(2.0, args.minutes / 3)]
    slope = _slope([(s["t_min"], s["rss_mib"]) for s in warm])
    tail = samples[len(samples) * 2 // 3:]
    lag_slope = _slope([(s["t_min"], s["lag"]) for s in tail])
    report = {
        "minutes": args.minutes, "rate": args.rate,
        "rss_slope_mib_per_min": round(slope, 3),
        "rss_final_mib": samples[-1]["rss_mib"] if samples else None,
        "deadletter_growth": (samples[-1]["deadletters"] - samples[0]["deadletters"])
        if samples else None,
        "max_lag": max((s["lag"] for s in samples), default=None),
        "lag_slope_per_min_last_third": round(lag_slope, 1),
        "events": samples[-1]["events"] if samples else 0,
        "samples": samples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    healthy = (slope <= args.max_slope and report["deadletter_growth"] == 0
               and lag_slope <= args.rate * 0.05)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
