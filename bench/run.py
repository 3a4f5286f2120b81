"""`python -m bench [--events N] [--quick]`: naive Faust vs touchflow vs raw aiokafka.

One seeded workload (service.tools.workload.event_log: ~300-byte events from 100k customers, keyed
by customer); each pipeline gets its own copy of it on its own topic of a fresh embedded
broker, produced before its clock starts, and runs as its own process in its own group.
Throughput = events committed per second, from the first committed-offset movement until all
are committed (bench/harness.py). Then the pure core (bench/bench_decide.py) in-process, if
present. Prints one table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.core_rows import pure_core, replay
from bench.harness import Measurement, create_topic, measure_subprocess, produce_log
from bench.paths import ROOT, RULES

RESULTS = ROOT / "bench" / "results" / "latest.json"
START = datetime(2026, 3, 2, tzinfo=UTC)

Pipeline = Callable[[str, Path], list[str]]
# the ceiling rows: a Python pipeline's least work on each client; "vs ceiling" is against
# the highest of them in the run (per round with --rounds)
CEILINGS = ("raw aiokafka", "aiokafka batched", "librdkafka")


def _workload(events: int, customers: int, seed: int) -> tuple[list[bytes], list[bytes | None]]:
    from service.tools.simulator import customer_key
    from service.tools.workload import event_log

    log = event_log(seed, events, customers, START)
    return log, [customer_key(orjson.loads(raw)) for raw in log]


async def _run_pipeline(name: str, command: list[str], env: dict[str, str], *, bootstrap: str,
                        topic: str, group: str, log: list[bytes], keys: list[bytes | None],
                        partitions: int, tmp: Path, create: bool = True) -> Measurement:
    poll_s = float(os.environ.get("BENCH_POLL_S", "0.1"))
    if create:
        await create_topic(bootstrap, topic, partitions)
    produce_s = await produce_log(bootstrap, topic, log, keys)
    print(f"  {name}: {len(log)} events produced to {topic} in {produce_s:.1f}s; running...",
          file=sys.stderr, flush=True)
    timeout = 90.0 + len(log) / 400
    result = await measure_subprocess(
        command, env, bootstrap=bootstrap, group=group, topic=topic, partitions=partitions,
        total=len(log), log_path=tmp / f"{name.replace(' ', '_')}.log", timeout_s=timeout,
        cwd=ROOT, poll_s=poll_s,
    )
    status = f"{result.rate:,.0f} events/s" if result.ok else f"FAILED: {result.note}"
    print(f"  {name}: {status}", file=sys.stderr, flush=True)
    for line in result.log_tail:
        print(f"    | {line}", file=sys.stderr)
    return result


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def _naive(bootstrap: str, log: list[bytes], keys: list[bytes | None], partitions: int,
                 tmp: Path) -> Measurement:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-naive-{tag}.events", f"bench-naive-{tag}"
    env = _base_env() | {"BENCH_BROKER": bootstrap, "BENCH_TOPIC": topic, "BENCH_GROUP": group,
                         "BENCH_PARTITIONS": str(partitions)}
    return await _run_pipeline(
        "naive faust", [sys.executable, "-m", "bench.naive_faust"], env, bootstrap=bootstrap,
        topic=topic, group=group, log=log, keys=keys, partitions=partitions, tmp=tmp)


def _touchflow_env(bootstrap: str, partitions: int, tmp: Path) -> tuple[dict[str, str], str]:
    """The worker's environment on fresh topics (prefix = app id = a new tag)."""
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-tf-{tag}"
    env = _base_env() | {
        "TOUCHFLOW_BROKER": f"kafka://{bootstrap}", "TOUCHFLOW_TOPIC_PREFIX": prefix,
        "TOUCHFLOW_APP_ID": prefix, "TOUCHFLOW_RULES": str(RULES),
        "TOUCHFLOW_DATA_DIR": str(tmp / f"touchflow-data-{tag}"),
        "TOUCHFLOW_PARTITIONS": str(partitions), "TOUCHFLOW_SESSION_TIMEOUT_MS": "6000",
        "TOUCHFLOW_METRICS_PORT": "0", "TOUCHFLOW_METRICS_HOST": "127.0.0.1",
        "TOUCHFLOW_LOG_LEVEL": "info",
    }
    return env, prefix


