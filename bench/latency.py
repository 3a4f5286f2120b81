"""Event-to-action latency of the real worker at a fixed, paced rate (half the measured maximum).

The worker starts on fresh topics and is left to become ready (/readyz). Then events are
produced at `rate` per second, in 5 ms slices, each stamped with its send time (CreateTime);
a consumer reads the actions topic, whose records carry the worker's send time. Latency of
an action = its record timestamp minus its trigger event's send time: producer batching,
broker, fetch, decision, audit and changelog sends all included (both clocks are this
machine's). Percentiles over every action of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["measure_hop", "measure_latency"]

_WARM_UP_MS = 3000  # first sends to new topics wait for metadata; not the steady state


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def measure_latency(bootstrap: str, env: Mapping[str, str], prefix: str, cwd: Path,
                          log: Sequence[bytes], keys: Sequence[bytes | None], rate: float,
                          log_path: Path, seconds: float = 20.0) -> dict[str, Any]:
    """Run the worker, feed it `rate` events/s for `seconds`, return latency percentiles."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from bench.harness import start_worker, stop_process, wait_ready

    count = min(len(log), max(1, int(rate * seconds)))
    ids = [orjson.loads(raw)["event_id"] for raw in log[:count]]
    process = start_worker(env, cwd, log_path)
    sent: dict[str, int] = {}
    latencies: list[tuple[int, float]] = []  # (event send time ms, latency s)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    consumer = AIOKafkaConsumer(f"{prefix}.actions", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await wait_ready(process, log_path, 120)
        await asyncio.wait_for(producer.start(), 20)
        await asyncio.wait_for(consumer.start(), 20)
        done = asyncio.Event()

        async def read() -> None:
            idle_since: float | None = None
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                got = False
                for records in batch.values():
                    for record in records:
                        action = orjson.loads(record.value)
                        start = sent.get(action.get("trigger_event_id"))
                        if start is not None:
                            latencies.append((start, (record.timestamp - start) / 1000))
                            got = True
                if done.is_set():
                    now = time.monotonic()
                    idle_since = idle_since if not got and idle_since else now
                    if not got and now - idle_since > 3:
                        return

        reader = asyncio.create_task(read())
        achieved = await _paced(producer, f"{prefix}.events", log, keys, count, rate, ids, sent)
        done.set()
        await asyncio.wait_for(reader, 60)
    finally:
        await _stop_clients(producer, consumer)
        stop_process(process, 20)
    if not latencies:
        return {"ok": False, "note": "no actions came back"}
    return _summary(latencies, rate, achieved, count)


async def _stop_clients(*clients: Any) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.stop()


async def _paced(producer: Any, topic: str, log: Sequence[bytes], keys: Sequence[bytes | None],
                 count: int, rate: float, ids: Sequence[str], sent: dict[str, int]) -> float:
    """Produce `count` events at `rate`/s; `sent[event_id]` = its send time (ms). The load
    generator fills one record batch per partition per 5 ms slice (the worker's own sink): a
    per-record `producer.send` cost a third of a core at 13k events/s, taken from the worker
    on a 2-CPU machine. Returns the rate achieved."""
    from service.sink import BatchingKafkaSink

    sink = BatchingKafkaSink(producer)
    slice_s = 0.005
    per_slice = max(1, round(rate * slice_s))
    began = time.monotonic()
    for start in range(0, count, per_slice):
        target = began + start / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = int(time.time() * 1000)
        for index in range(start, min(count, start + per_slice)):
            sent[ids[index]] = stamp
            await sink.send(topic, keys[index], log[index])
        await sink.flush()  # one produce request per partition per slice
    return count / (time.monotonic() - began)


async def measure_hop(bootstrap: str, topic: str, log: Sequence[bytes],
                      keys: Sequence[bytes | None], rate: float,
                      seconds: float = 20.0) -> dict[str, Any]:
    """The broker's own share: the same paced events through one bare hop (producer ->
    broker -> a consumer with the worker's fetch settings), no worker. Latency = when the
    consumer has a record minus its send time, the part of event-to-action before the
    worker's decision."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    count = min(len(log), max(1, int(rate * seconds)))
    ids = [str(n) for n in range(count)]
    by_value: dict[bytes, deque[str]] = {}  # a value sent twice comes back in order (one key)
    for n, value in enumerate(log[:count]):
        by_value.setdefault(value, deque()).append(ids[n])
    sent: dict[str, int] = {}
    latencies: list[tuple[int, float]] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    try:
        await asyncio.wait_for(producer.start(), 20)
        await asyncio.wait_for(consumer.start(), 20)
        done = asyncio.Event()

        async def read() -> None:
            while not done.is_set() or len(latencies) < count:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time() * 1000
                for records in batch.values():
                    for record in records:
                        queue = by_value.get(record.value)
                        start = sent.get(queue.popleft()) if queue else None
                        if start is not None:
                            latencies.append((start, (now - start) / 1000))
                if done.is_set() and not batch:
                    return

        reader = asyncio.create_task(read())
        achieved = await _paced(producer, topic, log, keys, count, rate, ids, sent)
        done.set()
        await asyncio.wait_for(reader, 60)
    finally:
        await _stop_clients(producer, consumer)
    if not latencies:
        return {"ok": False, "note": "no records came back"}
    return _summary(latencies, rate, achieved, count)


def _summary(latencies: list[tuple[int, float]], rate: float, achieved: float,
             count: int) -> dict[str, Any]:
    first = min(start for start, _ in latencies)
    steady = [value for start, value in latencies if start - first >= _WARM_UP_MS]
    every = [value for _, value in latencies]
    return {
        "ok": True, "rate_target": round(rate), "rate_achieved": round(achieved),
        "events": count, "actions": len(steady), "warm_up_s": _WARM_UP_MS / 1000,
        "p50_ms": round(_percentile(steady or every, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(steady or every, 0.99) * 1000, 1),
        "max_ms": round(max(steady or every) * 1000, 1),
        "p99_ms_with_warm_up": round(_percentile(every, 0.99) * 1000, 1),
        "slowest_ms_by_second": _slowest_by_second(latencies, first),
    }


def _slowest_by_second(latencies: list[tuple[int, float]], first: int) -> list[float]:
    """The slowest action of each second of the run (where the tail comes from)."""
    worst: dict[int, float] = {}
    for start, value in latencies:
        second = (start - first) // 1000
        worst[second] = max(worst.get(second, 0.0), value)
    return [round(worst.get(s, 0.0) * 1000) for s in range(max(worst) + 1)]
