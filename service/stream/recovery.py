"""Rebuild partitions' profile stores from the changelog, to the true end of the log.

The end is the high watermark carried by the Fetch responses themselves, not
ListOffsets(latest), which the embedded broker (Tansu) answers one batch short (why Faust's
table recovery is not used; docs/decisions.md, "The end of a partition is the Fetch high
watermark"); recovery reads until its position reaches it.

All partitions assigned together are recovered by one reader of raw record batches, a Fetch
always ahead (service/stream/changelog_reader.py: aiokafka's consumer records were 80 % of the
read); values are held per key up to `TOUCHFLOW_RECOVERY_WRITE_BYTES` before a store write.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from service.ops.settings import Settings
from service.stream.batch import RawRecord
from service.stream.changelog_reader import ChangelogReader
from service.stream.fencing import GENERATION_KEY, generation_of
from service.stream.store import PartitionStore

__all__ = ["RecoveryResult", "recover_partitions"]

log = logging.getLogger(__name__)
# A constant, not a setting: recovery reads a backlog, so a fetch rarely waits.
_FETCH_WAIT_MS = 50
_NOTHING: frozenset[bytes] = frozenset()  # "no key of this write is in the store yet"


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
    if not stores:
        return []
    recovery = _Recovery(settings, changelog, stores)
    try:
        await asyncio.wait_for(recovery.reader.start(), settings.broker_timeout_s)
        limit_s = timeout_s if timeout_s is not None else settings.recovery_timeout_s
        deadline = recovery.started + limit_s
        while len(recovery.done) < len(stores):
            if time.monotonic() > deadline:
                raise TimeoutError(f"recovery of {changelog} took over {limit_s:.0f}s")
            for p, messages in await recovery.reader.fetch():
                recovery.apply(p, messages)
            for p in stores:
                if p not in recovery.done:
                    recovery.check_end(p, on_progress)
        results = recovery.finish()
    finally:
        await recovery.reader.stop()
    _log_results(results, recovery.started)
    return results


class _Recovery:
    """One recovery of the partitions assigned together: where each stands, and its steps."""

    def __init__(self, settings: Settings, changelog: str,
                 stores: Mapping[int, PartitionStore]) -> None:
        self.started = time.monotonic()
        self.stores = stores
        self.start = {p: store.checkpoint() + 1 for p, store in stores.items()}
        # (each partition from the checkpoint's own record: its generation)
        self.reader = ChangelogReader(
            settings.bootstrap_servers, changelog,
            {p: max(s - 1, 0) for p, s in self.start.items()}, max_wait_ms=_FETCH_WAIT_MS,
            max_bytes=settings.recovery_fetch_max_bytes,
            max_partition_bytes=settings.recovery_partition_fetch_max_bytes,
            security=settings.kafka_security())
        self.last = {p: s - 1 for p, s in self.start.items()}
        self.records = dict.fromkeys(stores, 0)
        # Each partition's records not yet written, the last value per key: written once they
        # hold a share of `recovery_write_bytes` (a key written again within it, once).
        self.pending: dict[int, dict[bytes, bytes | None]] = {p: {} for p in stores}
        self.pending_bytes = dict.fromkeys(stores, 0)
        self.window = max(1, settings.recovery_write_bytes // len(stores))
        # An empty store takes the writes without a lookup per key (to keep its count), and
        # is counted once at the end: a lookup per record was a third of the store's time.
        self.bulk = {p for p, store in stores.items() if store.count() == 0}
        self.saved = {p: _saved_generation(store) for p, store in stores.items()}
        self.newest = dict(self.saved)  # per partition, the highest generation applied
        self.stale = dict.fromkeys(stores, 0)
        self.done: dict[int, float] = {}

    def apply(self, p: int, messages: Iterable[RawRecord]) -> None:
        """Hold the last value per key of one fetched run of a partition's records, skipping
        those before the checkpoint and those of a stale generation; write when enough."""
        values = self.pending[p]
        first, highest, ignored = self.start[p], self.newest[p], 0
        size, count, offset = 0, 0, self.last[p]
        for message in messages:
            offset = message.offset
            headers = message.headers
            generation = generation_of(headers) if headers else None
            if offset < first:  # applied already: only its generation counts
                if generation is not None and generation > highest:
                    highest = generation
                continue
            count += 1
            if generation is not None:
                if generation < highest:
                    ignored += 1
                    continue
                highest = generation
            key = message.key
            if key is not None:
                value = values[key] = message.value
                if value is not None:
                    size += len(value)
        if offset >= first:
            self.last[p] = offset
        self.records[p] += count
        self.newest[p], self.stale[p] = highest, self.stale[p] + ignored
        self.pending_bytes[p] += size
        if self.pending_bytes[p] >= self.window:
            self.write(p)

    def write(self, p: int) -> None:
        """Write a partition's held values (and its generation, when it rose) to its store."""
        self.saved[p] = _save_generation(self.pending[p], self.newest[p], self.saved[p])
        self.stores[p].write(self.pending[p], self.last[p], _NOTHING if p in self.bulk else None)
        self.pending[p], self.pending_bytes[p] = {}, 0

    def check_end(self, p: int, on_progress: Callable[[int, int], None] | None) -> None:
        """Report a partition's progress; mark it done at the high watermark, or start it
        over when its store is ahead of the log (the changelog was recreated)."""
        highwater = self.reader.highwater(p)
        if highwater is None:
            return
        if self.start[p] > highwater:
            log.warning("local store is ahead of its changelog; rebuilding it",
                        extra={"partition": p, "checkpoint": self.start[p] - 1,
                               "highwater": highwater})
            self.stores[p].wipe()
            self.start[p], self.last[p], self.pending[p], self.pending_bytes[p] = 0, -1, {}, 0
            self.saved[p] = self.newest[p] = -1
            self.bulk.add(p)
            self.reader.seek(p, 0)
            return
        position = self.reader.position(p)
        if on_progress is not None:
            on_progress(p, max(0, highwater - position))
        if position >= highwater:
            self.done[p] = time.monotonic()
            self.reader.pause(p)

    def finish(self) -> list[RecoveryResult]:
        """Write what is still held, count the bulk-loaded stores; one result per partition."""
        results = []
        for p in sorted(self.stores):
            if self.pending[p] or self.last[p] >= self.start[p] or self.newest[p] > self.saved[p]:
                self.write(p)
            if p in self.bulk:
                self.stores[p].recount()
            results.append(RecoveryResult(p, self.start[p], self.last[p] + 1, self.records[p],
                                          self.done[p] - self.started, self.stale[p]))
        return results


def _log_results(results: Sequence[RecoveryResult], started: float) -> None:
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
