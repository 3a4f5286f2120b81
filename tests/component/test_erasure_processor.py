"""Erasure through the worker's processor, on random orders: whatever the order of a customer's
events (three identifiers chained by two logins), the erasure, producer redeliveries and the
batches the identity records travel in, nothing of the customer remains afterwards in the
changelog as compaction leaves it (last value per key), in the stores, in the dead-letter
topic or in the log lines at DEBUG."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.erasure import key_digest
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.store import PartitionStore, tombstone_key
from service.stream.topics import TopicNames

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"
PERSON = {"customer_id": "cust-zz91", "loyalty_id": "loy-zz92", "anonymous_id": "anon-zz93"}


async def _no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


def _event(event_id: str, etype: str, minute: int, **identity: str) -> bytes:
    return orjson.dumps({"event_id": event_id,
                         "occurred_at": f"2026-03-02T09:{minute:02d}:00Z",
                         "channel": "web", "type": etype, "identity": identity,
                         "properties": {}})


_INPUTS = [
    _event("i1", "ping", 1, anonymous_id=PERSON["anonymous_id"]),
    _event("i2", "ping", 2, loyalty_id=PERSON["loyalty_id"]),
    _event("i3", "ping", 3, customer_id=PERSON["customer_id"]),
    _event("i4", "identified", 4, loyalty_id=PERSON["loyalty_id"],
           anonymous_id=PERSON["anonymous_id"]),
    _event("i5", "identified", 5, customer_id=PERSON["customer_id"],
           loyalty_id=PERSON["loyalty_id"]),
    _event("i6", "ping", 6, anonymous_id=PERSON["anonymous_id"]),
    _event("i7", "report", 7, customer_id=PERSON["customer_id"]),
]
_ERASURE = _event("bye", "erasure_requested", 20, customer_id=PERSON["customer_id"])


async def _run(order: list[int], redeliver: list[int], picks: list[int]) -> tuple[
        MemorySink, TopicNames, Processor]:
    settings_ = load_settings(rules=RULES, store="memory://", partitions=4,
                              broker="kafka://127.0.0.1:1", topic_prefix="erz")
    topics = TopicNames.from_settings(settings_)
    sink = MemorySink()
    processor = Processor(settings_, topics, load_rulebook(RULES), sink, recover=_no_recovery)
    offsets: dict[tuple[str, int], int] = {}
    looped = 0
    turns = iter(picks)

    async def deliver(topic: str, partition: int, key: bytes | None, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        slot = (topic, partition)
        offsets[slot] = offsets.get(slot, -1) + 1
        await processor.process([Message(topic, partition, offsets[slot], key, value,
                                         headers=headers)])

    async def loop_back(limit: int) -> None:
        nonlocal looped
        records = sink.on(topics.repartition)
        for record in records[looped:looped + limit]:  # the broker's order, per partition
            looped += 1
            await deliver(topics.repartition, record.partition or 0, record.key,
                          record.value or b"", tuple(record.headers or ()))

    log = [[*_INPUTS, _ERASURE][i] for i in order] + [_INPUTS[i] for i in redeliver]
    for value in log:
        partition = next(turns, 0) % 4  # the input partition: anything, forwarded if needed
        await deliver(topics.events, partition, None, value)
        await loop_back(next(turns, 0) % 3)
    for _ in range(200):
        if looped == len(sink.on(topics.repartition)):
            break
        await loop_back(1)
    return sink, topics, processor


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(_INPUTS) + 1)),
       redeliver=st.lists(st.integers(0, len(_INPUTS) - 1), max_size=3),
       picks=st.lists(st.integers(0, 11), min_size=30, max_size=30))
def test_nothing_of_an_erased_customer_remains_in_changelog_stores_deadletters_or_logs(
        order: list[int], redeliver: list[int], picks: list[int],
        caplog: pytest.LogCaptureFixture) -> None:
    """The changelog's last value under each of the customer's keys is a deletion, each key
    has a digest tombstone no earlier than the erasure, and no byte of any identifier is in a
    live changelog value, a store, a dead letter or a log line (DEBUG level)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        sink, topics, processor = asyncio.run(_run(order, redeliver, picks))
    last: dict[bytes, bytes | None] = {}
    for record in sink.on(topics.changelog):
        assert record.key is not None
        last[record.key] = record.value
    keys = [f"{name}:{value}" for name, value in PERSON.items()]
    for key in keys:
        assert last.get(key.encode()) is None
        stamp = last.get(tombstone_key(key_digest(key)))
        assert stamp is not None and int(stamp) >= 1_772_442_000_000 + 20 * 60_000
    live = b"".join(v for v in last.values() if v is not None)
    stored = b"".join(
        k + (store.get(k) or b"") for p in range(4)
        if (store := processor.store(p)) is not None for k in store.keys())  # noqa: SIM118
    dead = b"".join(r.value or b"" for r in sink.on(topics.deadletter))
    logs = caplog.text.encode()
    for value in PERSON.values():
        for where, blob in (("changelog", live), ("store", stored), ("dead letters", dead),
                            ("logs", logs)):
            assert value.encode() not in blob, f"{value} in the {where}"
