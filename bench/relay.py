"""The transport floor of a stream processor on this host: two broker hops, no work between.

A process that consumes the events topic with the worker's consumer settings (fetch wait
10 ms, batches of up to 1,000) and, for each event whose id is listed in `BENCH_IDS` (the
events the worker answers with an action), produces `{"trigger_event_id": id}` to
`BENCH_OUT_TOPIC` with the worker's producer settings (acks=all, linger 2 ms), handing each
batch's records to the producer before taking the next batch. It decides nothing, keeps no
state and writes no changelog or audit: what is left of the worker's path when its own work
is taken out. bench/latency.py times it like the worker (`measure_relay`).

Environment: BENCH_BROKER, BENCH_TOPIC, BENCH_OUT_TOPIC, BENCH_IDS (a file, one event id per
line). Prints `ready` on stdout once its partitions are assigned at their beginning.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

__all__ = ["relay"]


async def relay(bootstrap: str, topic: str, out_topic: str, wanted: frozenset[str]) -> None:
    """Forward the wanted events' ids until cancelled (SIGTERM ends the process)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from service.ops.settings import Settings

    # the worker's defaults: its batch wait (also its fetch wait) and its batch cap
    wait_ms: int = Settings.model_fields["batch_max_wait_ms"].default
    most: int = Settings.model_fields["batch_max_events"].default
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=wait_ms, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer.topics()  # (fetches the cluster's metadata)
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        print("ready", flush=True)
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        while True:
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=most)
            for records in batch.values():
                for record in records:
                    event_id = loads(record.value).get("event_id")
                    if event_id in wanted:
                        await send(out_topic, dumps({"trigger_event_id": event_id}),
                                   key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    env = os.environ
    with open(env["BENCH_IDS"], encoding="utf-8") as source:
        wanted = frozenset(line.strip() for line in source if line.strip())
    try:
        asyncio.run(relay(env["BENCH_BROKER"], env["BENCH_TOPIC"], env["BENCH_OUT_TOPIC"],
                          wanted))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