async def _touchflow(bootstrap: str, log: list[bytes], keys: list[bytes | None],
                     partitions: int, tmp: Path) -> Measurement:
    """The real worker, `python -m service worker`, with its default store (RocksDB) and
    changelog, metrics and health server."""
    env, prefix = _touchflow_env(bootstrap, partitions, tmp)
    return await _run_pipeline(
        "touchflow worker", [sys.executable, "-m", "service", "worker"], env,
        bootstrap=bootstrap, topic=f"{prefix}.events", group=prefix, log=log, keys=keys,
        partitions=partitions, tmp=tmp)


async def _touchflow_faust(bootstrap: str, log: list[bytes], keys: list[bytes | None],
                           partitions: int, tmp: Path) -> Measurement:
    """The same worker under the Faust runtime (TOUCHFLOW_RUNTIME=faust), same log, same
    matching partition counts."""
    env, prefix = _touchflow_env(bootstrap, partitions, tmp)
    env["TOUCHFLOW_RUNTIME"] = "faust"
    return await _run_pipeline(
        "touchflow faust runtime", [sys.executable, "-m", "service", "worker"], env,
        bootstrap=bootstrap, topic=f"{prefix}.events", group=prefix, log=log, keys=keys,
        partitions=partitions, tmp=tmp)


async def _latency(tmp: Path, broker: Callable[[], Any], log: list[bytes],
                   keys: list[bytes | None], partitions: int, maximum: float,
                   fractions: Sequence[float], seconds: float,
                   longer: Callable[[int], tuple[list[bytes], list[bytes | None]]] | None = None,
                   ) -> dict[str, Any]:
    """Event-to-receipt latency of the worker at each fraction of `maximum` events/s, of a
    relay forwarding the same acting events with no work (the worker's two broker hops) and
    of a bare hop through the broker, at the same rate (bench/latency.py), each measurement
    on its own fresh broker. Every load runs `seconds`: `longer(n)` gives a log of `n`
    events when the highest load needs more than `log` holds (Tansu's tail fetch slows with
    the batches in a partition, so a shorter run measures a younger, faster broker)."""
    from bench.latency import acting_ids, measure_hop, measure_latency, measure_relay

    runs: list[dict[str, Any]] = []
    needed = max(1, int(maximum * max(fractions) * seconds))
    if len(log) < needed and longer is not None:
        log, keys = longer(needed)
    most = min(len(log), needed)
    acting = acting_ids(log[:most], RULES, partitions)  # (a prefix of the log: the same ids)
    for fraction in fractions:
        rate = maximum * fraction
        row: dict[str, Any] = {"fraction": fraction, "rate": round(rate)}
        async with broker() as bootstrap:
            env, prefix = _touchflow_env(bootstrap, partitions, tmp)
            print(f"  latency: worker at {rate:,.0f} events/s ({fraction:.0%} of "
                  f"{maximum:,.0f}) for {seconds:g} s...", file=sys.stderr, flush=True)
            row["worker"] = await _or_failure(measure_latency(
                bootstrap, env, prefix, ROOT, log, keys, rate, tmp / f"latency-{fraction}.log",
                seconds))
        async with broker() as bootstrap:
            topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
            await create_topic(bootstrap, topic, partitions)
            print(f"  latency: a bare hop through the broker at {rate:,.0f} events/s...",
                  file=sys.stderr, flush=True)
            row["bare_hop"] = await _or_failure(measure_hop(bootstrap, topic, log, keys, rate,
                                                            seconds))
        async with broker() as bootstrap:
            tag = uuid.uuid4().hex[:8]
            topics = (f"bench-relay-{tag}.events", f"bench-relay-{tag}.out")
            for topic in topics:
                await create_topic(bootstrap, topic, partitions)
            print(f"  latency: a relay (two hops, no work) at {rate:,.0f} events/s...",
                  file=sys.stderr, flush=True)
            row["relay"] = await _or_failure(measure_relay(
                bootstrap, _base_env(), topics, log, keys, rate, acting, tmp / "relay-ids.txt",
                seconds))
        runs.append(row)
    return {"ok": True, "maximum": round(maximum), "seconds": seconds, "runs": runs}


