"""Recovery time and resident memory of a worker holding many profiles (RocksDB store).

The changelog of a fresh app id is filled with `profiles` realistic profile records (real
profiles from a replay of the workload, re-keyed: first the workload's own customers, then
synthetic ones), partitioned like the worker partitions them: either one record per key (a
compacted changelog, the best case) or `versions` records per key, written in rounds over all
the keys as a live worker writes them (an uncompacted changelog; the last round holds each
key's final profile). Then a worker starts with an empty data directory: the clock runs from
its start to /readyz answering 200 (group join, changelog read to the high watermark and
RocksDB writes included). Its resident memory is read when ready, and again after traffic:
either the workload's events, or (`touch`) one event for every recovered customer, so each
of them is read from the store, decided and cached (the cache's bytes bound per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def _templates(log: Sequence[bytes], rules: Path) -> list[Any]:
    """Up to 5,000 real profiles from a replay of the workload's first 50,000 events."""
    from schemas.event import decode_event
    from service.domain import load_rulebook
    from service.replay.runner import Replayer

    replayer = Replayer(load_rulebook(rules))
    for raw in log[:50_000]:
        with contextlib.suppress(Exception):
            replayer.apply(decode_event(raw))
    return list(replayer.profiles.values())[:5000]


def _round(templates: Sequence[Any], customers: Sequence[bytes], version: int,
           versions: int) -> Iterator[tuple[bytes, bytes]]:
    """One changelog record per customer, cloned from `templates` and re-keyed; the rounds
    before the last clone other templates (each key's earlier states)."""
    shift = (versions - 1 - version) * 7
    for number, key in enumerate(customers):
        profile = templates[(number + shift) % len(templates)]
        text = key.decode()
        profile.key = text
        profile.cid = text[12:] if text.startswith("customer_id:") else None
        yield key, profile.to_bytes()


def _customers(keys: Sequence[bytes | None], count: int) -> list[bytes]:
    """`count` distinct profile keys: the workload's own customers, then synthetic ones."""
    wanted: list[bytes] = list(dict.fromkeys(k for k in keys if k is not None))[:count]
    index = 0
    while len(wanted) < count:
        wanted.append(f"customer_id:r-{index:07d}".encode())
        index += 1
    return wanted


def touch_log(log: Sequence[bytes], customers: Sequence[bytes]) -> tuple[list[bytes],
                                                                         list[bytes | None]]:
    """One event for each customer in `customers` (keys like `customer_id:c-1`): the
    workload's events with a customer id, re-addressed in turn to each of them, with new
    event ids; anonymous ids dropped (no alias profiles). Returns the events and their keys."""
    import orjson

    templates = []
    for raw in log:
        event = orjson.loads(raw)
        if event["identity"].get("customer_id") and event["type"] != "identified":
            templates.append(event)
        if len(templates) >= 1000:
            break
    events: list[bytes] = []
    out_keys: list[bytes | None] = []
    for number, key in enumerate(customers):
        field, _, value = key.decode().partition(":")
        event = dict(templates[number % len(templates)])
        event["identity"] = {field: value}
        event["event_id"] = f"touch-{number:09d}"
        events.append(orjson.dumps(event))
        out_keys.append(key)
    return events, out_keys


async def _fill(bootstrap: str, topic: str, partitions: int,
                rounds: Iterable[Iterable[tuple[bytes, bytes]]]) -> tuple[float, int, int]:
    """Produce the rounds in order, one record batch per partition per 5,000 records; the
    seconds it took, the records, and the bytes of the last round's values."""
    from aiokafka import AIOKafkaProducer

    from service.domain.partitioning import partition_for_key
    from service.stream.sink import BatchingKafkaSink

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1,
                                max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
    await asyncio.wait_for(producer.start(), 20)
    began = time.perf_counter()
    sent = last_bytes = 0
    try:
        await producer.partitions_for(topic)
        sink = BatchingKafkaSink(producer)
        header = [("src", b"bench")]
        for records in rounds:
            last_bytes = 0
            for key, value in records:
                await sink.send(topic, key, value, headers=header,
                                partition=partition_for_key(key, partitions))
                sent += 1
                last_bytes += len(value)
                if not sent % 5000:
                    await sink.flush()
        await sink.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - began, sent, last_bytes


