"""Machine instructions per event, counted by valgrind: a figure that does not move with the
machine's load.

Wall-clock rates on a shared two-core machine drift by tens of percent from minute to minute
(a plain Python loop here took 0.51 to 0.88 s from one second to the next); an instruction
count does not. Each mode runs twice under `valgrind --tool=cachegrind --cache-sim=no`, over
the first `small` and the first `small + events` events of the bench workload, with
PYTHONHASHSEED fixed; the difference of the two totals divided by `events` is the cost of one
event in steady work, start-up and imports cancelled out. Modes:

- `floor`: what the raw ceiling does per event in Python (orjson.loads, a dict update,
  orjson.dumps of a small record): the least a Python pipeline can do;
- `replay`: decode, `decide()` and encoding the actions (the replay engine, bench/run.py);
- `processor memory` / `processor rocksdb`: the worker's processor in-process
  (bench/inprocess.py): replay's work plus routing, the profile cache, encoding each changed
  profile, its changelog record and the store write, with no broker.

Instructions are not time (a cache miss costs more than an add), but they are what the code
asks of the processor, exactly, run after run: the way to tell whether a change made the
per-event path cheaper when the stopwatch cannot.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.paths import ROOT

__all__ = ["MODES", "count_instructions", "measure_instructions", "parse_refs", "write_workload"]

MODES = ("floor", "replay", "processor memory", "processor rocksdb")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def parse_refs(report: str) -> int:
    """The total instruction count ("I refs") from cachegrind's summary on stderr."""
    match = _REFS.search(report)
    if match is None:
        raise ValueError("no 'I refs' line in valgrind's output")
    return int(match.group(1).replace(",", ""))


def write_workload(path: Path, log: Sequence[bytes], keys: Sequence[bytes | None]) -> None:
    """The child's input: the events, their keys and their partitions (computed here, so that
    the child's count holds the processing only)."""
    from bench.inprocess import PARTITIONS, partitions_of

    path.write_bytes(pickle.dumps((list(log), list(keys), partitions_of(keys, PARTITIONS))))


def count_instructions(mode: str, workload: Path, events: int, *,
                       valgrind: str = "valgrind", timeout_s: float = 900.0) -> int:
    """Instructions of one child run of `mode` over the first `events` events."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    command = [valgrind, "--tool=cachegrind", "--cache-sim=no",
               "--cachegrind-out-file=/dev/null", sys.executable, "-m", "bench.instructions",
               "--child", mode, "--input", str(workload), "--events", str(events)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"valgrind run of {mode!r} exited {done.returncode}: {tail}")
    return parse_refs(done.stderr)


def measure_instructions(log: Sequence[bytes], keys: Sequence[bytes | None], *,
                         events: int = 20_000, small: int = 2_000,
                         modes: Sequence[str] = MODES) -> dict[str, Any]:
    """Per-event instructions of each mode (see the module docstring), or a note saying why
    not (valgrind missing, the log too short)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {"ok": False, "note": "skipped: valgrind is not installed "
                                     "(apt-get install valgrind)"}
    if len(log) < small + events:
        return {"ok": False, "note": f"skipped: needs {small + events:,} events"}
    began = time.perf_counter()
    per_event: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="touchflow-instructions-") as tmp:
        workload = Path(tmp) / "workload.pickle"
        write_workload(workload, log[:small + events], keys[:small + events])
        for mode in modes:
            print(f"  instructions: {mode}...", file=sys.stderr, flush=True)
            base = count_instructions(mode, workload, small, valgrind=valgrind)
            total = count_instructions(mode, workload, small + events, valgrind=valgrind)
            per_event[mode] = (total - base) / events
    return {"ok": True, "events": events, "after": small, "per_event": per_event,
            "seconds": round(time.perf_counter() - began, 1)}


def table(result: dict[str, Any]) -> str:
    """The per-event counts as lines, each against replay's."""
    per_event = result["per_event"]
    reference = per_event.get("replay")
    lines = [f"instructions per event (valgrind, events {result['after'] + 1:,} to "
             f"{result['after'] + result['events']:,}; the same on every run):"]
    for mode, count in per_event.items():
        share = f"  {count / reference:.2f}x replay" if reference else ""
        lines.append(f"  {mode:<18} {count:>10,.0f}{share}")
    return "\n".join(lines)


# -- the child: one mode over the first N events, run under valgrind --------------------------


def _floor(log: Sequence[bytes]) -> None:
    import orjson

    counts: dict[str, int] = {}
    for raw in log:
        event = orjson.loads(raw)
        key = str(event.get("event_id"))
        counts[key] = counts.get(key, 0) + 1
        orjson.dumps({"key": key, "count": counts[key]})


def _child(mode: str, workload: Path, events: int) -> None:
    log, keys, placed = pickle.loads(workload.read_bytes())
    log, keys, placed = log[:events], keys[:events], placed[:events]
    if mode == "floor":
        _floor(log)
    elif mode == "replay":
        from bench.core_rows import replay_once

        replay_once(log)
    elif mode.startswith("processor "):
        from bench.inprocess import run_processor

        run_processor(log, keys, store=mode.split(" ", 1)[1] + "://", placed=placed)
    else:
        raise SystemExit(f"unknown mode {mode!r}; one of {', '.join(MODES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=MODES, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    _child(args.child, args.input, args.events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
