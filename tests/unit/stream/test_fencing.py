"""The group lease over a fake aiokafka coordinator, and the generation stamps' helpers
(service/stream/fencing.py)."""

from __future__ import annotations

import logging
from collections import namedtuple
from typing import Any

import pytest

from service.stream.batch import Message
from service.stream.fencing import (
    GENERATION_HEADER,
    GENERATION_KEY,
    AssignmentLost,
    GroupLease,
    generation_of,
    rewind,
    stamp,
)
from service.stream.store import MemoryStore

TP = namedtuple("TP", "topic partition")


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Coordinator:
    """What the lease reads of aiokafka's GroupCoordinator: `generation`, and `_do_heartbeat`
    (True when the group answered), here taking `delay` seconds of the clock to answer."""

    def __init__(self, clock: _Clock, generation: int = 7) -> None:
        self.clock = clock
        self.generation = generation
        self.answer: Any = True
        self.delay = 0.0
        self.calls = 0

    async def _do_heartbeat(self) -> Any:
        self.calls += 1
        self.clock.now += self.delay
        return self.answer


class _Consumer:
    def __init__(self, coordinator: object) -> None:
        self._coordinator = coordinator


def _attached(session_ms: int = 10_000) -> tuple[GroupLease, _Coordinator, _Clock]:
    clock = _Clock()
    coordinator = _Coordinator(clock)
    lease = GroupLease(session_ms, clock=clock)
    assert lease.attach(_Consumer(coordinator))
    return lease, coordinator, clock


async def test_an_answered_heartbeat_renews_the_lease_from_when_it_was_sent() -> None:
    """The lease counts from the moment the heartbeat was sent, not answered (the broker's
    session clock cannot start earlier); it holds for half the session timeout."""
    lease, coordinator, clock = _attached()
    lease.assigned()
    clock.now += 4.0
    coordinator.delay = 1.5  # a slow answer
    sent = clock.now
    assert await coordinator._do_heartbeat() is True  # the lease's wrapper, as aiokafka calls it
    assert coordinator.calls == 1
    assert lease.age() == pytest.approx(clock.now - sent)
    clock.now = sent + 4.99
    assert lease.live() and lease.check() == 7
    clock.now = sent + 5.0
    assert not lease.live()
    with pytest.raises(AssignmentLost, match=r"no heartbeat answered for 5\.0s"):
        lease.check()


async def test_an_unanswered_heartbeat_does_not_renew_the_lease() -> None:
    """A heartbeat the group refused (unknown member, illegal generation: aiokafka returns
    False) leaves the lease to expire: a worker evicted while paused stays fenced."""
    lease, coordinator, clock = _attached()
    lease.assigned()
    clock.now += 6.0
    coordinator.answer = False
    assert await coordinator._do_heartbeat() is False
    assert not lease.live()
    with pytest.raises(AssignmentLost):
        lease.check()


async def test_an_assignment_renews_the_lease_and_names_the_generation_to_stamp() -> None:
    """Joining the group renews the membership; the generation it got is what the
    assignment's changelog records carry, even if aiokafka later resets its own copy."""
    lease, coordinator, clock = _attached()
    assert not lease.live(), "no membership before the first assignment"
    coordinator.generation = 0  # Tansu's first
    lease.assigned()
    assert lease.check() == 0
    coordinator.generation = 12
    lease.assigned()
    coordinator.generation = -1  # aiokafka's reset_generation(), before a rejoin
    assert lease.check() == 12
    clock.now += 60
    coordinator.generation = 13
    lease.assigned()
    assert lease.check() == 13


def test_without_aiokafkas_heartbeat_the_lease_warns_once_and_never_fences(
        caplog: pytest.LogCaptureFixture) -> None:
    """If aiokafka's internals change (no `_do_heartbeat` or `generation`), the worker runs
    as before: one warning at start, no fence, no generation stamps."""
    clock = _Clock()
    lease = GroupLease(10_000, clock=clock)
    with caplog.at_level(logging.WARNING, logger="service.stream.fencing"):
        assert not lease.attach(_Consumer(object()))
    assert len(caplog.records) == 1 and "not fenced" in caplog.records[0].getMessage()
    lease.assigned()
    clock.now += 3600
    assert lease.live() and lease.check() is None
    assert not GroupLease(10_000).attach(object())  # no coordinator at all


def test_the_stamp_is_at_least_the_highest_generation_recovery_saw() -> None:
    """A partition's records carry the assignment's generation, unless its changelog already
    holds a higher one (the group was deleted and its generations started again at 1): then
    that one, so that recovery does not take the new owner's records for stale ones."""
    store = MemoryStore()
    assert stamp(5, store) == b"5"
    store.write({GENERATION_KEY: b"50"}, -1)
    assert stamp(5, store) == b"50"
    assert stamp(51, store) == b"51"


def test_generation_of_reads_the_header_and_tolerates_its_absence() -> None:
    """Records from before the stamps (or from the Faust runtime) have no generation."""
    assert generation_of([("src", b"t:0:1"), (GENERATION_HEADER, b"9")]) == 9
    assert generation_of([("src", b"t:0:1")]) is None
    assert generation_of(None) is None and generation_of(()) is None
    assert generation_of([(GENERATION_HEADER, b"x")]) is None


def test_a_fenced_worker_rewinds_each_partition_it_holds_to_its_first_abandoned_message(
) -> None:
    """Per topic partition, the lowest offset among the abandoned batches' messages, for the
    partitions the consumer still holds (the others' next owner starts from the committed
    offsets)."""
    batch1 = [Message("events", 0, 10, None, b"", 0), Message("events", 1, 4, None, b"", 0)]
    batch2 = [Message("events", 0, 12, None, b"", 0), Message("responses", 0, 3, None, b"", 0)]

    class Consumer:
        seeks: list[tuple[Any, int]] = []

        def assignment(self) -> set[Any]:
            return {TP("events", 0), TP("events", 1), TP("events", 2)}

        def seek(self, tp: Any, offset: int) -> None:
            self.seeks.append((tp, offset))

    consumer = Consumer()
    positions = rewind(consumer, [batch2, batch1])
    assert positions == {TP("events", 0): 10, TP("events", 1): 4}
    assert sorted(consumer.seeks) == sorted(positions.items())
