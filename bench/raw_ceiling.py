"""Pipeline 3, the raw ceiling: plain aiokafka, no Faust, no changelog.

Consume a batch (consumer group, manual commits), orjson-decode each event, update a dict
keyed by customer, produce one small record per event to an output topic, flush, commit.
Started by bench/run.py as ``python -m bench.raw_ceiling`` with BENCH_BROKER, BENCH_TOPIC,
BENCH_GROUP, BENCH_OUT_TOPIC; stops on SIGTERM after committing its last batch. With
BENCH_BATCHED=1 the records go out as the worker sends its own: appended to one record batch
per output partition (the input record's partition) and shipped once per consumed batch
(service/stream/sink.py), instead of one `producer.send` per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.ceiling_work import touch_profile
from service.stream.sink import BatchingKafkaSink


async def run(bootstrap: str, topic: str, group: str, out_topic: str) -> None:
    """Consume -> decode -> update -> produce -> commit until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=8000, heartbeat_interval_ms=2000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                max_batch_size=256 * 1024)
    await asyncio.wait_for(producer.start(), 30)
    await asyncio.wait_for(consumer.start(), 30)
    profiles: dict[str, dict[str, Any]] = {}
    sink = BatchingKafkaSink(producer) if os.environ.get("BENCH_BATCHED") == "1" else None
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                continue
            async with asyncio.timeout(60):  # sends of one batch, flush and commit
                if sink is not None:
                    await _process_batched(batch, profiles, sink, out_topic)
                    await sink.flush()
                else:
                    await _process(batch, profiles, producer, out_topic)
                    await producer.flush()
                await consumer.commit()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 15)


async def _process(batch: dict[Any, list[Any]], profiles: dict[str, dict[str, Any]],
                   producer: AIOKafkaProducer, out_topic: str) -> None:
    """Decode, update the customer's dict, produce one record per event."""
    for records in batch.values():
        for record in records:
            await producer.send(out_topic, touch_profile(profiles, record.value), key=record.key)


async def _process_batched(batch: dict[Any, list[Any]], profiles: dict[str, dict[str, Any]],
                           sink: BatchingKafkaSink, out_topic: str) -> None:
    """As `_process`, each record appended to its output partition's batch."""
    for records in batch.values():
        for record in records:
            await sink.send(out_topic, record.key, touch_profile(profiles, record.value),
                            partition=record.partition)


def main() -> None:
    asyncio.run(run(os.environ["BENCH_BROKER"], os.environ["BENCH_TOPIC"],
                    os.environ["BENCH_GROUP"], os.environ["BENCH_OUT_TOPIC"]))


if __name__ == "__main__":
    main()
