"""`touchflow replay` measured as a whole process, against a floor process, in one run.

The workload is written to a JSONL file first (not timed). Then, `runs` times each,
alternating: `python -m service replay --input FILE --rules RULES --output actions.jsonl
--audit audit.jsonl --no-progress` (where two CPUs are available a second process decodes the
log: service/replay/decoder_process.py), the same with `--one-process` (decoding in the
replaying process), and the floor, a Python process that reads the same file line by line,
`orjson.loads` each line and writes one small JSON line per event. The clock starts just
before the process is spawned and stops when it has exited (interpreter start, imports,
rulebook load, reading and decoding the file, deciding, writing the actions and the audit
records, closing the files: all in). CPU = the child's user + system seconds (`os.wait4`,
which includes the decoding process it waited for), the figure the host's other tenants
disturb least. Reported: the median run of each, events/s by wall clock and per CPU second,
replay's share of the floor's rate, and two processes against one.

Bytecode is written and one untimed replay of the first 100 events runs first, as for an
installed package (compiled on install), not the sources compiled again at every start
(bench/README.md, "Why the harness is built this way").
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FLOOR", "measure_replay_process", "run_process"]

FLOOR = """
import sys, orjson
dumps, loads = orjson.dumps, orjson.loads
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    write = out.write
    for line in src:
        event = loads(line)
        write(dumps({"event_id": event["event_id"], "type": event["type"]}) + b"\\n")
"""


def run_process(command: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds from spawn to exit, the child's CPU seconds, and its exit code."""
    began = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.stderr is not None:
        process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


def measure_replay_process(log: Sequence[bytes], rules: Path, root: Path, tmp: Path,
                           runs: int = 3, baseline: Path | None = None) -> dict[str, Any]:
    """Replay as a process and the floor process, `runs` times each, alternating.

    `baseline`: another source tree (e.g. `git archive <commit> | tar -x -C DIR`) whose
    replay runs too, in turn with the others (`replay baseline`), for a before/after ratio
    measured under the same load."""
    path = tmp / "replay-input.jsonl"
    with open(path, "wb") as out:
        for raw in log:
            out.write(raw.rstrip(b"\n") + b"\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def replay_of(source: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "service", "replay", "--input", str(source), "--rules",
                str(rules), "--output", str(tmp / "replay-actions.jsonl"), "--audit",
                str(tmp / "replay-audit.jsonl"), "--no-progress", *extra]

    warm = tmp / "replay-warm-up.jsonl"
    warm.write_bytes(b"".join(raw.rstrip(b"\n") + b"\n" for raw in log[:100]))
    run_process(replay_of(warm), root, env)  # compiles and caches the bytecode; not timed
    replay = replay_of(path)
    floor = [sys.executable, "-c", FLOOR, str(path), str(tmp / "floor-out.jsonl")]
    got: dict[str, list[tuple[float, float]]] = {"replay": [], "replay one process": [],
                                                 "floor": []}
    trees = {"replay": root, "replay one process": root, "floor": root}
    commands = [("replay", replay), ("replay one process", replay_of(path, "--one-process")),
                ("floor", floor)]
    if baseline is not None:
        trees["replay baseline"] = baseline
        got["replay baseline"] = []
        commands.insert(1, ("replay baseline", replay))
        run_process(replay_of(warm), baseline, _env_for(baseline, env))
    for _ in range(runs):
        for name, command in commands:
            tree = trees[name]
            wall, cpu, code = run_process(command, tree, _env_for(tree, env) if tree != root
                                          else env)
            if code != 0:
                return {"ok": False, "note": f"{name} exited with {code}"}
            got[name].append((wall, cpu))
    path.unlink()
    out: dict[str, Any] = {"ok": True, "events": len(log), "runs": runs}
    for name, measured in got.items():
        wall = statistics.median(w for w, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        out[name] = {"wall_s": [round(w, 3) for w, _ in measured],
                     "cpu_s": [round(c, 3) for _, c in measured],
                     "events_per_s": round(len(log) / wall),
                     "events_per_cpu_s": round(len(log) / cpu)}
    out["replay_vs_floor"] = round(out["replay"]["events_per_s"] / out["floor"]["events_per_s"],
                                   3)
    out["replay_vs_floor_cpu"] = round(out["replay"]["events_per_cpu_s"]
                                       / out["floor"]["events_per_cpu_s"], 3)
    out["replay_vs_one_process"] = round(out["replay"]["events_per_s"]
                                         / out["replay one process"]["events_per_s"], 3)
    if baseline is not None:
        before = out["replay baseline"]
        out["baseline"] = str(baseline)
        out["baseline_vs_floor"] = round(before["events_per_s"] / out["floor"]["events_per_s"],
                                         3)
        out["replay_vs_baseline"] = round(out["replay"]["events_per_s"]
                                          / before["events_per_s"], 3)
        out["replay_vs_baseline_cpu"] = round(out["replay"]["events_per_cpu_s"]
                                              / before["events_per_cpu_s"], 3)
    return out


def _env_for(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with `tree` first on PYTHONPATH instead of the measured tree."""
    rest = env.get("PYTHONPATH", "").split(os.pathsep, 1)
    return {**env, "PYTHONPATH": str(tree) + (os.pathsep + rest[1] if len(rest) > 1 else "")}
