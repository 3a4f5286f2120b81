"""Capacity through the worker's processor: quota records on the repartition topic, looped
back in arbitrary interleavings with the events, duplicated (a producer retry, a redelivery
after a rebalance), over 4 partitions: never more calls than the limit, and what the
partitions' stored capacity states say was spent is what the actions topic carries."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.capacity import CapacityState
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.store import CAPACITY_KEY, PartitionStore
from service.stream.topics import TopicNames

RULES = Path(__file__).resolve().parents[1] / "data" / "capacity_rulebook.yaml"
LEADS = 24


async def _no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


def _lead(n: int) -> bytes:
    return orjson.dumps({"event_id": f"q-{n}", "occurred_at": f"2026-03-02T09:{n:02d}:00Z",
                         "channel": "web", "type": "lead_qualified",
                         "identity": {"customer_id": f"lead-{n}"}, "properties": {}})


async def _run(picks: list[int], duplicates: list[int]) -> tuple[MemorySink, TopicNames,
                                                                  Processor]:
    settings_ = load_settings(rules=RULES, store="memory://", partitions=4,
                              broker="kafka://127.0.0.1:1", topic_prefix="cap")
    topics = TopicNames.from_settings(settings_)
    sink = MemorySink()
    processor = Processor(settings_, topics, load_rulebook(RULES), sink, recover=_no_recovery)
    offsets: dict[tuple[str, int], int] = {}
    looped = 0
    turns = iter(picks)
    again = set(duplicates)

    async def deliver(topic: str, partition: int, key: bytes | None, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        slot = (topic, partition)
        offsets[slot] = offsets.get(slot, -1) + 1
        await processor.process([Message(topic, partition, offsets[slot], key, value,
                                         headers=headers)])

    async def loop_back(limit: int) -> None:
        nonlocal looped
        records = sink.on(topics.repartition)
        for record in records[looped:looped + limit]:
            looped += 1
            for _ in range(2 if looped in again else 1):  # delivered twice: a retry
                await deliver(topics.repartition, record.partition or 0, record.key,
                              record.value or b"", tuple(record.headers or ()))

    for n in range(LEADS):
        await deliver(topics.events, next(turns, 0) % 4, None, _lead(n))
        if n in again:
            await deliver(topics.events, next(turns, 1) % 4, None, _lead(n))
        await loop_back(next(turns, 0) % 4)
    for _ in range(500):
        if looped == len(sink.on(topics.repartition)):
            break
        await loop_back(1)
    return sink, topics, processor


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, 11), min_size=60, max_size=60),
       duplicates=st.lists(st.integers(0, 40), max_size=6))
def test_calls_never_exceed_the_limit_and_the_stored_state_accounts_for_them(
        picks: list[int], duplicates: list[int]) -> None:
    """At most 5 distinct calls (the limit) on the actions topic, every lead one action, and
    the spent counts in the partitions' stored capacity states add up to the calls sent; the
    owner's pool plus every holding plus what was spent is the limit."""
    sink, topics, processor = asyncio.run(_run(picks, duplicates))
    actions = [orjson.loads(r.value or b"") for r in sink.on(topics.actions)]
    calls = {a["action_id"] for a in actions if a["action"] == "call"}
    assert len(calls) <= 5
    assert {a["customer_id"] for a in actions} == {f"lead-{n}" for n in range(LEADS)}
    rulebook = processor.rulebook
    states = []
    for partition in range(4):
        store = processor.store(partition)
        raw = store.get(CAPACITY_KEY) if store is not None else None
        if raw is not None:
            states.append(CapacityState.from_bytes(raw, rulebook.capacity, partition, 4))
    spent = sum(s.spent("call_center", 0) for s in states)
    held = sum(s.held("call_center", 0) for s in states)
    pool = sum(s.pool_left("call_center", 0) or 0 for s in states)
    assert spent == len(calls)
    assert pool + held + spent == 5
