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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["measure_latency"]

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
    from service.sink import BatchingKafkaSink

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

        # The load generator fills one record batch per partition per 5 ms slice (the worker's
        # own sink): a per-record `producer.send` cost a third of a core at 13k events/s,
        # taken from the worker on a 2-CPU machine.
        sink = BatchingKafkaSink(producer)
        reader = asyncio.create_task(read())
        slice_s = 0.005
        per_slice = max(1, round(rate * slice_s))
        began = time.monotonic()
        topic = f"{prefix}.events"
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
        achieved = count / (time.monotonic() - began)
        done.set()
        await asyncio.wait_for(reader, 60)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()
        stop_process(process, 20)
    if not latencies:
        return {"ok": False, "note": "no actions came back"}
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
