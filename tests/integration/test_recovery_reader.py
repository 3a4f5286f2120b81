"""Recovery's own changelog reader (service/stream/changelog_reader.py) on the embedded
broker: raw record batches instead of aiokafka's consumer records, a Fetch always ahead, and
the consumer's semantics kept (positions, the high watermark, out of range -> earliest)."""

from __future__ import annotations

import asyncio
import uuid

from service.ops.settings import Settings, load_settings
from service.stream.changelog_reader import ChangelogReader
from service.stream.recovery import recover_partitions
from service.stream.store import MemoryStore, RocksStore
from service.stream.topics import TopicNames, ensure_topics
from service.tools.embedded import EmbeddedBroker


async def _changelog(broker: EmbeddedBroker, partitions: int, **extra: object
                     ) -> tuple[Settings, str]:
    settings = load_settings(broker=broker.url, app_id=f"rr{uuid.uuid4().hex[:8]}",
                             topic_prefix=f"r{uuid.uuid4().hex[:8]}", partitions=partitions,
                             **extra)
    topics = TopicNames.from_settings(settings)
    await ensure_topics(settings, topics)
    return settings, topics.changelog


async def _write(settings: Settings, changelog: str,
                 records: list[tuple[int, bytes, bytes | None]]) -> None:
    """Each (partition, key, value) in its own produce request (its own record batch)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await asyncio.wait_for(producer.start(), 20)
    try:
        for partition, key, value in records:
            sent = await producer.send(changelog, value, key=key, partition=partition,
                                       headers=[("src", b"events:0:1")])
            await asyncio.wait_for(sent, 20)
    finally:
        await producer.stop()


async def test_the_reader_hands_over_every_record_once_in_order_across_small_fetches(
        broker: EmbeddedBroker) -> None:
    """With fetches of a record batch or so, two partitions read from offsets 0 and 2 give
    each record from there once, in offset order, with key, value and headers; positions end
    at the high watermark; a seek takes effect at the next fetch (the one already in flight
    for the old position is dropped). (Kafka's answer to a position out of range, an error
    on which the reader moves to the earliest offset, cannot be met on Tansu.)"""
    settings, changelog = await _changelog(broker, 2)
    await _write(settings, changelog, [(n % 2, b"k%d" % n, b"v%d" % n) for n in range(12)]
                 + [(0, b"gone", None)])
    reader = ChangelogReader(settings.bootstrap_servers, changelog, {0: 0, 1: 2},
                             max_partition_bytes=100)
    await reader.start()
    got: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {0: [], 1: []}
    try:
        for _ in range(200):
            for partition, records in await reader.fetch():
                for record in records:
                    assert list(record.headers) == [("src", b"events:0:1")]
                    got[partition].append((record.offset, record.key, record.value))
            if all(reader.highwater(p) is not None and reader.position(p) >= 6 + (p == 0)
                   for p in (0, 1)):
                break
        assert got[0] == [(n, b"k%d" % (2 * n), b"v%d" % (2 * n)) for n in range(6)] + \
            [(6, b"gone", None)]
        assert got[1] == [(n, b"k%d" % (2 * n + 1), b"v%d" % (2 * n + 1)) for n in range(2, 6)]
        assert (reader.highwater(0), reader.highwater(1)) == (7, 6)
        reader.pause(0)
        reader.seek(1, 1000)  # (Tansu answers past the end with no records, not an error)
        assert await reader.fetch() == [] and reader.highwater(1) == 6
        reader.seek(1, 5)
        again = [(p, [r.offset for r in records]) for p, records in await reader.fetch()]
        assert again == [(1, [5])]
    finally:
        await reader.stop()


async def test_an_empty_store_recovered_in_one_byte_windows_is_exact(
        broker: EmbeddedBroker, tmp_path: object) -> None:
    """Recovery into empty RocksDB stores, a store write after every fetch (window of one
    byte, no lookup per key): each key holds its last value, a tombstone removes its key, and
    the profile count, recounted at the end, is exact."""
    settings, changelog = await _changelog(broker, 2, recovery_write_bytes=1)
    records = [(n % 2, b"c:%d" % (n % 5), b"v%d" % n) for n in range(20)]
    records += [(1, b"c:1", None), (1, b"c:3", None)]
    await _write(settings, changelog, records)
    from pathlib import Path

    stores = {p: RocksStore(Path(str(tmp_path)) / f"p{p}") for p in (0, 1)}
    try:
        results = await recover_partitions(settings, changelog, stores)
        expected: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
        for partition, key, value in records:
            if value is None:
                expected[partition].pop(key, None)
            else:
                expected[partition][key] = value
        for p, store in stores.items():
            assert {k: store.get(k) for k in store.keys()} == expected[p]  # noqa: SIM118
            assert store.count() == len(expected[p])
        assert [r.records for r in results] == [10, 12]
    finally:
        for store in stores.values():
            store.close()


async def test_a_store_ahead_of_its_changelog_is_rebuilt_from_it(
        broker: EmbeddedBroker) -> None:
    """A store whose checkpoint lies past the changelog's end (the topic was recreated) is
    wiped and rebuilt from the changelog's first record."""
    settings, changelog = await _changelog(broker, 1)
    await _write(settings, changelog, [(0, b"c:1", b"a"), (0, b"c:2", b"b")])
    store = MemoryStore()
    store.write({b"c:9": b"from another life"}, 500)
    [result] = await recover_partitions(settings, changelog, {0: store})
    assert {k: store.get(k) for k in store.keys()} == {b"c:1": b"a", b"c:2": b"b"}  # noqa: SIM118
    assert (result.start_offset, result.records, store.checkpoint()) == (0, 2, 1)


async def test_a_position_out_of_range_moves_to_the_partitions_first_offset(
        broker: EmbeddedBroker) -> None:
    """Kafka answers a fetch below the log's start with OFFSET_OUT_OF_RANGE, on which the
    reader asks ListOffsets for the earliest offset and reads from there (as the consumer
    with `auto_offset_reset="earliest"`). Tansu never answers so, so the step is driven
    directly: the position moves to 0 and the next fetch brings every record."""
    from aiokafka.structs import TopicPartition

    settings, changelog = await _changelog(broker, 1)
    await _write(settings, changelog, [(0, b"c:1", b"a"), (0, b"c:2", b"b")])
    reader = ChangelogReader(settings.bootstrap_servers, changelog, {0: 1})
    await reader.start()
    try:
        node = reader._client.cluster.leader_for_partition(TopicPartition(changelog, 0))
        await reader._to_earliest(node, 0, 1)
        assert reader.position(0) == 0
        [(partition, records)] = await reader.fetch()
        assert (partition, [r.offset for r in records]) == (0, [0, 1])
    finally:
        await reader.stop()
