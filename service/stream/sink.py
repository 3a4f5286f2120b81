"""Where the processor's records go: the `Sink` protocol, the sinks that ship with
Touchflow, and how a worker is given one.

The processor addresses each record to a stream by name (`TopicNames`: actions and their
per-channel copies, audit records, dead letters, erasure notices, forwards and control
records on the repartition topic, the signal feed, the changelog), with a key, a value
(None: a deletion, changelog only), and for the partitioned streams (changelog, forwards)
the profile partition. What it needs of a sink, and nothing Kafka-specific beyond that:

* `send` takes a record and returns an awaitable of its position in its stream partition;
  the processor awaits it only for changelog records (the store's checkpoint, which recovery
  reads the changelog from) and only once they are durable;
* `ship()` hands over everything sent so far without waiting and returns a future that
  resolves once all of it is durable, and fails if any of it was lost: the processor writes
  a batch's changelog only after its output's shipment resolved, the store only after the
  changelog's, and only then are the source offsets committed (service/stream/processor.py);
* `discard()` forgets what was sent and not shipped (the batch is processed again).

The sinks here also have `flush()`, `await (await ship())`, for callers outside the pipeline
(tests, benchmarks).

Sinks: `BatchingKafkaSink` (the worker's default, on the runtime's Kafka producer),
`MemorySink` (in process: tests, benchmarks), `JsonLinesSink` (files:
service/stream/file_sink.py) and `RoutedSink` (chosen streams to another sink). A worker
builds its sink with a `SinkFactory` it is given (`run_worker(settings, sink_factory=...)`,
README "Adding an output"); the default is `kafka_sink`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.domain.partitioning import partition_for_key
from service.ops.settings import Settings

__all__ = ["BatchingKafkaSink", "MemorySink", "RoutedSink", "Sent", "SentOffset", "Shipment",
           "Sink", "SinkFactory", "kafka_sink"]

Headers = Sequence[tuple[str, bytes]]
# Resolves once every record of a shipment is durable; fails if one was lost.
Shipment = asyncio.Future[None]
# aiokafka's producer, or Faust's looked up at each use (service/stream/faust_runtime.py):
# neither has type stubs, so this is a boundary.
Producer = Any


class Sink(Protocol):
    """Takes the processor's records and says when they are durable (see the module)."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        """Take one record; the awaitable gives its position once it is durable."""

    async def ship(self) -> Shipment:
        """Hand over every record sent so far; the future resolves once they are durable."""

    def discard(self) -> None:
        """Drop what was sent and not yet shipped, and stop tracking what was shipped (the
        batches they belong to were abandoned and will be processed again)."""


# Builds the worker's sink once the runtime's producer exists (a sink that writes nothing to
# Kafka may ignore it; the changelog, though, must reach the changelog topic: recovery reads
# it there).
SinkFactory = Callable[[Producer, Settings], Sink]


def kafka_sink(producer: Producer, settings: Settings) -> Sink:
    """The default `SinkFactory`: every record to the runtime's Kafka producer, batched."""
    return BatchingKafkaSink(producer, flush_timeout_s=settings.ack_timeout_s)


def _settled() -> Shipment:
    future: Shipment = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _all_of(futures: Sequence[asyncio.Future[Any]]) -> Shipment:
    """One future for many (of any result); its failure is marked retrieved when nobody
    awaits it (a batch abandoned after an earlier failure), so asyncio does not log it a
    second time."""
    if not futures:
        return _settled()
    combined: Shipment = asyncio.get_running_loop().create_future()

    def settle(gathered: asyncio.Future[list[Any]]) -> None:
        if combined.done():
            return
        if gathered.cancelled():
            combined.cancel()
        elif (error := gathered.exception()) is not None:
            combined.set_exception(error)
        else:
            combined.set_result(None)

    asyncio.gather(*futures).add_done_callback(settle)
    combined.add_done_callback(_retrieve)
    return combined


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure retrieved (asyncio logs one nobody looked at)."""
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class Sent:
    """One record captured by `MemorySink`."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Headers | None
    offset: int


@dataclass
class MemorySink:
    """Keeps every record in `records`; offsets count per (topic, partition)."""

    records: list[Sent] = field(default_factory=list)
    _offsets: dict[tuple[str, int | None], int] = field(default_factory=dict)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        slot = (topic, partition)
        offset = self._offsets.get(slot, 0)
        self._offsets[slot] = offset + 1
        self.records.append(Sent(topic, key, value, partition, headers, offset))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(offset)
        return future

    async def ship(self) -> Shipment:
        return _settled()

    async def flush(self) -> None:
        await (await self.ship())

    def discard(self) -> None:
        """Records are "delivered" as they are sent: nothing to drop."""

    def on(self, topic: str) -> list[Sent]:
        """Records sent to one topic, in send order."""
        return [r for r in self.records if r.topic == topic]


class SentOffset:
    """Awaitable offset of a sent record; unlike a coroutine, fine to leave un-awaited."""

    __slots__ = ("_fut",)

    def __init__(self, fut: Awaitable[Any]) -> None:
        self._fut = fut

    def __await__(self) -> Generator[Any, None, int]:
        metadata = yield from self._fut.__await__()
        return int(metadata.offset)