def _gauge(base: str, name: str) -> float:
    """The sum of a metric's samples on the worker's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


async def measure_recovery(bootstrap: str, env: Mapping[str, str], prefix: str, cwd: Path,
                           log: Sequence[bytes], keys: Sequence[bytes | None], profiles: int,
                           partitions: int, rules: Path, log_path: Path, *, versions: int = 1,
                           touch: bool = False) -> dict[str, Any]:
    """Fill the changelog (`versions` records per key), start a worker, time it to ready;
    RSS when ready and after traffic (`touch`: one event for every recovered customer)."""
    from bench.harness import (
        _committed,
        create_topic,
        produce_log,
        start_worker,
        stop_process,
        wait_ready,
    )

    templates = _templates(log, rules)
    customers = _customers(keys, profiles)
    changelog = f"{prefix}-{prefix}.profiles-changelog"
    events = f"{prefix}.events"
    await create_topic(bootstrap, changelog, partitions)
    fill_s, records, last_bytes = await _fill(
        bootstrap, changelog, partitions,
        (_round(templates, customers, v, versions) for v in range(versions)))
    del templates
    print(f"  recovery: {profiles:,} profiles, {records:,} changelog records ({fill_s:.0f}s); "
          "starting a worker on an empty data directory...", file=sys.stderr, flush=True)
    if touch:
        traffic, traffic_keys = touch_log(log, customers)
    else:
        traffic, traffic_keys = list(log), list(keys)
    del customers
    began = time.monotonic()
    process = start_worker(env, cwd, log_path)
    from aiokafka import AIOKafkaConsumer, TopicPartition

    try:
        base = await wait_ready(process, log_path, 900)
        ready_s = time.monotonic() - began
        rss_ready = _rss_mib(process.pid)
        held = _profiles_held(base)
        await produce_log(bootstrap, events, traffic, traffic_keys)
        produced = time.monotonic()
        watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=prefix,
                                   enable_auto_commit=False)
        await asyncio.wait_for(watcher.start(), 20)
        rss_peak = 0.0
        try:
            tps = [TopicPartition(events, p) for p in range(partitions)]
            deadline = time.monotonic() + max(300.0, len(traffic) / 2000)
            while time.monotonic() < deadline and await _committed(watcher, tps) < len(traffic):
                rss_peak = max(rss_peak, _rss_mib(process.pid) or 0.0)
                await asyncio.sleep(1)
        finally:
            await watcher.stop()
        traffic_s = time.monotonic() - produced
        rss_after = _rss_mib(process.pid)
        rss_peak = max(rss_peak, rss_after or 0.0)
        cache_bytes = _gauge(base, "touchflow_profile_cache_bytes")
        evictions = _gauge(base, "touchflow_profile_cache_evictions_total")
    finally:
        stop_process(process, 30)
    return {"ok": True, "profiles": profiles, "versions_per_key": versions,
            "changelog_records": records, "fill_s": round(fill_s, 1),
            "stored_bytes_per_profile": round(last_bytes / max(profiles, 1)),
            "start_to_ready_s": round(ready_s, 1), "profiles_in_store": held,
            "rss_mib_when_ready": None if rss_ready is None else round(rss_ready),
            "rss_mib_after_traffic": None if rss_after is None else round(rss_after),
            "rss_mib_peak_in_traffic": round(rss_peak),
            "traffic": "one event per recovered customer" if touch else "the workload",
            "traffic_events": len(traffic), "traffic_s": round(traffic_s, 1),
            "cache_mib_after_traffic": round(cache_bytes / 2**20),
            "cache_evictions": int(evictions)}
