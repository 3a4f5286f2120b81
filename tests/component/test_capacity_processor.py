"""Capacity through the worker's processor: quota records on the repartition topic, looped
back in arbitrary interleavings with the events, duplicated (a producer retry, a redelivery
after a rebalance), over 4 partitions: never more calls than the limit, and what the
partitions' stored capacity states say was spent is what the actions topic carries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.capacity import CapacityState
from service.stream.processor import Processor
from service.stream.sink import MemorySink
from service.stream.store import CAPACITY_KEY
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import LoopBack
from tests.events import keyed

RULES = Path(__file__).resolve().parents[1] / "data" / "capacity_rulebook.yaml"
LEADS = 24


def _lead(n: int) -> bytes:
    return keyed(f"q-{n}", "lead_qualified", n, customer_id=f"lead-{n}")


async def _run(picks: list[int], duplicates: list[int]) -> tuple[MemorySink, TopicNames,
                                                                  Processor]:
    broker = LoopBack.over(RULES, "cap")
    sink, topics, processor = broker.sink, broker.topics, broker.processor
    turns = iter(picks)
    again = set(duplicates)
    for n in range(LEADS):
        await broker.deliver(topics.events, next(turns, 0) % 4, None, _lead(n))
        if n in again:
            await broker.deliver(topics.events, next(turns, 1) % 4, None, _lead(n))
        await broker.loop_back(next(turns, 0) % 4, twice=again)  # twice: a retry
    await broker.drain(500)
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
