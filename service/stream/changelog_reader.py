"""Reading changelog partitions as raw record batches, for recovery.

aiokafka's consumer builds a `ConsumerRecord` for every record it returns (a generator step,
a dataclass, a tuple of headers, the deserializer checks): 4.7 us a record on the bench host,
where the record batches' own C reader gives a record's offset, key, value and headers for
0.8 us. Recovery of an uncompacted changelog reads millions of records and needs nothing else
of them, so it fetches here: Fetch requests through aiokafka's client (metadata, connections,
security, protocol versions are aiokafka's), the response's record batches iterated as they
are. The next Fetch is sent as soon as one is received, so the broker prepares it while the
caller applies the records (the consumer sends it only once its buffer is drained).

Semantics as the consumer's with `auto_offset_reset="earliest"`, `isolation_level=
"read_uncommitted"` and CRC checks: control batches are skipped, a position out of range
moves to the partition's earliest offset, and the high watermark is the Fetch response's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from service.stream.batch import RawRecord

__all__ = ["ChangelogReader"]

log = logging.getLogger(__name__)
_RETRY_S = 0.2  # after a retriable error (leader moving, connection lost)
_EARLIEST = -2  # ListOffsets' timestamp for a partition's first offset


class ChangelogReader:
    """Reads partitions of one topic from given offsets: `fetch()` returns, per partition
    with new records, an iterable of them in offset order; `highwater`, `position`, `pause`
    and `seek` as on aiokafka's consumer (by partition number)."""

    def __init__(self, bootstrap_servers: str, topic: str, offsets: Mapping[int, int], *,
                 max_wait_ms: int = 50, max_bytes: int = 64 * 1024 * 1024,
                 max_partition_bytes: int = 16 * 1024 * 1024,
                 security: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._positions = dict(offsets)
        self._highwater: dict[int, int] = {}
        self._paused: set[int] = set()
        self._max_wait_ms = max_wait_ms
        self._max_bytes = max_bytes
        self._max_partition_bytes = max_partition_bytes
        self._client: Any = None
        self._ahead: asyncio.Task[list[tuple[int, int, Any]]] | None = None

    async def start(self) -> None:
        from aiokafka.client import AIOKafkaClient

        self._client = AIOKafkaClient(bootstrap_servers=self._bootstrap,
                                      client_id="touchflow-recovery", **self._security)
        await self._client.bootstrap()
        self._client.add_topic(self.topic)
        await self._client.force_metadata_update()

    async def stop(self) -> None:
        await self._cancel_ahead()
        if self._client is not None:
            await self._client.close()

    def highwater(self, partition: int) -> int | None:
        """The partition's high watermark as of the last Fetch response (None before one)."""
        return self._highwater.get(partition)

    def position(self, partition: int) -> int:
        """The offset of the next record `fetch()` returns for the partition."""
        return self._positions[partition]

    def pause(self, partition: int) -> None:
        """Fetch the partition no more (a response in flight for it is dropped)."""
        self._paused.add(partition)

    def seek(self, partition: int, offset: int) -> None:
        self._positions[partition] = offset

    async def fetch(self) -> list[tuple[int, Iterable[RawRecord]]]:
        """The next records of every partition not paused (waiting at most the fetch wait
        for some); the next Fetch is on its way when this returns."""
        ahead, self._ahead = self._ahead, None
        responses = await (ahead if ahead is not None else self._request())
        out: list[tuple[int, Iterable[RawRecord]]] = []
        for partition, offset, records in responses:
            # (a seek or a pause since the request: what it brought is not wanted)
            if partition in self._paused or self._positions[partition] != offset:
                continue
            batches = _batches(records, self.topic, partition)
            if batches:
                self._positions[partition] = batches[-1].next_offset
                out.append((partition, _records(batches, offset)))
        if any(p not in self._paused for p in self._positions):
            self._ahead = asyncio.ensure_future(self._request())
        return out

    async def _cancel_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()
            await asyncio.wait([ahead])  # (its result or error is not wanted)
            if not ahead.cancelled():
                ahead.exception()

    async def _request(self) -> list[tuple[int, int, Any]]:
        """One Fetch per leader for the partitions not paused, at their positions:
        (partition, offset asked, record bytes) for each that answered without error."""
        from aiokafka.structs import TopicPartition

        cluster = self._client.cluster
        by_leader: dict[int, list[tuple[int, int, int]]] = {}
        for partition, offset in self._positions.items():
            if partition in self._paused:
                continue
            leader = cluster.leader_for_partition(TopicPartition(self.topic, partition))
            if leader is None or leader < 0:
                await self._client.force_metadata_update()
                await asyncio.sleep(_RETRY_S)
                return []
            by_leader.setdefault(leader, []).append(
                (partition, offset, self._max_partition_bytes))
        answers = await asyncio.gather(*(self._fetch_from(node, asked)
                                         for node, asked in by_leader.items()))
        return [item for answer in answers for item in answer]

    async def _fetch_from(self, node: int, asked: list[tuple[int, int, int]]
                          ) -> list[tuple[int, int, Any]]:
        import aiokafka.errors as errors
        from aiokafka.protocol.fetch import FetchRequest

        request = FetchRequest(self._max_wait_ms, 1, self._max_bytes, 0,
                               [(self.topic, asked)])
        try:
            response = await self._client.send(node, request)
        except errors.KafkaError as exc:
            if not exc.retriable:
                raise
            log.info("changelog fetch failed; retrying", extra={"error": type(exc).__name__})
            await self._client.force_metadata_update()
            await asyncio.sleep(_RETRY_S)
            return []
        offsets = {partition: offset for partition, offset, _ in asked}
        out: list[tuple[int, int, Any]] = []
        for _, partitions in response.topics:
            for partition, error_code, highwater, *data in partitions:
                error = errors.for_code(error_code)
                if error is errors.NoError:
                    self._highwater[partition] = highwater
                    out.append((partition, offsets[partition], data[-1]))
                elif error is errors.OffsetOutOfRangeError:
                    await self._to_earliest(node, partition, offsets[partition])
                elif error.retriable or error in (errors.NotLeaderForPartitionError,
                                                  errors.UnknownTopicOrPartitionError):
                    await self._client.force_metadata_update()
                else:
                    raise error(f"fetching {self.topic} partition {partition}")
        return out

    async def _to_earliest(self, node: int, partition: int, asked: int) -> None:
        """The position was out of range: move to the partition's first offset."""
        import aiokafka.errors as errors
        from aiokafka.protocol.offset import OffsetRequest

        response = await self._client.send(
            node, OffsetRequest(-1, 0, [(self.topic, [(partition, _EARLIEST)])]))
        for _, partitions in response.topics:
            for number, error_code, *info in partitions:
                if number != partition or errors.for_code(error_code) is not errors.NoError:
                    continue
                earliest = info[-1] if response.API_VERSION else (info[0] or [0])[0]
                if self._positions.get(partition) == asked:
                    log.info("changelog position out of range; reading from the earliest",
                             extra={"partition": partition, "offset": asked,
                                    "earliest": earliest})
                    self._positions[partition] = earliest


def _batches(records: bytes, topic: str, partition: int) -> list[Any]:
    """The complete record batches of a Fetch response's record bytes, CRC-checked (control
    batches too: they hold no changelog record, but they move the position)."""
    import aiokafka.errors as errors
    from aiokafka.record.memory_records import MemoryRecords

    out = []
    memory = MemoryRecords(records)
    while memory.has_next():
        batch = memory.next_batch()
        if batch is None:
            break
        if not batch.validate_crc():
            raise errors.CorruptRecordException(f"invalid CRC in {topic} partition {partition}")
        out.append(batch)
    return out


def _records(batches: Sequence[Any], first: int) -> Iterator[RawRecord]:
    """The batches' records from offset `first` on (a batch may begin before it), control
    batches skipped."""
    for batch in batches:
        if getattr(batch, "is_control_batch", False):
            continue
        for record in batch:
            if record.offset >= first:
                yield record
