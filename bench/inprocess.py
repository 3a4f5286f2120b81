"""The worker's batch processor in-process, with no broker: the streaming shell's own cost.

`run_processor` feeds the bench workload, as the consumer would hand it over (records of the
events topic on the partition their key hashes to, in batches of `batch` records), through
`service.stream.processor.Processor` with the chosen store, into a sink that acknowledges at
once and keeps nothing. Against replay (the same decode and `decide()` without the shell) it shows
what routing, caching, profile encoding, changelog records and store writes add per event,
free of the broker's share and of its noise; bench/instructions.py counts it in machine
instructions.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.paths import RULES

__all__ = ["PARTITIONS", "NullSink", "as_messages", "partitions_of", "run_processor"]

PARTITIONS = 4  # as the bench's topics have by default


class NullSink:
    """A sink whose every record is acknowledged as it is sent and then dropped; it counts
    the records by topic (the offsets it hands out count per topic and partition)."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self._offsets: dict[tuple[str, int | None], int] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[int]:
        self.sent[topic] = self.sent.get(topic, 0) + 1
        slot = (topic, partition)
        offset = self._offsets.get(slot, 0)
        self._offsets[slot] = offset + 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(offset)
        return future

    async def ship(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        return None

    def discard(self) -> None:
        return None


def partitions_of(keys: Sequence[bytes | None], partitions: int) -> list[int]:
    """The partition each key's record lands on (murmur2, as the producer puts it)."""
    from service.domain.partitioning import partition_for_key

    return [partition_for_key(key, partitions) if key is not None else 0 for key in keys]


def as_messages(log: Sequence[bytes], keys: Sequence[bytes | None], topic: str,
                placed: Sequence[int]) -> list[Any]:
    """The log as consumed records, each on its partition in `placed` (`partitions_of`),
    offsets counting per partition."""
    from service.stream.processor import Message

    offsets = [0] * (max(placed, default=0) + 1)
    messages = []
    for raw, key, partition in zip(log, keys, placed, strict=True):
        messages.append(Message(topic, partition, offsets[partition], key, raw, 0))
        offsets[partition] += 1
    return messages


async def _no_recovery(stores: Mapping[int, Any]) -> None:
    return None


async def _run(log: Sequence[bytes], keys: Sequence[bytes | None], store: str, batch: int,
               partitions: int, placed: Sequence[int] | None,
               data_dir: Path) -> tuple[float, dict[str, int]]:
    from service.domain.rules import load_rulebook
    from service.ops.gcpolicy import GcPolicy
    from service.ops.settings import load_settings
    from service.stream.processor import Processor
    from service.stream.topics import TopicNames

    settings = load_settings(rules=RULES, store=store, data_dir=data_dir,
                             partitions=partitions, broker="kafka://127.0.0.1:1",
                             topic_prefix="inprocess")
    topics = TopicNames.from_settings(settings)
    sink = NullSink()
    processor = Processor(settings, topics, load_rulebook(settings.rules), sink,
                          recover=_no_recovery)
    if placed is None:
        placed = partitions_of(keys, partitions)
    messages = as_messages(log, keys, topics.events, placed)
    batches = [messages[i:i + batch] for i in range(0, len(messages), batch)]
    del messages
    collector = GcPolicy()  # the worker's regime (service/stream/runtime.py)
    gc.collect()
    try:
        started = time.perf_counter()
        for records in batches:
            await processor.process(records)
            collector.after_batch()
        seconds = time.perf_counter() - started
    finally:
        await processor.close()
        collector.close()
    return seconds, sink.sent


def run_processor(log: Sequence[bytes], keys: Sequence[bytes | None], *,
                  store: str = "rocksdb://", batch: int = 1000, partitions: int = PARTITIONS,
                  placed: Sequence[int] | None = None) -> tuple[float, dict[str, int]]:
    """Seconds to process `log` in batches of `batch` records, and the records sent by topic.
    `placed`: each record's partition, if already known (`partitions_of`)."""
    with tempfile.TemporaryDirectory(prefix="touchflow-inprocess-") as tmp:
        return asyncio.run(_run(log, keys, store, batch, partitions, placed, Path(tmp)))
