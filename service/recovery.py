"""Rebuild a partition's profile store from its changelog, to the true end of the log.

Why not Faust's table recovery: it reads up to the end offset from ListOffsets(latest), which
on some brokers (Tansu, the embedded one) is the last record batch's base offset + 1 rather
than the high watermark, so a restart silently lost the newest changelog records. Here the
end is the high watermark carried by the Fetch responses themselves, which every Kafka-
compatible broker fills in correctly, and recovery reads until its position reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.settings import Settings
from service.store import PartitionStore

__all__ = ["RecoveryResult", "recover_partition"]

log = logging.getLogger(__name__)
_FETCH_TIMEOUT_MS = 500
_APPLY_EVERY = 5_000


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What one partition's recovery read and how long it took."""

    partition: int
    start_offset: int
    end_offset: int
    records: int
    seconds: float


async def recover_partition(
    settings: Settings,
    changelog: str,
    partition: int,
    store: PartitionStore,
    *,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float = 600.0,
) -> RecoveryResult:
    """Apply changelog records after the store's checkpoint, up to the high watermark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    started = time.monotonic()
    tp = TopicPartition(changelog, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **settings.kafka_security(),
    )
    await asyncio.wait_for(consumer.start(), 30)
    start = store.checkpoint() + 1
    records = 0
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        pending: dict[bytes, bytes | None] = {}
        last_offset = start - 1
        deadline = started + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recovery of {changelog}[{partition}] took over {timeout_s}s")
            batch = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS, max_records=10_000)
            for message in batch.get(tp, ()):
                if message.key is not None:
                    pending[message.key] = message.value
                last_offset = message.offset
                records += 1
            if len(pending) >= _APPLY_EVERY:
                store.write(pending, last_offset)
                pending = {}
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if on_progress is not None and highwater is not None:
                on_progress(max(0, highwater - position))
            if highwater is not None and position >= highwater:
                break
        if pending or last_offset >= start:
            store.write(pending, last_offset)
        end = await consumer.position(tp)
    finally:
        await consumer.stop()
    result = RecoveryResult(partition, start, end, records, time.monotonic() - started)
    log.info(
        "recovered partition",
        extra={"partition": partition, "records": records, "from_offset": start,
               "to_offset": end, "seconds": round(result.seconds, 3)},
    )
    return result
