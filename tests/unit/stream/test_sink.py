"""The worker's batching sink: records appended to one batch per topic partition, offsets are
the batch's base offset plus the record's index, keyed records land where murmur2 puts them,
and a failed batch makes `flush()` raise (so no changelog or commit follows lost output)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from service.stream.sink import BatchingKafkaSink


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1, 2} if topic != "unknown" else None


class _Client:
    cluster = _Cluster()


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Producer:
    """Records what reaches it; every partition's log starts at offset 100."""

    def __init__(self, fail: bool = False) -> None:
        self.client = _Client()
        self.fail = fail
        self.batches: list[tuple[str, int, int]] = []  # topic, partition, records
        self.single: list[tuple[str, bytes | None]] = []
        self.ends: dict[tuple[str, int], int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16 * 1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        count = batch.record_count()
        base = self.ends.get((topic, partition), 100)
        self.ends[(topic, partition)] = base + count
        self.batches.append((topic, partition, count))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(RuntimeError("broker said no"))
        else:
            future.set_result(_Meta(base))
        return future

    async def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                   partition: int | None = None, headers: Any = None) -> Any:
        self.single.append((topic, key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(_Meta(7))
        return future


async def test_offsets_are_base_plus_index_and_keys_follow_murmur2() -> None:
    """Three records to one partition get consecutive offsets after one batch; a keyed record
    goes to murmur2(key) % partitions; a topic without metadata takes the ordinary path."""
    producer = _Producer()
    sink = BatchingKafkaSink(producer)
    offsets = [await sink.send("changelog", b"k%d" % n, b"v", partition=1) for n in range(3)]
    keyed = await sink.send("actions", b"customer_id:c-1", b"a")
    fallback = await sink.send("unknown", b"x", b"y")
    await sink.flush()
    assert [await o for o in offsets] == [100, 101, 102]
    assert await keyed == 100
    assert await fallback == 7
    expected = (murmur2(b"customer_id:c-1") & 0x7FFFFFFF) % 3
    assert sorted(producer.batches) == sorted([("changelog", 1, 3), ("actions", expected, 1)])
    assert producer.single == [("unknown", b"x")]


async def test_full_batch_is_shipped_and_a_new_one_started() -> None:
    """Records beyond a batch's capacity go to a second batch; offsets stay consecutive."""
    producer = _Producer()
    sink = BatchingKafkaSink(producer)
    value = b"x" * 4000
    offsets = [await sink.send("t", None, value, partition=0) for _ in range(10)]
    await sink.flush()
    assert len(producer.batches) > 1
    assert [await o for o in offsets] == list(range(100, 110))


async def test_failed_batch_makes_flush_raise() -> None:
    """A batch the broker refused surfaces at flush()."""
    sink = BatchingKafkaSink(_Producer(fail=True))
    await sink.send("t", b"k", b"v", partition=0)
    with pytest.raises(RuntimeError, match="broker said no"):
        await sink.flush()


def test_builder_is_the_real_one() -> None:
    """The fake producer builds real aiokafka record batches (v2, headers supported)."""
    assert isinstance(_Producer().create_batch()._builder, DefaultRecordBatchBuilder)


async def test_faust_sink_ships_a_batch_that_sent_nothing() -> None:
    """The Faust runtime's sink finds Faust's producer at each use: a batch with no output
    (nine pings, no action) ships before the app's producer exists, and later records go to
    the producer the app started (CI once saw every such batch retried forever)."""
    from service.stream.faust_runtime import _FaustProducer

    class _FaustSide:
        started: _Producer | None = None

        def _ensure_producer(self) -> _Producer:
            assert self.started is not None, "looked up before the app started"
            return self.started

    class _App:
        producer = _FaustSide()

    sink = BatchingKafkaSink(_FaustProducer(_App()))
    await (await sink.ship())  # the processor's path: ship now, await before the commit
    _App.producer.started = _Producer()
    await sink.send("actions", b"k", b"v", partition=0)
    await sink.flush()
    assert _App.producer.started.batches == [("actions", 0, 1)]
