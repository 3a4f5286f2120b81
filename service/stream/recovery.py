"""Rebuild partitions' profile stores from the changelog, to the true end of the log.

The end is the high watermark carried by the Fetch responses themselves, not
ListOffsets(latest), which the embedded broker (Tansu) answers one batch short (why Faust's
table recovery is not used; docs/decisions.md, "The end of a partition is the Fetch high
watermark"); recovery reads until its position reaches it.

All partitions assigned together are recovered by one consumer, in parallel fetches.

Stale writers: a record stamped with a lower group generation than one already applied in its
partition was written by a worker that had lost the partition (paused past its session
timeout) after the new owner's records, and is ignored (service/stream/fencing.py). Reading starts
at the checkpoint's own record, whose generation is the floor for the records after it, and
the highest generation seen is kept in the store for the next recovery and for the writers.
What this does not guarantee, with compaction: docs/decisions.md, "Stale writers fenced".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service.ops.settings import Settings
from service.stream.fencing import GENERATION_KEY, generation_of
from service.stream.store import PartitionStore

__all__ = ["RecoveryResult", "recover_partitions"]

log = logging.getLogger(__name__)
# Constants, not settings: recovery reads a backlog, so a fetch rarely waits; records are
# written to the store every `_APPLY_EVERY` per partition, bounding what recovery holds.
_FETCH_WAIT_MS = 50
_APPLY_EVERY = 5_000


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What one partition's recovery read and how long it took."""

    partition: int
    start_offset: int
    end_offset: int
    records: int
    seconds: float
    stale: int = 0  # records ignored: written under an older generation than one applied


async def recover_partitions(
    settings: Settings,
    changelog: str,
    stores: Mapping[int, PartitionStore],
    *,
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float | None = None,
) -> list[RecoveryResult]:
    """Apply changelog records after each store's checkpoint, up to the high watermark.

    `on_progress(partition, remaining)` reports the records still to read; past `timeout_s`
    (default `TOUCHFLOW_RECOVERY_TIMEOUT_S`) it raises `TimeoutError`.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not stores:
        return []
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=_FETCH_WAIT_MS,
        fetch_max_bytes=settings.recovery_fetch_max_bytes,
        max_partition_fetch_bytes=settings.recovery_partition_fetch_max_bytes,
        **settings.kafka_security(),
    )
    await asyncio.wait_for(consumer.start(), settings.broker_timeout_s)
    tps = {TopicPartition(changelog, p): p for p in stores}
    start = {p: store.checkpoint() + 1 for p, store in stores.items()}
    last = {p: s - 1 for p, s in start.items()}
    records = dict.fromkeys(stores, 0)
    pending: dict[int, dict[bytes, bytes | None]] = {p: {} for p in stores}
    saved = {p: _saved_generation(store) for p, store in stores.items()}
    newest = dict(saved)  # per partition, the highest generation applied (-1: none)
    stale = dict.fromkeys(stores, 0)
    done: dict[int, float] = {}
    try:
        consumer.assign(list(tps))
        for tp, p in tps.items():
            consumer.seek(tp, max(start[p] - 1, 0))  # the checkpoint's record: its generation
        limit_s = timeout_s if timeout_s is not None else settings.recovery_timeout_s
        deadline = started + limit_s
        while len(done) < len(stores):
            if time.monotonic() > deadline:
                raise TimeoutError(f"recovery of {changelog} took over {limit_s:.0f}s")
            batch = await consumer.getmany(timeout_ms=_FETCH_WAIT_MS * 4, max_records=20_000)
            for tp, messages in batch.items():
                p = tps[tp]
                values = pending[p]
                first, highest, ignored = start[p], newest[p], 0
                for message in messages:
                    generation = generation_of(message.headers)
                    if message.offset < first:  # applied already: only its generation counts
                        if generation is not None and generation > highest:
                            highest = generation
                        continue
                    last[p] = message.offset
                    records[p] += 1
                    if generation is not None:
                        if generation < highest:
                            ignored += 1
                            continue
                        highest = generation
                    if message.key is not None:
                        values[message.key] = message.value
                newest[p], stale[p] = highest, stale[p] + ignored
                if len(values) >= _APPLY_EVERY:
                    saved[p] = _save_generation(values, newest[p], saved[p])
                    stores[p].write(values, last[p])
                    pending[p] = {}
            for tp, p in tps.items():
                if p in done:
                    continue
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                if start[p] > highwater:
                    # The store is ahead of the log: the changelog was recreated. Start over.
                    log.warning("local store is ahead of its changelog; rebuilding it",
                                extra={"partition": p, "checkpoint": start[p] - 1,
                                       "highwater": highwater})
                    stores[p].wipe()
                    start[p], last[p], pending[p] = 0, -1, {}
                    saved[p] = newest[p] = -1
                    consumer.seek(tp, 0)
                    continue
                position = await consumer.position(tp)
                if on_progress is not None:
                    on_progress(p, max(0, highwater - position))
                if position >= highwater:
                    done[p] = time.monotonic()
                    consumer.pause(tp)
        results = []
        for p in sorted(stores):
            saved[p] = _save_generation(pending[p], newest[p], saved[p])
            if pending[p] or last[p] >= start[p]:
                stores[p].write(pending[p], last[p])
            results.append(RecoveryResult(p, start[p], last[p] + 1, records[p],
                                          done[p] - started, stale[p]))
    finally:
        await consumer.stop()
    stale_by_partition = {r.partition: r.stale for r in results if r.stale}
    if stale_by_partition:
        log.warning("ignored changelog records written under an older group generation (a "
                    "worker that had lost the partition wrote them after its new owner)",
                    extra={"records": sum(stale_by_partition.values()),
                           "partitions": sorted(stale_by_partition)})
    log.info(
        "recovered partitions",
        extra={"partitions": [r.partition for r in results],
               "records": sum(r.records for r in results),
               "seconds": round(time.monotonic() - started, 3)},
    )
    return results


def _saved_generation(store: PartitionStore) -> int:
    """The highest generation an earlier recovery saw in the partition's changelog."""
    raw = store.get(GENERATION_KEY)
    return int(raw) if raw is not None else -1


def _save_generation(values: dict[bytes, bytes | None], newest: int, saved: int) -> int:
    """Add the highest generation seen to a store write when it rose; the value now saved."""
    if newest > saved:
        values[GENERATION_KEY] = str(newest).encode()
        return newest
    return saved
