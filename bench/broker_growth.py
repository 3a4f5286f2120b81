"""What one fetch at the tail of a partition costs the embedded broker as the partition grows.

Why: in every latency run here, a bare hop through the broker slowed second by second at a
steady load (its slowest record per second rising several-fold over 20 s), while a producer
alone kept its pace. This measures the broker without any Touchflow code: a producer writes
record batches of `per_batch` 300-byte records, one request at a time, into a fresh
one-partition topic; after every `step` batches a consumer seeks to the last `per_batch`
records and fetches them. Two clocks: the time to produce each step's batches (from the first
send to the last acknowledgement), and the tail fetch (from the `getmany` call until the
records are in hand). On Tansu 0.6 (memory storage) the tail fetch grows about linearly with
the batches already in the partition, while producing stays flat.

    python -m bench.broker_growth [--steps 12] [--step 1000] [--per-batch 4]

Prints a table and writes JSON to bench/results/<date>-broker-growth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from bench.paths import ROOT

__all__ = ["measure_growth"]


async def measure_growth(bootstrap: str, steps: int, step: int,
                         per_batch: int) -> list[dict[str, float]]:
    """Per step: batches and records in the partition, ms to produce the step, tail fetch ms."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from bench.harness import create_topic

    topic = "growth"
    await create_topic(bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    payload = b"x" * 300
    rows: list[dict[str, float]] = []
    records = 0
    try:
        for number in range(1, steps + 1):
            began = time.perf_counter()
            for _ in range(step):
                sent = [await producer.send(topic, payload, partition=0)
                        for _ in range(per_batch)]
                await asyncio.gather(*sent)
            produce_ms = (time.perf_counter() - began) * 1000
            records += step * per_batch
            consumer.seek(partition, records - per_batch)
            began = time.perf_counter()
            got = 0
            while got < per_batch:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                got += sum(len(values) for values in batch.values())
            fetch_ms = (time.perf_counter() - began) * 1000
            rows.append({"batches": number * step, "records": records,
                         "produce_step_ms": round(produce_ms, 1),
                         "tail_fetch_ms": round(fetch_ms, 2)})
    finally:
        await producer.stop()
        await consumer.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_growth", description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--step", type=int, default=1000, help="batches per step")
    parser.add_argument("--per-batch", type=int, default=4, help="records per batch")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from service.tools.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:
        rows = asyncio.run(measure_growth(broker.bootstrap, args.steps, args.step,
                                          args.per_batch))
    print(f"{'batches':>8} {'records':>8} {'produce step ms':>16} {'tail fetch ms':>14}")
    for row in rows:
        print(f"{row['batches']:>8,} {row['records']:>8,} {row['produce_step_ms']:>16} "
              f"{row['tail_fetch_ms']:>14}")
    today = dt.datetime.now(dt.UTC)
    out = args.out or ROOT / "bench" / "results" / f"{today:%Y-%m-%d}-broker-growth.json"
    record: dict[str, Any] = {"run_at": today.isoformat(timespec="seconds"),
                              "command": "python -m bench.broker_growth", "steps": args.steps,
                              "step": args.step, "per_batch": args.per_batch, "rows": rows}
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