class _Open:
    """A record batch being filled for one topic partition, and once shipped its future."""

    __slots__ = ("batch", "future")

    def __init__(self, batch: Any) -> None:  # aiokafka's BatchBuilder (no type stubs)
        self.batch = batch
        self.future: asyncio.Future[Any] | None = None


class BatchingKafkaSink:
    """A sink that fills one aiokafka `BatchBuilder` per topic partition and hands whole
    batches to the producer at `flush()`: one future per batch instead of one coroutine,
    partition lookup and future per record (docs/decisions.md, "Batches to the producer").
    Keyed records are partitioned like every standard producer does (murmur2 of the
    key modulo the partition count); while a topic's metadata is unknown its records take the
    producer's ordinary path, which fetches it.

    `flush()` ships every open batch and then waits for each batch's delivery, raising if any
    failed, so the processor never writes its changelog or commits offsets over lost output.
    """

    def __init__(self, producer: Producer, *, flush_timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._flush_timeout_s = flush_timeout_s
        self._open: dict[tuple[str, int], _Open] = {}
        self._shipped: list[asyncio.Future[Any]] = []
        self._partitions: dict[str, int] = {}

    def _partition_of(self, topic: str, key: bytes | None) -> int | None:
        count = self._partitions.get(topic)
        if count is None:
            known = self._producer.client.cluster.partitions_for_topic(topic)
            if not known:
                return None
            count = self._partitions[topic] = len(known)
        if key is None:
            return None
        return partition_for_key(key, count)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        if partition is None:
            partition = self._partition_of(topic, key)
            if partition is None:  # metadata not known yet, or no key: the ordinary path
                fut = await self._producer.send(topic, key=key, value=value,
                                                headers=list(headers) if headers else None)
                self._shipped.append(fut)
                return SentOffset(fut)
        slot = (topic, partition)
        entry = self._open.get(slot)
        if entry is None:
            entry = self._open[slot] = _Open(self._producer.create_batch())
        header_list = list(headers) if headers else []
        meta = entry.batch.append(timestamp=None, key=key, value=value, headers=header_list)
        if meta is None:  # the batch is full: ship it, start another
            await self._ship(slot, entry)
            entry = self._open[slot] = _Open(self._producer.create_batch())
            meta = entry.batch.append(timestamp=None, key=key, value=value,
                                      headers=header_list)
            if meta is None:  # a record larger than a batch: the ordinary path
                del self._open[slot]
                fut = await self._producer.send(topic, key=key, value=value,
                                                partition=partition,
                                                headers=header_list or None)
                self._shipped.append(fut)
                return SentOffset(fut)
        return _BatchOffset(entry, int(meta.offset))

    async def _ship(self, slot: tuple[str, int], entry: _Open) -> None:
        entry.batch.close()
        future = await self._producer.send_batch(entry.batch, slot[0], partition=slot[1])
        entry.future = future
        self._shipped.append(future)

    async def ship(self) -> Shipment:
        opened, self._open = self._open, {}
        try:
            for slot, entry in opened.items():
                await self._ship(slot, entry)
        except BaseException:  # no later shipment inherits this one's futures
            self.discard()
            raise
        shipped, self._shipped = self._shipped, []
        return _all_of(shipped)

    async def flush(self) -> None:
        await asyncio.wait_for(await self.ship(), self._flush_timeout_s)

    def discard(self) -> None:
        self._open = {}
        shipped, self._shipped = self._shipped, []
        for future in shipped:
            future.add_done_callback(_retrieve)


class _BatchOffset:
    """Offset of a record in a shipped batch: the batch's base offset plus its index."""

    __slots__ = ("_entry", "_index")

    def __init__(self, entry: _Open, index: int) -> None:
        self._entry = entry
        self._index = index

    def __await__(self) -> Generator[Any, None, int]:
        future = self._entry.future
        if future is None:
            raise RuntimeError("offset awaited before flush()")
        metadata = yield from future.__await__()
        return int(metadata.offset) + self._index


class RoutedSink:
    """Records of the streams named in `routes` go to their sink, every other to `default`:
    e.g. the actions to a file or a service while the changelog and the forwards stay on
    Kafka. A shipment resolves once every member's does, and fails if one fails."""

    def __init__(self, default: Sink, routes: Mapping[str, Sink]) -> None:
        self._default = default
        self._routes = dict(routes)
        members: dict[int, Sink] = {id(default): default}
        for sink in self._routes.values():
            members.setdefault(id(sink), sink)
        self._members = list(members.values())

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        sink = self._routes.get(topic, self._default)
        return await sink.send(topic, key, value, partition=partition, headers=headers)

    async def ship(self) -> Shipment:
        shipments = []
        try:
            for sink in self._members:
                shipments.append(await sink.ship())
        except BaseException:  # no later shipment inherits this one's records
            self.discard()
            raise
        return _all_of(shipments)

    async def flush(self) -> None:
        await (await self.ship())

    def discard(self) -> None:
        for sink in self._members:
            sink.discard()
