"""Capacity through the worker's processor: quota records on the repartition topic, looped
back in arbitrary interleavings with the events, duplicated (a producer retry, a redelivery
after a rebalance), over 4 partitions: never more calls than the limit, and what the
partitions' stored capacity states say was spent is what the actions topic carries."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import dumps
from schemas.event import decode_event
from service.domain.capacity import CapacityState, owner_key
from service.domain.partitioning import partition_for_key
from service.domain.rules import Rulebook, load_rulebook, parse_rulebook
from service.ops.settings import load_settings
from service.replay.replayer import Replayer
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.store import CAPACITY_KEY, PartitionStore
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import LoopBack, no_recovery
from tests.events import keyed

RULES = Path(__file__).resolve().parents[1] / "data" / "capacity_rulebook.yaml"
LEADS = 24


def _lead(n: int) -> bytes:
    return keyed(f"q-{n}", "lead_qualified", n, customer_id=f"lead-{n}")


async def _run(picks: list[int], duplicates: list[int], rulebook: Rulebook | None = None,
               settle: bool = False) -> tuple[MemorySink, TopicNames, Processor]:
    broker = LoopBack.over(RULES, "cap")
    if rulebook is not None:  # the same processor, another rulebook
        broker = LoopBack(Processor(broker.processor.settings, broker.topics, rulebook,
                                    broker.sink, recover=no_recovery), broker.sink, broker.topics)
    sink, topics, processor = broker.sink, broker.topics, broker.processor
    turns = iter(picks)
    again = set(duplicates)
    for n in range(LEADS):
        await broker.deliver(topics.events, next(turns, 0) % 4, None, _lead(n))
        if n in again:
            await broker.deliver(topics.events, next(turns, 1) % 4, None, _lead(n))
        await broker.loop_back(next(turns, 0) % 4, twice=again)  # twice: a retry
        if settle:
            await broker.drain()  # every record answered before the next lead
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


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, 11), min_size=60, max_size=60))
def test_below_the_limit_live_sends_what_replay_sends(picks: list[int]) -> None:
    """A limit of 100 calls that 24 leads do not reach, quota records answered before the
    next lead arrives (as replay delivers them): whatever partition each lead is produced
    to, the processor's actions topic carries, byte for byte, the actions replay sends over
    the same leads (the calls only leave later, after their batch's store write)."""
    rulebook = parse_rulebook(RULES.read_text().replace("limit: 5,", "limit: 100,"),
                              str(RULES))
    assert rulebook.capacity["call_center"].limit == 100
    sink, topics, _ = asyncio.run(_run(picks, [], rulebook, settle=True))
    replay = Replayer(rulebook, partitions=4)
    expected = [dumps(action) for n in range(LEADS)
                for action in replay.apply(decode_event(_lead(n))).actions]
    assert sorted(r.value or b"" for r in sink.on(topics.actions)) == sorted(expected)
    assert {orjson.loads(v)["action"] for v in expected} == {"call"}


def _customer_on(partition: int, taken: set[str]) -> str:
    """A lead id whose profile key falls on `partition` of 4."""
    for n in range(1000):
        lead = f"lead-{n}"
        if lead not in taken and partition_for_key(f"customer_id:{lead}".encode(), 4) == partition:
            taken.add(lead)
            return lead
    raise AssertionError("no lead id found")


def _message(topic: str, partition: int, offset: int, lead: str) -> Message:
    value = orjson.dumps({"event_id": f"q-{lead}", "occurred_at": "2026-03-02T09:00:00Z",
                          "channel": "web", "type": "lead_qualified",
                          "identity": {"customer_id": lead}, "properties": {}})
    return Message(topic, partition, offset, None, value)


async def _lost_batch(defer: bool) -> tuple[list[dict[str, Any]], int]:
    """Limit 5 over 4 partitions: a share of 1 each, 1 in the owner's pool. Partition A calls
    its first lead on its share and asks for more; a batch reads the grant, then the second
    lead (a call), and dies before its store write (abandoned). Redelivered, the second lead
    comes before the grant (the e-mail) and a third lead gets the call; every other partition
    calls one lead on its share. Returns the actions and what the stored states spent."""
    settings_ = load_settings(rules=RULES, store="memory://", partitions=4,
                              broker="kafka://127.0.0.1:1", topic_prefix="cap")
    topics = TopicNames.from_settings(settings_)
    sink = MemorySink()
    processor = Processor(settings_, topics, load_rulebook(RULES), sink, recover=no_recovery)
    if not defer:  # the behaviour before the outbox: every action leaves when decided
        processor._spends = frozenset()
    owner = partition_for_key(owner_key("call_center", 0), 4)
    holder = (owner + 1) % 4
    taken: set[str] = set()
    first, second, third = (_customer_on(holder, taken) for _ in range(3))
    await processor.process([_message(topics.events, holder, 0, first)])
    ask = sink.on(topics.repartition)[-1]
    await processor.process([Message(topics.repartition, owner, 0, ask.key, ask.value,
                                     headers=tuple(ask.headers or ()))])
    grant = sink.on(topics.repartition)[-1]
    assert orjson.loads(grant.value or b"")["n"] == 1
    granted = Message(topics.repartition, holder, 0, grant.key, grant.value,
                      headers=tuple(grant.headers or ()))
    lead = _message(topics.events, holder, 1, second)
    await processor.begin([granted, lead])  # the lost batch: its output left
    processor.abandon()
    await processor.process([lead, granted, _message(topics.events, holder, 2, third)])
    offsets = {holder: 3}
    for partition in range(4):
        if partition != holder:
            await processor.process([_message(topics.events, partition, offsets.get(
                partition, 0), _customer_on(partition, taken))])
    spent = 0
    for partition in range(4):
        store = processor.store(partition)
        raw = store.get(CAPACITY_KEY) if store is not None else None
        if raw is not None:
            spent += CapacityState.from_bytes(raw, processor.rulebook.capacity, partition,
                                              4).spent("call_center", 0)
    return [orjson.loads(r.value or b"") for r in sink.on(topics.actions)], spent


def test_a_call_decided_by_a_lost_batch_never_reaches_the_actions_topic() -> None:
    """The crash between a batch's sends and its store write, through the processor: the
    calls wait for their batch's store write, so the actions topic carries exactly the 5
    calls the stored states spent, and the lead whose call the lost batch decided gets only
    the e-mail. With calls sent as decided (the behaviour before), the same history puts 6
    distinct calls on the topic, 5 of them counted."""
    actions, spent = asyncio.run(_lost_batch(defer=True))
    calls = {a["action_id"] for a in actions if a["action"] == "call"}
    assert len(calls) == spent == 5
    assert len({a["customer_id"] for a in actions}) == len(actions) == 6  # one action each
    before, spent_before = asyncio.run(_lost_batch(defer=False))
    assert len({a["action_id"] for a in before if a["action"] == "call"}) == 6
    assert spent_before == 5


@pytest.mark.parametrize("how", ["assign", "batch"])
def test_an_unacknowledged_call_is_sent_again_by_the_next_owner(how: str) -> None:
    """A worker dies after a batch's store write, before its call was acknowledged: the
    stored capacity state still keeps the call, so the partition's next owner sends it again
    (the same action id: consumers drop repeats) on assignment, or when its first batch
    recovers the partition; it forgets the call once the broker acknowledged it. A call that
    first batch decides is not sent with the old one: it waits for its own store write (the
    batch is abandoned here: it never leaves)."""

    async def run() -> tuple[list[Any], list[Any], CapacityState]:
        settings_ = load_settings(rules=RULES, store="memory://", partitions=4,
                                  broker="kafka://127.0.0.1:1", topic_prefix="cap")
        topics = TopicNames.from_settings(settings_)
        sink = MemorySink()
        rulebook = parse_rulebook(RULES.read_text().replace("limit: 5,", "limit: 100,"),
                                  str(RULES))  # (a share of 6 calls per partition)
        first = Processor(settings_, topics, rulebook, sink, recover=no_recovery)
        taken: set[str] = set()
        lead = _customer_on(1, taken)
        await first.process([_message(topics.events, 1, 0, lead)])
        store = first.store(1)
        assert store is not None
        kept = CapacityState.from_bytes(store.get(CAPACITY_KEY) or b"",
                                        first.rulebook.capacity, 1, 4)
        assert list(kept.pending) == [a["action_id"] for a in (
            orjson.loads(r.value or b"") for r in sink.on(topics.actions))]

        async def recover(stores: Mapping[int, PartitionStore]) -> None:
            for partition, target in stores.items():  # the changelog, as the first left it
                source = first.store(partition)
                if source is not None:
                    target.write(dict(source.scan(b"")), -1)

        again = MemorySink()
        second = Processor(settings_, topics, rulebook, again, recover=recover)
        if how == "assign":
            await second.assign({1})
        else:
            await second.begin([_message(topics.events, 1, 1, _customer_on(1, taken))])
        await asyncio.sleep(0)  # (the acknowledgement's callback)
        state = second.capacity[1]
        if how == "batch":
            assert len(state.pending) == 1  # the new call, kept for its store write
            second.abandon()
        return ([orjson.loads(r.value or b"") for r in sink.on(topics.actions)],
                [orjson.loads(r.value or b"") for r in again.on(topics.actions)], state)

    sent, resent, state = asyncio.run(run())
    assert [a["action"] for a in sent] == ["call"]  # (the first owner's)
    assert resent == sent
    assert how == "batch" or state.pending == {}


class _LosingSink(MemorySink):
    """A sink whose next shipment is reported lost when `lose` is set (the records stay in
    `records`: they may or may not have reached the broker)."""

    lose = False

    async def ship(self) -> asyncio.Future[Any]:
        future = await super().ship()
        if self.lose:
            self.lose = False
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker gone"))
            return failed
        return future


def test_a_call_whose_send_failed_is_sent_again_by_the_recovery() -> None:
    """The shipment carrying a call (after its store write) fails: the next batch fails
    too, the recovery reloads the stored capacity state and sends the call again (same
    action id), and once that is acknowledged the state no longer keeps it."""

    async def run() -> tuple[list[Any], CapacityState]:
        settings_ = load_settings(rules=RULES, store="memory://", partitions=4,
                                  broker="kafka://127.0.0.1:1", topic_prefix="cap")
        topics = TopicNames.from_settings(settings_)
        sink = _LosingSink()
        processor = Processor(settings_, topics, load_rulebook(RULES), sink,
                              recover=no_recovery)
        taken: set[str] = set()
        batch = await processor.begin([_message(topics.events, 1, 0, _customer_on(1, taken))])
        await processor.send_changelog(batch)
        sink.lose = True  # the shipment of `complete`: the call
        await processor.complete(batch)
        await asyncio.sleep(0)
        later = [_message(topics.events, 2, 0, _customer_on(2, taken))]
        with pytest.raises(ConnectionError):
            await processor.process(later)
        await processor.process(later)  # the runtime's retry
        await asyncio.sleep(0)
        return [orjson.loads(r.value or b"") for r in sink.on(topics.actions)], \
            processor.capacity[1]

    actions, state = asyncio.run(run())
    calls = [a["action_id"] for a in actions if a["customer_id"] != actions[-1]["customer_id"]]
    assert len(calls) == 2 and len(set(calls)) == 1  # sent, then sent again
    assert state.pending == {}
