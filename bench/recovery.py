"""Recovery time and resident memory of a worker holding many profiles (RocksDB store).

The changelog of a fresh app id is filled with `profiles` realistic profile records (real
profiles from a replay of the workload, re-keyed: first the workload's own customers, then
synthetic ones), partitioned like the worker partitions them. Then a worker starts with an
empty data directory: the clock runs from its start to /readyz answering 200 (group join,
changelog read to the high watermark and RocksDB writes included). Its resident memory is read
when ready, and again after the workload's events went through it (the profile cache warm).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["measure_recovery"]


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _profiles_held(base: str) -> int:
    """Sum of the worker's `touchflow_profiles` gauge (profiles in its stores)."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("touchflow_profiles{")))


def _profiles(log: Sequence[bytes], keys: Sequence[bytes | None], count: int,
              rules: Path) -> list[tuple[bytes, bytes]]:
    """`count` (key, value) changelog records cloned from replayed profiles."""
    from schemas.event import decode_event
    from service.domain import load_rulebook
    from service.domain.profile import Profile
    from service.replay.runner import Replayer

    replayer = Replayer(load_rulebook(rules))
    for raw in log[:50_000]:
        with contextlib.suppress(Exception):
            replayer.apply(decode_event(raw))
    templates = [p.to_bytes() for p in replayer.profiles.values()][:5000]
    wanted: list[bytes] = list(dict.fromkeys(k for k in keys if k is not None))[:count]
    index = 0
    while len(wanted) < count:
        wanted.append(f"customer_id:r-{index:07d}".encode())
        index += 1
    out = []
    for number, key in enumerate(wanted):
        profile = Profile.from_bytes(templates[number % len(templates)])
        text = key.decode()
        profile.key = text
        profile.cid = text[12:] if text.startswith("customer_id:") else None
        out.append((key, profile.to_bytes()))
    return out


async def _fill(bootstrap: str, topic: str, partitions: int,
                records: list[tuple[bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                                max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
    await asyncio.wait_for(producer.start(), 20)
    began = time.perf_counter()
    try:
        header = [("src", b"bench")]
        for key, value in records:
            partition = (murmur2(key) & 0x7FFFFFFF) % partitions
            await producer.send(topic, value, key=key, partition=partition, headers=header)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - began


async def measure_recovery(bootstrap: str, env: Mapping[str, str], prefix: str, cwd: Path,
                           log: Sequence[bytes], keys: Sequence[bytes | None], profiles: int,
                           partitions: int, rules: Path, log_path: Path) -> dict[str, Any]:
    """Fill the changelog, start a worker, time it to ready; RSS when ready and after traffic."""
    from bench.harness import (
        _committed,
        create_topic,
        produce_log,
        start_worker,
        stop_process,
        wait_ready,
    )

    records = _profiles(log, keys, profiles, rules)
    stored = sum(len(v) for _, v in records) / len(records)
    changelog = f"{prefix}-{prefix}.profiles-changelog"
    events = f"{prefix}.events"
    await create_topic(bootstrap, changelog, partitions)
    fill_s = await _fill(bootstrap, changelog, partitions, records)
    del records
    print(f"  recovery: {profiles:,} profiles in the changelog ({fill_s:.0f}s); starting a "
          "worker on an empty data directory...", file=sys.stderr, flush=True)
    began = time.monotonic()
    process = start_worker(env, cwd, log_path)
    from aiokafka import AIOKafkaConsumer, TopicPartition

    try:
        base = await wait_ready(process, log_path, 900)
        ready_s = time.monotonic() - began
        rss_ready = _rss_mib(process.pid)
        held = _profiles_held(base)
        await produce_log(bootstrap, events, list(log), list(keys))
        watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=prefix,
                                   enable_auto_commit=False)
        await asyncio.wait_for(watcher.start(), 20)
        try:
            tps = [TopicPartition(events, p) for p in range(partitions)]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and await _committed(watcher, tps) < len(log):
                await asyncio.sleep(1)
        finally:
            await watcher.stop()
        rss_after = _rss_mib(process.pid)
    finally:
        stop_process(process, 30)
    return {"ok": True, "profiles": profiles, "stored_bytes_per_profile": round(stored),
            "start_to_ready_s": round(ready_s, 1), "profiles_in_store": held,
            "rss_mib_when_ready": None if rss_ready is None else round(rss_ready),
            "rss_mib_after_traffic": None if rss_after is None else round(rss_after),
            "traffic_events": len(log)}
