"""Erasure through the worker's processor, on random orders: whatever the order of a customer's
events (three identifiers chained by two logins), the erasure, producer redeliveries and the
batches the identity records travel in, nothing of the customer remains afterwards in the
changelog as compaction leaves it (last value per key), in the stores, in the dead-letter
topic or in the log lines at DEBUG."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.erasure import key_digest
from service.stream.processor import Processor
from service.stream.sink import MemorySink
from service.stream.store import tombstone_key
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import LoopBack
from tests.events import chained_identities, keyed

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"
PERSON = {"customer_id": "cust-zz91", "loyalty_id": "loy-zz92", "anonymous_id": "anon-zz93"}


_STORY, _BYE = chained_identities(PERSON)
_INPUTS = [keyed(eid, etype, minute, **who) for eid, etype, minute, who in _STORY]
_ERASURE = keyed(*_BYE[:3], **_BYE[3])


async def _run(order: list[int], redeliver: list[int], picks: list[int]) -> tuple[
        MemorySink, TopicNames, Processor]:
    broker = LoopBack.over(RULES, "erz")
    sink, topics, processor = broker.sink, broker.topics, broker.processor
    turns = iter(picks)
    log = [[*_INPUTS, _ERASURE][i] for i in order] + [_INPUTS[i] for i in redeliver]
    for value in log:
        partition = next(turns, 0) % 4  # the input partition: anything, forwarded if needed
        await broker.deliver(topics.events, partition, None, value)
        await broker.loop_back(next(turns, 0) % 3)  # the broker's order, per partition
    await broker.drain(200)
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
