"""The profile cache's byte bound (service/stream/profile_cache.py): one budget for every partition
a process owns, least recently written profiles evicted first, and an evicted profile read
back from the store exactly as it was."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.inprocess import NullSink, as_messages, partitions_of
from bench.paths import RULES
from service.domain.profile import Profile
from service.stream.profile_cache import ProfileCache, charge
from service.tools.simulator import customer_key
from service.tools.workload import event_log


def test_trim_keeps_the_total_under_the_limit_across_partitions() -> None:
    """Three partitions filling one budget: a trim brings the total to at most the limit,
    takes from every partition in proportion, evicts the least recently written first
    (a key written again counts as new), and spares the keys it is told to keep."""
    cache = ProfileCache(limit_bytes=100 * charge(100))
    for n in range(60):
        for partition in (0, 1, 2):
            cache.put(partition, f"k{n}".encode(), None, 100)
    cache.put(0, b"k0", None, 100)  # rewritten: now the newest of partition 0
    assert cache.bytes == 180 * charge(100)
    evicted = cache.trim(lambda partition: {b"k1"} if partition == 1 else set())
    assert evicted > 0
    assert cache.bytes <= cache.limit
    assert cache.bytes == sum(cache.partition_bytes(p) for p in (0, 1, 2))
    assert len(cache) == cache.bytes // charge(100)
    for partition in (0, 1, 2):
        assert 25 <= len(cache.partition(partition)) <= 35  # proportional shares
    assert b"k0" in cache.partition(0) and b"k1" not in cache.partition(0)
    assert b"k1" in cache.partition(1)  # spared
    assert b"k2" not in cache.partition(2) and b"k59" in cache.partition(2)
    assert cache.trim(lambda partition: set()) == 0  # under the limit: nothing to do


def test_drop_and_clear_give_their_bytes_back() -> None:
    """A revoked partition's bytes leave the total; cleared partitions stay known, empty."""
    cache = ProfileCache(limit_bytes=10**9)
    cache.put(0, b"a", None, 10)
    cache.put(1, b"b", None, 20)
    cache.drop(0)
    assert cache.bytes == charge(20)
    cache.clear()
    assert cache.bytes == 0 and cache.partition(1) == {}


class _Recorder(NullSink):
    """The null sink, keeping every action and changelog record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[int]:
        if topic.endswith(".actions") or topic.endswith("-changelog"):
            self.records.append((topic, key, value))
        return await super().send(topic, key, value, partition=partition, headers=headers)


async def _no_recovery(stores: Any) -> None:
    return None


async def _run(limit: int, tmp: Path) -> tuple[list[Any], dict[bytes, bytes], list[int], int]:
    """The same events through a processor with `limit` cache bytes over 3 partitions: what
    it sent, what its stores hold, the cache's bytes after each batch, its profile count."""
    from service.domain.rules import load_rulebook
    from service.ops.settings import load_settings
    from service.stream.processor import Processor
    from service.stream.topics import TopicNames

    log = event_log(11, 4_000, 1_500, datetime(2026, 3, 2, tzinfo=UTC))
    keys = [customer_key(orjson.loads(raw)) for raw in log]
    settings = load_settings(rules=RULES, store="memory://", data_dir=tmp, partitions=3,
                             broker="kafka://127.0.0.1:1", topic_prefix="cache",
                             profile_cache_bytes=limit)
    topics = TopicNames.from_settings(settings)
    sink = _Recorder()
    processor = Processor(settings, topics, load_rulebook(settings.rules), sink,
                          recover=_no_recovery)
    messages = as_messages(log, keys, topics.events, partitions_of(keys, 3))
    sizes = []
    for start in range(0, len(messages), 200):
        await processor.process(messages[start:start + 200])
        sizes.append(processor.cache.bytes)
    stored = {}
    for partition in range(3):
        store = processor.store(partition)
        assert store is not None
        held_keys = list(store.keys())  # a store, not a dict: keys() is its API
        stored.update({key: store.get(key) or b"" for key in held_keys})
    held = len(processor.cache)
    await processor.close()
    return sink.records, stored, sizes, held


def test_a_bounded_cache_decides_exactly_as_an_unbounded_one(tmp_path: Path) -> None:
    """With a budget of a few hundred profiles over 3 partitions and 1,500 customers, the
    cache stays under its bytes after every batch, it really evicts, and the evicted
    profiles are read back from the store correctly: the actions, changelog records and
    stored profiles are byte for byte those of a cache that never evicts."""
    limit = 1024 * 1024
    small = asyncio.run(_run(limit, tmp_path / "small"))
    large = asyncio.run(_run(1 << 32, tmp_path / "large"))
    sent, stored, sizes, held = small
    assert max(sizes) <= limit
    assert held < len(stored) // 2  # most profiles were evicted at some point
    assert large[3] >= len(stored) - 1  # the unbounded one kept them all
    assert sent == large[0]
    assert stored == large[1]
    assert all(Profile.from_bytes(value).key == key.decode()
               for key, value in stored.items() if key.startswith(b"customer_id:"))
