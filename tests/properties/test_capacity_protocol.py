"""The quota protocol of service/domain/capacity.py as a state machine over its pure code.

Each partition has two input logs, as in the worker (events, and quota records on the
repartition topic), read in any interleaving; a durable snapshot (its stored state and the
positions it committed); records it sends leave at once (the worst case: before its state is
durable), except returns, which leave on commit. A crash reverts a partition to its snapshot
and redelivers what follows, possibly interleaved otherwise; a rebalance hands the committed
state over. Invariants: what all partitions spend of a period never exceeds the limit (in the
live states and in the durable ones), and once every log is consumed and every period closed,
the owner's pool plus what was spent is the limit: no quota lost.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from service.domain.capacity import CapacityState, Constraint, owner_key
from service.domain.partitioning import partition_for_key

HOUR = 3_600_000


class Partition:
    def __init__(self, state: CapacityState) -> None:
        self.state = state
        self.events: list[tuple[int, bool]] = []  # event times, and whether it wants a call
        self.controls: list[bytes] = []  # quota records addressed here
        self.at = [0, 0]  # next event, next record
        self.durable = state.to_bytes()
        self.durable_at = [0, 0]


class QuotaProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[Partition] = []
        self.constraint = Constraint("calls", "channel", "call_center", 1, HOUR, False, 1)
        self.now = 10 * HOUR
        self.periods: set[int] = set()

    @initialize(partitions=st.integers(2, 3), limit=st.integers(1, 12),
                chunk=st.integers(1, 4))
    def setup(self, partitions: int, limit: int, chunk: int) -> None:
        self.constraint = Constraint("calls", "channel", "call_center", limit, HOUR, False,
                                     chunk)
        self.parts = [Partition(self._fresh(p, partitions)) for p in range(partitions)]

    def _fresh(self, partition: int, partitions: int) -> CapacityState:
        return CapacityState({"calls": self.constraint}, partition, partitions, 0)

    def _load(self, index: int) -> CapacityState:
        return CapacityState.from_bytes(self.parts[index].durable, {"calls": self.constraint},
                                        index, len(self.parts), 0)

    def _flush(self, state: CapacityState) -> None:
        for record in state.outbox:
            self.parts[record.partition].controls.append(record.body)
        state.outbox.clear()

    # -- rules ------------------------------------------------------------------------------

    @rule(partition=st.integers(0, 2), count=st.integers(1, 6))
    def demand(self, partition: int, count: int) -> None:
        """Events that would send a call arrive at a partition, dated now."""
        part = self.parts[partition % len(self.parts)]
        part.events.extend([(self.now, True)] * count)
        self.periods.add(self.now // HOUR)

    @rule(partition=st.integers(0, 2))
    def other_event(self, partition: int) -> None:
        """An event that wants no call (it only moves the partition's event time)."""
        self.parts[partition % len(self.parts)].events.append((self.now, False))

    @rule(minutes=st.integers(1, 90))
    def time_passes(self, minutes: int) -> None:
        self.now += minutes * 60_000

    @rule(partition=st.integers(0, 2), picks=st.lists(st.booleans(), min_size=1, max_size=12))
    def process(self, partition: int, picks: list[bool]) -> None:
        """The partition reads its two logs in an arbitrary interleaving."""
        part = self.parts[partition % len(self.parts)]
        state = part.state
        for from_events in picks:
            if from_events and part.at[0] < len(part.events):
                ts, wants = part.events[part.at[0]]
                part.at[0] += 1
                state.advance(ts)
                if wants:
                    state.take([self.constraint], ts)
            elif part.at[1] < len(part.controls):
                error = state.receive(part.controls[part.at[1]])
                assert error is None
                part.at[1] += 1
            self._flush(state)

    @rule(partition=st.integers(0, 2))
    def commit(self, partition: int) -> None:
        """The batch is durable: state and positions; its held-back returns leave."""
        part = self.parts[partition % len(self.parts)]
        part.durable = part.state.to_bytes()
        part.durable_at = list(part.at)
        for record in part.state.held_back:
            self.parts[record.partition].controls.append(record.body)
        part.state.held_back.clear()

    @rule(partition=st.integers(0, 2))
    def crash(self, partition: int) -> None:
        """The worker dies: the partition restarts from its durable state and redelivery."""
        index = partition % len(self.parts)
        part = self.parts[index]
        part.state = self._load(index)
        part.at = list(part.durable_at)
        part.state.resend()
        self._flush(part.state)

    @rule(partition=st.integers(0, 2), picks=st.lists(st.booleans(), min_size=1, max_size=8),
          again=st.lists(st.booleans(), min_size=1, max_size=8))
    def dies_mid_batch(self, partition: int, picks: list[bool], again: list[bool]) -> None:
        """A batch runs (its records leave), the worker dies before storing it, and the
        redelivered inputs are read in another interleaving."""
        self.process(partition, picks)
        self.crash(partition)
        self.process(partition, again)

    @rule(partition=st.integers(0, 2))
    def rebalance(self, partition: int) -> None:
        """The partition moves to another worker after committing: it goes on from its
        stored form."""
        self.commit(partition)
        self.crash(partition)

    @precondition(lambda self: bool(self.parts))
    @rule()
    def quiesce(self) -> None:
        """Every log consumed, every period closed: the owners' pools and what was spent add
        up to the limit for every period (nothing stranded, nothing lost)."""
        self._drain()
        self.now = (self.now // HOUR + 2) * HOUR
        for part in self.parts:
            part.state.advance(self.now)
            self._flush(part.state)
        self._drain()
        for part in self.parts:  # (asks ahead name periods no event was in)
            self.periods |= {period for name, period in part.state.holds}
        for period in self.periods:
            owner = self._owner(period)
            left = owner.state.pool_left("calls", period)
            spent = sum(p.state.spent("calls", period) for p in self.parts)
            held = sum(p.state.held("calls", period) for p in self.parts)
            assert held == 0, (period, held)
            if left is None:
                assert spent == 0
                continue
            assert left + spent == self.constraint.limit, (period, left, spent)

    def _owner(self, period: int) -> Partition:
        return self.parts[partition_for_key(owner_key("calls", period), len(self.parts))]

    def _drain(self) -> None:
        for _ in range(200):
            busy = False
            for index, part in enumerate(self.parts):
                if part.at[0] < len(part.events) or part.at[1] < len(part.controls):
                    busy = True
                    self.process(index, [True] * (len(part.events) - part.at[0])
                                 + [False] * (len(part.controls) - part.at[1]))
                busy = busy or bool(part.state.held_back)
                self.commit(index)
            if not busy:
                return
        raise AssertionError("the protocol did not settle")

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def never_overspent(self) -> None:
        """Live and durable states alike: never more spent in a period than the limit."""
        if not self.parts:
            return
        durable = [self._load(i) for i in range(len(self.parts))]
        for period in self.periods:
            live = sum(p.state.spent("calls", period) for p in self.parts)
            stored = sum(s.spent("calls", period) for s in durable)
            assert live <= self.constraint.limit, (period, live)
            assert stored <= self.constraint.limit, (period, stored)


QuotaProtocol.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestQuotaProtocol = QuotaProtocol.TestCase


def test_a_return_made_by_a_lost_batch_cannot_outlive_it() -> None:
    """A batch returns its unused quota, then dies; redelivered, the partition reads the
    grant before a demand this time, spends one, and returns less under the same id. Had the
    lost batch's return left before its state was durable, the owner would have credited
    the larger amount: one unit more than the limit in circulation."""
    machine = QuotaProtocol()
    machine.setup(partitions=2, limit=6, chunk=3)
    holder = 1 - machine.parts.index(machine._owner(10))
    owner = 1 - holder
    machine.demand(holder, 2)
    machine.process(holder, [True])  # blocked: asks
    machine.process(owner, [False])  # grants 3
    machine.process(holder, [True, False])  # the 2nd demand blocked, then the grant
    machine.time_passes(65)
    machine.demand(holder, 1)
    machine.process(holder, [True])  # period 10 closes: 3 unused go back
    machine.process(owner, [False] * 4)
    machine.crash(holder)
    machine.process(holder, [True, False, True, True])  # grant read before the 2nd demand
    machine.never_overspent()
    machine.quiesce()
    machine.teardown()


def test_the_grant_of_an_ask_a_lost_batch_made_is_adopted() -> None:
    """A batch spends in one hour and, entering the next, asks ahead for it; the batch dies
    after the ask left. Redelivered otherwise (the grant of the first hour read later), the
    partition spends nothing in the first hour and so does not ask ahead: the grant of the
    lost batch's ask must still be taken (and later returned), not lost."""
    machine = QuotaProtocol()
    machine.setup(partitions=2, limit=6, chunk=3)
    holder = 1 - machine.parts.index(machine._owner(10))
    machine.demand(holder, 2)
    machine.process(holder, [True])  # blocked: asks for 10:00-11:00
    owner = machine.parts.index(machine._owner(10))
    machine.process(owner, [False])  # grants 3
    machine.process(holder, [False, True])  # grant, then the 2nd demand spends
    machine.time_passes(65)
    machine.other_event(holder)
    machine.process(holder, [True])  # enters 11:00 having spent: asks ahead for it
    assert machine.parts[holder].state.holds[("calls", 11)]["a"] == 1
    machine.crash(holder)
    machine.process(holder, [True, True, True, False])  # the grant after the 2nd demand
    assert ("calls", 11) not in machine.parts[holder].state.holds
    machine.quiesce()
    machine.teardown()
