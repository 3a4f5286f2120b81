"""Recovery and the generation stamps, on a real changelog topic of the embedded broker: a
record stamped with an older group generation than one already applied in its partition was
written by a worker that had lost the partition, after its new owner's records, and is
ignored; unstamped records (older versions, the Faust runtime) apply as before."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from service.ops.settings import Settings, load_settings
from service.stream.fencing import GENERATION_HEADER, GENERATION_KEY, stamp
from service.stream.recovery import recover_partitions
from service.stream.store import MemoryStore
from service.stream.topics import TopicNames, ensure_topics
from service.tools.embedded import EmbeddedBroker

Record = tuple[bytes, bytes | None, bytes | None]  # key, value, generation stamp


async def _changelog(broker: EmbeddedBroker) -> tuple[Settings, str]:
    settings = load_settings(broker=broker.url, app_id=f"gen{uuid.uuid4().hex[:8]}",
                             topic_prefix=f"g{uuid.uuid4().hex[:8]}", partitions=1,
                             store="memory://")
    topics = TopicNames.from_settings(settings)
    await ensure_topics(settings, topics)
    return settings, topics.changelog


async def _write(settings: Settings, changelog: str, records: list[Record]) -> list[int]:
    """Send the records to partition 0 in order; their offsets."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await asyncio.wait_for(producer.start(), 20)
    offsets = []
    try:
        for key, value, generation in records:
            headers = [("src", b"events:0:1")]
            if generation is not None:
                headers.append((GENERATION_HEADER, generation))
            sent = await producer.send(changelog, value, key=key, partition=0, headers=headers)
            offsets.append((await asyncio.wait_for(sent, 20)).offset)
    finally:
        await producer.stop()
    return offsets


def _profiles(store: MemoryStore) -> dict[bytes, Any]:
    return {key: store.get(key) for key in store.keys()}  # noqa: SIM118


async def test_records_of_an_older_generation_after_a_newer_one_are_ignored(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture) -> None:
    """Owner of generation 5 writes, the owner of generation 6 writes, then the stale worker
    of generation 5 lands two more records: they are ignored (and counted, and logged); the
    highest generation seen is kept in the store; an unstamped record still applies."""
    settings, changelog = await _changelog(broker)
    await _write(settings, changelog, [
        (b"c:1", b"a1", b"5"), (b"c:2", b"b1", b"5"),
        (b"c:1", b"a2", b"6"),
        (b"c:2", b"b-stale", b"5"), (b"c:1", b"a-stale", b"5"),
        (b"c:3", b"c1", None),
    ])
    store = MemoryStore()
    with caplog.at_level(logging.WARNING, logger="service.stream.recovery"):
        [result] = await recover_partitions(settings, changelog, {0: store})
    assert _profiles(store) == {b"c:1": b"a2", b"c:2": b"b1", b"c:3": b"c1"}
    assert (result.records, result.stale, store.checkpoint()) == (6, 2, 5)
    assert store.get(GENERATION_KEY) == b"6"
    warnings = [r for r in caplog.records if "older group generation" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].__dict__["records"] == 2


async def test_the_checkpoints_own_record_sets_the_floor_for_what_follows(
        broker: EmbeddedBroker) -> None:
    """A worker's store ends at its own last record (checkpoint), stamped 6, while the store
    only knows generation 5 from its last recovery; a stale record of generation 5 lands after
    it. Recovering from the checkpoint reads the checkpoint's record first for its generation
    (without applying or counting it) and ignores the stale one."""
    settings, changelog = await _changelog(broker)
    offsets = await _write(settings, changelog, [
        (b"c:1", b"old", b"5"), (b"c:1", b"own", b"6"), (b"c:1", b"stale", b"5"),
        (b"c:2", b"new", b"6")])
    store = MemoryStore()
    store.write({b"c:1": b"own", GENERATION_KEY: b"5"}, offsets[1])
    [result] = await recover_partitions(settings, changelog, {0: store})
    assert _profiles(store) == {b"c:1": b"own", b"c:2": b"new"}
    assert (result.start_offset, result.records, result.stale) == (offsets[2], 2, 1)
    assert store.get(GENERATION_KEY) == b"6"


async def test_unstamped_records_apply_in_order_as_before(broker: EmbeddedBroker) -> None:
    """A changelog written before the stamps (or by the Faust runtime): the last record of
    each key wins, a tombstone removes, nothing is ignored and no generation is kept."""
    settings, changelog = await _changelog(broker)
    await _write(settings, changelog, [
        (b"c:1", b"a1", None), (b"c:2", b"b1", None), (b"c:1", b"a2", None),
        (b"c:2", None, None)])
    store = MemoryStore()
    [result] = await recover_partitions(settings, changelog, {0: store})
    assert _profiles(store) == {b"c:1": b"a2"}
    assert result.stale == 0 and store.get(GENERATION_KEY) is None


async def test_after_the_group_is_recreated_new_records_are_not_taken_for_stale_ones(
        broker: EmbeddedBroker) -> None:
    """The consumer group was deleted (or expired) and its generations start again at 1: the
    new owner stamps the highest generation its recovery saw (50), not 1, so a later recovery
    applies its records instead of ignoring everything written since."""
    settings, changelog = await _changelog(broker)
    await _write(settings, changelog, [(b"c:1", b"before", b"50")])
    owner = MemoryStore()
    await recover_partitions(settings, changelog, {0: owner})
    await _write(settings, changelog, [(b"c:1", b"after", stamp(1, owner))])
    fresh = MemoryStore()
    [result] = await recover_partitions(settings, changelog, {0: fresh})
    assert _profiles(fresh) == {b"c:1": b"after"} and result.stale == 0