async def _or_failure(measurement: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A latency measurement's figures, or a row that says how it failed."""
    try:
        return await measurement
    except Exception as exc:
        return {"ok": False, "note": f"failed: {type(exc).__name__}: {exc}"}


def latency_table(latency: Mapping[str, Any]) -> str:
    """The latency rows: per load, the receipt percentiles of the worker, of a relay (the
    worker's two broker hops with no work between: bench/relay.py) and of a bare hop."""
    lines = [f"latency, event due -> a consumer holds the action (bench/latency.py), loads as a "
             f"share of {latency['maximum']:,} events/s, {latency['seconds']:g} s each:",
             f"  {'load':>4}  {'events/s':>8}  {'path':<9} {'p50':>7} {'p95':>7} {'p99':>7} "
             f"{'max':>7}  (ms)  generator lag   due->stamped p50/p99, stamped->held p50/p99"]
    for row in latency["runs"]:
        for name, key in (("worker", "worker"), ("relay", "relay"), ("bare hop", "bare_hop")):
            got = row.get(key, {})
            if not got.get("ok"):
                lines.append(f"  {row['fraction']:>4.0%}  {row['rate']:>8,}  {name:<9} "
                             f"{got.get('note', 'not run')}")
                continue
            lines.append(f"  {row['fraction']:>4.0%}  {got['rate_achieved']:>8,}  {name:<9} "
                         f"{got['p50_ms']:>7} {got['p95_ms']:>7} {got['p99_ms']:>7} "
                         f"{got['max_ms']:>7}  {got['generator_lag_max_ms']:>9} ms   "
                         f"{got.get('to_stamp_p50_ms')}/{got.get('to_stamp_p99_ms')}, "
                         f"{got.get('stamp_to_held_p50_ms')}/{got.get('stamp_to_held_p99_ms')}"
                         + ("" if got.get("generator_kept_up", True) else
                            "  (generator behind: the host's figure, not the path's)"))
    return "\n".join(lines)


async def _ceiling(bootstrap: str, log: list[bytes], keys: list[bytes | None], partitions: int,
                   tmp: Path, *, name: str = "raw aiokafka", module: str = "bench.raw_ceiling",
                   extra: Mapping[str, str] | None = None) -> Measurement:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-raw-{tag}.events", f"bench-raw-{tag}"
    await create_topic(bootstrap, f"bench-raw-{tag}.out", partitions)
    env = _base_env() | {"BENCH_BROKER": bootstrap, "BENCH_TOPIC": topic, "BENCH_GROUP": group,
                         "BENCH_OUT_TOPIC": f"bench-raw-{tag}.out"} | dict(extra or {})
    return await _run_pipeline(
        name, [sys.executable, "-m", module], env, bootstrap=bootstrap,
        topic=topic, group=group, log=log, keys=keys, partitions=partitions, tmp=tmp)


async def _ceiling_batched(bootstrap: str, log: list[bytes], keys: list[bytes | None],
                           partitions: int, tmp: Path) -> Measurement:
    """The raw ceiling sending as the worker does: one record batch per partition."""
    return await _ceiling(bootstrap, log, keys, partitions, tmp, name="aiokafka batched",
                          extra={"BENCH_BATCHED": "1"})


async def _librdkafka(bootstrap: str, log: list[bytes], keys: list[bytes | None],
                      partitions: int, tmp: Path) -> Measurement:
    """The raw ceiling's work on librdkafka (bench/librdkafka_ceiling.py)."""
    import importlib.util

    if importlib.util.find_spec("confluent_kafka") is None:
        return Measurement(note="skipped: confluent-kafka is not installed (pip install "
                                "'.[bench]')")
    return await _ceiling(bootstrap, log, keys, partitions, tmp, name="librdkafka",
                          module="bench.librdkafka_ceiling")


def _worker_counts(spec: str | None) -> list[int]:
    """Worker counts for the scaling run: as given, else 1, 2, 4, 8 as far as there is a core
    for each worker plus one for the broker and one for the load."""
    if spec:
        try:
            return sorted({int(part) for part in spec.split(",") if part.strip()})
        except ValueError:
            raise SystemExit(f"--workers wants numbers like 1,2,4,8, not {spec!r}") from None
    cores = os.cpu_count() or 1
    return [n for n in (1, 2, 4, 8) if n + 2 <= cores]


def _table(rows: list[tuple[str, Measurement]], rounds: dict[str, Any] | None = None,
           ) -> tuple[str, list[dict[str, Any]]]:
    """The printed table and its JSON rows; with `rounds` (bench/rounds.py), the ratios are
    the medians of the per-round ratios."""
    naive = dict(rows).get("naive faust", Measurement()).rate
    ceiling = max((dict(rows).get(name, Measurement()).rate for name in CEILINGS), default=0.0)
    rounds = rounds or {}
    header = ("pipeline", "events", "seconds", "events/s", "vs naive", "vs ceiling", "cpu/s",
              "note")
    lines: list[tuple[str, ...]] = [header]
    records: list[dict[str, Any]] = []
    for name, m in rows:
        cpu_share = m.cpu_seconds / m.seconds if m.ok and m.cpu_seconds and m.seconds else None
        vs_naive = m.rate / naive if m.ok and naive else None
        vs_ceiling = m.rate / ceiling if m.ok and ceiling else None
        if name in rounds:
            vs_naive = rounds[name].get("median_vs_naive", vs_naive)
            vs_ceiling = rounds[name].get("median_vs_ceiling", vs_ceiling)
        lines.append((
            name,
            f"{m.events:,}" if m.ok else "-",
            f"{m.seconds:.2f}" if m.ok else "-",
            f"{m.rate:,.0f}" if m.ok else "-",
            f"{vs_naive:.2f}x" if vs_naive is not None else "-",
            f"{vs_ceiling:.2f}x" if vs_ceiling is not None else "-",
            f"{cpu_share:.2f}" if cpu_share is not None else "-",
            m.note,
        ))
        records.append({
            "pipeline": name, "ok": m.ok, "events": m.events, "seconds": round(m.seconds, 3),
            "events_per_s": round(m.rate, 1),
            "ratio_to_naive": None if vs_naive is None else round(vs_naive, 3),
            "ratio_to_ceiling": None if vs_ceiling is None else round(vs_ceiling, 3),
            "cpu_seconds": None if m.cpu_seconds is None else round(m.cpu_seconds, 3),
            "note": m.note,
        })
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.rjust(w) if 0 < i < 7 else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in lines)
    return text, records


