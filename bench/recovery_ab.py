"""Recovery alone, two source trees against each other on one filled changelog.

    git worktree add /tmp/touchflow-old 3d4ee0d
    python -m bench.recovery_ab --old /tmp/touchflow-old --profiles 1000000 --rounds 2

One embedded broker; a changelog of `--profiles` profiles with `--versions` records per key,
written in rounds over all keys as `bench/recovery.py` writes its uncompacted case. Then, per
round, each tree in turn ("new" is this checkout) runs `recover_partitions` in a child process
of its own (its `PYTHONPATH`) into empty RocksDB stores. The clock starts when the child calls
`recover_partitions` and stops when it returns (no worker start-up, no group join); CPU is the
child's process time over the same span, RocksDB's background threads included. Prints a
table, writes JSON to `bench/results/` (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.paths import ROOT

_CHILD = r"""
import asyncio, json, os, resource, shutil, sys, tempfile, time
from pathlib import Path
from service.ops.settings import load_settings
from service.stream.recovery import recover_partitions
from service.stream.store import RocksStore

async def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = load_settings(broker=f"kafka://{bootstrap}")
    tmp = tempfile.mkdtemp(prefix="touchflow-recovery-ab-")
    stores = {p: RocksStore(Path(tmp) / f"p{p}") for p in range(partitions)}
    cpu, wall = time.process_time(), time.perf_counter()
    results = await recover_partitions(settings, topic, stores)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                      "records": sum(r.records for r in results),
                      "profiles": sum(s.count() for s in stores.values()),
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "load_average": round(os.getloadavg()[0], 1)}))
    for store in stores.values():
        store.close()
    shutil.rmtree(tmp)

asyncio.run(main())
"""


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.harness import create_topic
    from bench.paths import RULES
    from bench.recovery import _customers, _fill, _round, _templates
    from bench.run import _workload
    from service.tools.embedded import EmbeddedBroker

    trees = {"new": ROOT, "old": Path(args.old).resolve()}
    log, keys = _workload(60_000, 100_000, 7)
    runs: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker:
        topic = "recovery-ab-changelog"
        await create_topic(broker.bootstrap, topic, args.partitions)
        templates, customers = _templates(log, RULES), _customers(keys, args.profiles)
        fill_s, records, _ = await _fill(
            broker.bootstrap, topic, args.partitions,
            (_round(templates, customers, v, args.versions) for v in range(args.versions)))
        print(f"changelog: {records:,} records in {fill_s:.0f}s", file=sys.stderr, flush=True)
        del log, keys, templates, customers
        for number in range(args.rounds):
            for name, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=str(tree))
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, broker.bootstrap, topic,
                     str(args.partitions)], env=env, cwd=tree, capture_output=True, text=True,
                    check=False)
                if done.returncode:
                    raise RuntimeError(f"{name} failed: {done.stderr[-400:]}")
                run = {"tree": name, "round": number + 1} | json.loads(done.stdout)
                print(f"  round {number + 1} {name}: {run['wall_s']} s, cpu {run['cpu_s']} s",
                      file=sys.stderr, flush=True)
                runs.append(run)
    return {"profiles": args.profiles, "versions_per_key": args.versions,
            "changelog_records": records, "partitions": args.partitions,
            "old_tree": str(trees["old"]), "method": __doc__, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "recovery-ab.json"))
    args = parser.parse_args()
    result = asyncio.run(_measure(args))
    print(f"{'round':>5}  {'tree':<4} {'wall s':>7} {'cpu s':>6}  load")
    for run in result["runs"]:
        print(f"{run['round']:>5}  {run['tree']:<4} {run['wall_s']:>7} {run['cpu_s']:>6}  "
              f"{run['load_average']}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
