"""A ceiling on librdkafka (`confluent-kafka`, the client under quix-streams and bytewax).

The raw ceiling's work with the C client: consume a batch of up to 5,000 records (consumer
group, manual commits), orjson-decode each event, update a dict keyed by customer, produce one
small record per event to an output topic (librdkafka batches them), flush, commit
synchronously. Started by bench/run.py as ``python -m bench.librdkafka_ceiling`` with
BENCH_BROKER, BENCH_TOPIC, BENCH_GROUP, BENCH_OUT_TOPIC; stops on SIGTERM after committing
its last batch. `pip install '.[bench]'` brings confluent-kafka; without it the row says so.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from bench.ceiling_work import touch_profile


def run(bootstrap: str, topic: str, group: str, out_topic: str) -> None:
    """Consume -> decode -> update -> produce -> flush -> commit until SIGTERM/SIGINT."""
    from confluent_kafka import Consumer, Producer

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 8000,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1,
                         "batch.size": 256 * 1024})
    consumer.subscribe([topic])
    profiles: dict[str, dict[str, Any]] = {}
    try:
        while not stopping:
            records = consumer.consume(num_messages=5000, timeout=0.2)
            if not records:
                continue
            for record in records:
                if record.error() is not None:
                    continue
                encoded = touch_profile(profiles, record.value())
                while True:
                    try:
                        producer.produce(out_topic, encoded, record.key())
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.01)
                producer.poll(0)
            producer.flush(60)
            consumer.commit(asynchronous=False)
    finally:
        producer.flush(15)
        consumer.close()


def main() -> None:
    run(os.environ["BENCH_BROKER"], os.environ["BENCH_TOPIC"], os.environ["BENCH_GROUP"],
        os.environ["BENCH_OUT_TOPIC"])


if __name__ == "__main__":
    main()