@contextlib.asynccontextmanager
async def _fresh_broker(tmp: Path, rtt_ms: float) -> AsyncIterator[str]:
    """A new embedded broker for one measurement (its bootstrap address), behind a relay
    adding `rtt_ms` per round trip if asked. Each pipeline gets an empty broker: on one
    broker for the whole run the later rows met the earlier rows' millions of records
    (bench/README.md, "Why the harness is built this way")."""
    from service.tools.embedded import EmbeddedBroker
    from service.tools.embedded.broker import free_port

    relay_port = free_port() if rtt_ms else None
    with EmbeddedBroker(log_path=tmp / "tansu.log", advertised_port=relay_port) as broker:
        proxy = None
        if relay_port is not None:
            from bench.delay_proxy import DelayProxy

            proxy = await DelayProxy(relay_port, broker.port, rtt_ms).start()
        bootstrap = f"127.0.0.1:{relay_port}" if proxy else broker.bootstrap
        print(f"broker: embedded Tansu at {bootstrap}"
              + (f" (through a relay adding {rtt_ms:g} ms per round trip)" if proxy else ""),
              file=sys.stderr, flush=True)
        try:
            yield bootstrap
        finally:
            if proxy is not None:
                await proxy.stop()


async def _throughput(args: argparse.Namespace, wanted: set[str],
                      broker: Callable[[], contextlib.AbstractAsyncContextManager[str]],
                      log: list[bytes], keys: list[bytes | None], tmp: Path,
                      ) -> tuple[list[tuple[str, Measurement]], dict[str, Any]]:
    """The throughput rows on one log, `args.rounds` times round-robin, each on a fresh
    broker: the rows (median runs with rounds) and the per-round ratios."""
    steps = (("ceiling", "raw aiokafka", _ceiling),
             ("ceiling", "aiokafka batched", _ceiling_batched),
             ("ceiling", "librdkafka", _librdkafka),
             ("naive", "naive faust", _naive),
             ("touchflow", "touchflow worker", _touchflow),
             ("faust", "touchflow faust runtime", _touchflow_faust))
    played: list[list[tuple[str, Measurement]]] = []
    for number in range(args.rounds):
        if args.rounds > 1:
            print(f"round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
        played_round: list[tuple[str, Measurement]] = []
        for key, name, step in steps:
            if key in wanted:
                async with broker() as bootstrap:
                    played_round.append(
                        (name, await step(bootstrap, log, keys, args.partitions, tmp)))
        played.append(played_round)
    if args.rounds > 1:
        from bench.rounds import combine_rounds

        return combine_rounds(played, ceiling=CEILINGS)
    return played[0], {}


async def _main(args: argparse.Namespace) -> int:

    began = time.perf_counter()
    log, keys = _workload(args.events, args.customers, args.seed)
    size = sum(map(len, log)) / len(log)
    print(f"workload: {len(log):,} events, {args.customers:,} customers, seed {args.seed}, "
          f"mean {size:.0f} bytes (generated in {time.perf_counter() - began:.1f}s)",
          file=sys.stderr, flush=True)
    wanted = set(args.only or ["ceiling", "naive", "touchflow", "faust", "core",
                               "instructions", "latency", "recovery", "replay"])
    rows: list[tuple[str, Measurement]] = []
    per_round: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    recovery: dict[str, Any] = {}
    scaling: list[dict[str, Any]] = []
    counts = _worker_counts(args.workers)
    with tempfile.TemporaryDirectory(prefix="touchflow-bench-") as tmp_name:
        tmp = Path(tmp_name)

        def broker() -> contextlib.AbstractAsyncContextManager[str]:
            return _fresh_broker(tmp, args.broker_rtt_ms)

        rows, per_round = await _throughput(args, wanted, broker, log, keys, tmp)
        returning: dict[str, Any] = {}
        if args.returning and wanted & {"ceiling", "naive", "touchflow"}:
            long_log, long_keys = _workload(args.returning, args.customers, args.seed)
            print(f"returning customers: {len(long_log):,} events from the same "
                  f"{args.customers:,} customers", file=sys.stderr, flush=True)
            long_rows, long_rounds = await _throughput(args, wanted, broker, long_log,
                                                       long_keys, tmp)
            del long_log, long_keys
            returning = {"events": args.returning, "rows": long_rows, "rounds": long_rounds}
        if "latency" in wanted:
            maximum = args.latency_max or dict(rows).get("touchflow worker", Measurement()).rate
            if not maximum:  # the loads are shares of the worker's maximum in this run
                async with broker() as bootstrap:
                    measured = await _touchflow(bootstrap, log, keys, args.partitions, tmp)
                rows.append(("touchflow worker", measured))
                maximum = measured.rate or 4000.0
            fractions = [float(f) for f in args.latency_loads.split(",") if f.strip()]
            latency = await _latency(
                tmp, broker, log, keys, args.partitions, maximum, fractions,
                args.latency_seconds, lambda n: _workload(n, args.customers, args.seed))
        if "scaling" in wanted or (not args.only and len(counts) > 1):
            from bench.scaling import measure_scaling

            async with broker() as bootstrap:
                scaling = await measure_scaling(
                    bootstrap, lambda p: _touchflow_env(bootstrap, p, tmp), ROOT,
                    log, keys, counts or [1, 2], args.partitions, tmp)
        if "recovery" in wanted:
            from bench.recovery import measure_recovery

            cases = (("compacted", 1, True), ("uncompacted", args.recovery_versions, False))
            for name, versions, touch in cases:
                async with broker() as bootstrap:
                    env, prefix = _touchflow_env(bootstrap, args.partitions, tmp)
                    try:
                        recovery[name] = await measure_recovery(
                            bootstrap, env, prefix, ROOT, log, keys, args.profiles,
                            args.partitions, RULES, tmp / f"recovery-{name}.log", versions=versions,
                            touch=touch)
                    except Exception as exc:
                        recovery[name] = {"ok": False,
                                          "note": f"failed: {type(exc).__name__}: {exc}"}
    memory: dict[str, float] = {}
    if "core" in wanted:
        rows.append(("pure core (decide)", pure_core(log)))
        replayed, memory = replay(log)
        rows.append(("replay", replayed))
    replay_process: dict[str, Any] = {}
    if "replay" in wanted:
        from bench.replay_process import measure_replay_process

        with tempfile.TemporaryDirectory(prefix="touchflow-replay-") as replay_tmp:
            print(f"  replay as a process (and the floor process), {args.replay_runs} runs each...",
                  file=sys.stderr, flush=True)
            replay_process = measure_replay_process(
                log, RULES, ROOT, Path(replay_tmp), runs=args.replay_runs,
                baseline=Path(args.replay_baseline) if args.replay_baseline else None)
    instructions: dict[str, Any] = {}
    if "instructions" in wanted:
        from bench.instructions import measure_instructions

        instructions = measure_instructions(log, keys, events=5_000 if args.quick else 20_000)
    text, records = _table(rows, per_round)
    where = (f"behind a relay adding {args.broker_rtt_ms:g} ms per round trip"
             if args.broker_rtt_ms else "on the same machine")
    print(f"\n{len(log):,} events, {args.customers:,} customers, {args.partitions} partitions, "
          f"one process per pipeline, broker {where} ({os.cpu_count()} CPUs)")
    if rows:
        print(text)
    returning_records: list[dict[str, Any]] = []
    if returning:
        long_text, returning_records = _table(returning["rows"], returning["rounds"])
        print(f"\nreturning customers: {returning['events']:,} events from the same "
              f"{args.customers:,} customers (profiles grow as they come back):")
        print(long_text)
    if memory:
        print(f"\nprofiles: {memory['profiles']:,} held after replay; "
              f"{memory['heap_bytes_per_profile']:,} bytes of Python heap each in memory "
              f"(tracemalloc), {memory['stored_bytes_per_profile']:,} bytes each as stored "
              "(RocksDB value, changelog record)")
        print(f"profile codec: encode {memory['encode_us']} us, decode {memory['decode_us']} us "
              f"(mean); a returning customer with a full id ring ("
              f"{memory['full_ring_stored_bytes']:,} bytes): encode "
              f"{memory['full_ring_encode_us']} us, decode {memory['full_ring_decode_us']} us")
    if replay_process.get("ok"):
        rp, fl = replay_process["replay"], replay_process["floor"]
        print(f"\ntouchflow replay as a whole process (start to exit, JSONL in, actions and "
              f"audit out), median of {replay_process['runs']}: {rp['events_per_s']:,} "
              f"events/s ({rp['events_per_cpu_s']:,} per CPU second); the floor process "
              f"(read, orjson.loads, write a line): {fl['events_per_s']:,} events/s "
              f"({fl['events_per_cpu_s']:,} per CPU second); replay/floor "
              f"{replay_process['replay_vs_floor']:.2f} by wall clock, "
              f"{replay_process['replay_vs_floor_cpu']:.2f} by CPU")
        one = replay_process["replay one process"]
        print(f"  with --one-process (decoding in the replaying process too): "
              f"{one['events_per_s']:,} events/s ({one['events_per_cpu_s']:,} per CPU second); "
              f"two processes / one {replay_process['replay_vs_one_process']:.2f} by wall clock")
        if "replay baseline" in replay_process:
            before = replay_process["replay baseline"]
            print(f"  the baseline tree's replay ({replay_process['baseline']}), in turn with "
                  f"them: {before['events_per_s']:,} events/s ({before['events_per_cpu_s']:,} "
                  f"per CPU second), baseline/floor {replay_process['baseline_vs_floor']:.2f}; "
                  f"replay/baseline {replay_process['replay_vs_baseline']:.3f} by wall clock, "
                  f"{replay_process['replay_vs_baseline_cpu']:.3f} by CPU")
    elif replay_process:
        print(f"replay as a process: {replay_process.get('note')}")
    if instructions.get("ok"):
        from bench.instructions import table as instructions_table

        print(instructions_table(instructions))
    elif instructions:
        print(f"instructions: {instructions.get('note')}")
    if latency.get("ok"):
        print()
        print(latency_table(latency))
    for name, got in recovery.items():
        if got.get("ok"):
            print(f"recovery, {name} changelog ({got['versions_per_key']} record(s) per key, "
                  f"{got['changelog_records']:,} records, "
                  f"{got['stored_bytes_per_profile']} bytes per profile): "
                  f"{got['profiles']:,} profiles ({got['profiles_in_store']:,} in the stores), "
                  f"worker start to ready {got['start_to_ready_s']} s; resident "
                  f"{got['rss_mib_when_ready']} MiB when ready, "
                  f"{got['rss_mib_after_traffic']} MiB after {got['traffic_events']:,} events "
                  f"of {got['traffic']} (peak {got['rss_mib_peak_in_traffic']} MiB; profile "
                  f"cache {got['cache_mib_after_traffic']} MiB, "
                  f"{got['cache_evictions']:,} evictions)")
        else:
            print(f"recovery, {name} changelog: {got.get('note')}")
    if scaling:
        from bench.scaling import scaling_table

        print(f"\nscale-out (one consumer group, {max(args.partitions, *(counts or [2]))} "
              f"partitions, {os.cpu_count()} CPUs shared with the broker):")
        print(scaling_table(scaling))
    result = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "events": len(log), "customers": args.customers, "seed": args.seed,
        "partitions": args.partitions, "mean_event_bytes": round(size, 1),
        "broker_rtt_ms": args.broker_rtt_ms,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "method": f"committed offsets polled every {os.environ.get('BENCH_POLL_S', '0.1')} s, "
                  "from their first movement until all events are committed; a fresh "
                  "embedded broker for each measurement",
        "rows": records,
        "rounds": {"count": args.rounds, "rows": per_round},
        "returning": {"events": returning.get("events"), "rows": returning_records,
                      "rounds": returning.get("rounds", {})} if returning else {},
        "memory": memory,
        "latency": latency,
        "recovery": recovery,
        "scaling": scaling,
        "instructions": instructions,
        "replay_process": replay_process,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0 if all(m.ok or m.note.startswith("skipped") for _, m in rows) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events (default 200000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 events")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", action="append",
                        choices=("ceiling", "naive", "touchflow", "faust", "core",
                                 "instructions", "latency", "recovery", "scaling", "replay"),
                        help="run only these pipelines (repeatable)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the throughput rows this many times, interleaved, and report "
                             "medians (bench/rounds.py; default 1)")
    parser.add_argument("--profiles", type=int, default=1_000_000,
                        help="profiles in the changelog for the recovery run (default 1000000)")
    parser.add_argument("--returning", type=int, default=0,
                        help="also run the throughput rows on a log of this many events from "
                             "the same customers (e.g. 600000: returning customers; default 0)")
    parser.add_argument("--recovery-versions", type=int, default=5,
                        help="records per key in the uncompacted recovery case (default 5)")
    parser.add_argument("--latency-max", type=float, default=None,
                        help="the worker's maximum events/s the latency loads are shares of "
                             "(default: the worker row of this run, measured if not asked)")
    parser.add_argument("--latency-loads", default="0.25,0.5,0.75",
                        help="latency loads as shares of the maximum (default 0.25,0.5,0.75)")
    parser.add_argument("--latency-seconds", type=float, default=20.0,
                        help="seconds of paced load per latency measurement (default 20)")
    parser.add_argument("--workers", default=None,
                        help="worker counts for the scaling run, e.g. 1,2,4,8 (default: those "
                             "with a spare core each, broker included; none on 2 CPUs)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file")
    parser.add_argument("--broker-rtt-ms", type=float, default=0.0,
                        help="put a relay adding this round trip in front of the broker, as a "
                             "network hop would (bench/delay_proxy.py; default 0: none)")
    parser.add_argument("--replay-baseline", default=None,
                        help="with --only replay: another source tree whose `touchflow replay` "
                             "runs in turn with this one's, for a before/after ratio")
    parser.add_argument("--replay-runs", type=int, default=3,
                        help="runs of each replay process (median; default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.quick:
        args.events = min(args.events, 20_000)
        os.environ.setdefault("BENCH_POLL_S", "0.1")  # short runs need a finer stopwatch
    return asyncio.run(_main(args))
