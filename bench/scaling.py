"""Scale-out: N touchflow workers in one consumer group on the same log, N = 1, 2, 4, 8...

For each N: fresh topics (`--partitions` partitions, at least N), N worker processes with
their own RocksDB directories, started together and left to settle (every one answers
/readyz with a partition assignment, twice in a row one second apart, so no rebalance is
timed). Then the log is produced at full speed (one record batch per partition, the
workers' own sink) and the group's committed offsets are polled until every event is
committed. The clock runs from the first committed movement, as for the single-worker row.

Reported per N: events/s, speed-up over N = 1, efficiency = rate(N) / (N x rate(1)) (the
issue's target is >= 0.8), and the workers' summed CPU seconds per wall second. On a machine
with fewer cores than N + 1 (the broker needs one) the curve measures the machine, not the
design: run it where cores are plentiful (`python -m bench --only scaling --workers 1,2,4,8
--partitions 8`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["measure_scaling"]


async def _settle(processes: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path],
                  timeout_s: float) -> None:
    """Wait until every worker is ready twice in a row, one second apart."""
    from bench.harness import is_ready, wait_ready

    bases = [await wait_ready(p, log, timeout_s) for p, log in zip(processes, logs, strict=True)]
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not settle into a stable group")
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode}")
        ready = await asyncio.to_thread(lambda: all(is_ready(base) for base in bases))
        streak = streak + 1 if ready else 0
        await asyncio.sleep(1.0)


async def _one(bootstrap: str, env: Mapping[str, str], prefix: str, cwd: Path,
               log: Sequence[bytes], keys: Sequence[bytes | None], workers: int,
               partitions: int, tmp: Path, poll_s: float) -> dict[str, Any]:
    from bench.harness import create_topic, produce_log, start_worker, stop_process, watch_commits

    topic = f"{prefix}.events"
    await create_topic(bootstrap, topic, partitions)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for index in range(workers):
            path = tmp / f"scaling-{prefix}-w{index}.log"
            logs.append(path)
            worker_env = dict(env) | {"TOUCHFLOW_DATA_DIR": str(tmp / f"{prefix}-w{index}")}
            processes.append(start_worker(worker_env, cwd, path))
        await _settle(processes, logs, 120)
        producing = asyncio.create_task(produce_log(bootstrap, topic, log, keys))
        try:
            result = await watch_commits(
                processes, bootstrap=bootstrap, group=prefix, topic=topic,
                partitions=partitions, total=len(log), timeout_s=90 + len(log) / 400,
                poll_s=poll_s)
        finally:
            await producing
        if not result.ok:
            return {"workers": workers, "ok": False, "note": result.note}
        return {"workers": workers, "ok": True, "events": result.events,
                "seconds": round(result.seconds, 2),
                "events_per_s": round(result.rate),
                "cpu_per_s": round(result.cpu_seconds / result.seconds, 2)
                if result.cpu_seconds is not None and result.seconds else None,
                "note": result.note}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            stop_process(process, 20)


async def measure_scaling(bootstrap: str, make_env: Any, cwd: Path, log: Sequence[bytes],
                          keys: Sequence[bytes | None], counts: Sequence[int], partitions: int,
                          tmp: Path, poll_s: float = 0.25) -> list[dict[str, Any]]:
    """One row per worker count; `make_env()` gives (env, prefix) for fresh topics."""
    rows: list[dict[str, Any]] = []
    partitions = max(partitions, *counts)  # the same topics for every N: like-for-like
    for workers in counts:
        env, prefix = make_env(partitions)
        print(f"  scaling: {workers} worker(s) on {partitions} partitions...",
              file=sys.stderr, flush=True)
        try:
            row = await _one(bootstrap, env, prefix, cwd, log, keys, workers, partitions, tmp,
                             poll_s)
        except Exception as exc:
            row = {"workers": workers, "ok": False, "note": f"failed: {type(exc).__name__}: {exc}"}
        rows.append(row)
    base = next((r["events_per_s"] for r in rows if r.get("ok") and r["workers"] == 1), None)
    for row in rows:
        if row.get("ok") and base:
            row["speedup"] = round(row["events_per_s"] / base, 2)
            row["efficiency"] = round(row["events_per_s"] / (row["workers"] * base), 2)
    return rows


def scaling_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a small text table."""
    lines = [f"{'workers':>7}  {'events/s':>9}  {'speed-up':>8}  {'efficiency':>10}  "
             f"{'cpu/s':>5}  note"]
    for row in rows:
        if row.get("ok"):
            lines.append(f"{row['workers']:>7}  {row['events_per_s']:>9,}  "
                         f"{row.get('speedup', 0):>7.2f}x  {row.get('efficiency', 0):>10.2f}  "
                         f"{row.get('cpu_per_s') or 0:>5.2f}  {row.get('note') or ''}")
        else:
            lines.append(f"{row['workers']:>7}  {'-':>9}  {'-':>8}  {'-':>10}  {'-':>5}  "
                         f"{row.get('note', '')}")
    return "\n".join(lines)
