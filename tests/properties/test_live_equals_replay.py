"""Live == replay, on random histories: a Hypothesis state machine drives the real worker
`Processor` (two workers, three partitions) over an in-memory broker -- events produced in
place or to a foreign partition, redelivered by producers, dated late; identity chains and
erasures; consent; stock records versioned in time; learned propensities; `decide()` failing
half-way on poisoned events; shipments that fail (records lost, or landed with the
acknowledgement lost); batches of any size mixing a partition's two inputs; commits skipped;
workers crashing and recovering from the changelog; partitions moving between workers.

The oracle is replay (service/replay/replayer.py, the same per-input step) over the history
the workers applied: every input of every batch that completed, in order. The invariant, once
every input is consumed: the actions (ids and bytes) and audit records on the broker are
replay's (plus, at most, the records a failed and never retried batch left behind: the
at-least-once remainder), and every partition's store holds replay's profiles and learned
tallies byte for byte. `make soak-properties` runs it far longer than `make test`.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import service.domain.step as step_module
from schemas.codec import dumps
from schemas.event import EventError, decode_event
from service.domain.context_table import ContextTable
from service.domain.learning import LearningState
from service.domain.partitioning import partition_for_key
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.replay.replayer import Replayer
from service.stream.batch import Message
from service.stream.identity_control import control_kind
from service.stream.processor import Processor
from service.stream.store import LEARNING_KEY, TOMBSTONE_PREFIX
from service.stream.topics import TopicNames
from tests.events import wire
from tests.properties.broker_model import BrokerModel
from tests.properties.histories import CUSTOMERS, bodies, identities, links

RULES = Path(__file__).resolve().parents[1] / "data" / "machine_rulebook.yaml"
PARTITIONS = 3
SOAK = os.environ.get("TOUCHFLOW_SOAK") == "1"
START = datetime(2026, 3, 2, 9, tzinfo=UTC)
POISON = "-poison"


class Everything(set[bytes]):
    """Every key: the oracle copies each profile before each step (exact rollback)."""

    def __contains__(self, item: object) -> bool:
        return True


def _flaky(real: Any) -> Any:
    """decide() that fails after updating the profile in place, for poisoned event ids."""

    def decide(profile: Any, event: Any, context: Any, rulebook: Any) -> Any:
        outcome = real(profile, event, context, rulebook)
        if event.event_id.endswith(POISON):
            raise ValueError("a bug in the rulebook")
        return outcome

    return decide


class LiveEqualsReplay(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = load_settings(rules=RULES, store="memory://", partitions=PARTITIONS,
                                      channel_topics=False, broker="kafka://127.0.0.1:1",
                                      topic_prefix="sm")
        self.topics = TopicNames.from_settings(self.settings)
        self.rulebook = load_rulebook(RULES)
        self.context = ContextTable()
        self.broker = BrokerModel()
        self.real_decide = step_module.decide
        step_module.decide = _flaky(self.real_decide)
        self.owner = {p: p % 2 for p in range(PARTITIONS)}  # partition -> worker
        self.workers: list[Processor] = [self._processor(), self._processor()]
        self.committed: dict[tuple[str, int], int] = {}
        self.position: dict[tuple[str, int], int] = {}
        # a worker's failed batches, to process again in order before anything else
        self.retry: dict[int, list[list[Message]]] = {}
        self.history: list[Message] = []
        self.produced: list[bytes] = []
        self.clock_ms = 0
        self.serial = 0
        for partition, worker in self.owner.items():
            self.run(self.workers[worker].assign({partition}))

    def _processor(self) -> Processor:
        return Processor(self.settings, self.topics, self.rulebook, self.broker,
                         context=self.context, recover=self.broker.recovery(self.topics.changelog))

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.quiesce()
            self.compare()
        finally:
            step_module.decide = self.real_decide
            self.loop.close()

    # -- producers ---------------------------------------------------------------------------

    @initialize(stock=st.integers(0, 2))
    def stock_from_the_start(self, stock: int) -> None:
        """sku-1's stock, valid from the beginning of time; everyone e-mail consents early."""
        self.context.put("stock:sku-1", stock)
        for customer in CUSTOMERS:
            self._produce(self._event("consent_changed", {"customer_id": customer},
                                      {"channel": "email", "granted": True}, 0, 0, False), None)

    def _produce(self, raw: bytes, foreign: int | None) -> None:
        key = decode_event(raw).key().encode()
        owner = partition_for_key(key, PARTITIONS)
        partition = owner if foreign is None else foreign
        self.broker.append(self.topics.events, partition, None, raw)

    def _event(self, etype: str, identity: dict[str, str], properties: dict[str, Any],
               step_s: int, late_s: int, poison: bool) -> bytes:
        self.serial += 1
        self.clock_ms += step_s * 1000
        at = START + timedelta(milliseconds=self.clock_ms - late_s * 1000)
        event_id = f"e{self.serial}{POISON if poison else ''}"
        raw = wire(etype, event_id=event_id, at=at.isoformat(), identity=identity,
                   props=properties)
        self.produced.append(raw)
        return raw

    @rule(identity=identities, body=bodies, step_s=st.integers(0, 90),
          late_s=st.sampled_from([0, 0, 0, 50, 200, 9000]), poison=st.integers(0, 4),
          foreign=st.none() | st.integers(0, PARTITIONS - 1))
    def produce(self, identity: dict[str, str], body: tuple[str, dict[str, Any]], step_s: int,
                late_s: int, poison: int, foreign: int | None) -> None:
        """A touchpoint, in place or on a foreign partition (then forwarded)."""
        etype, properties = body
        self._produce(self._event(etype, identity, properties, step_s, late_s, poison == 0),
                      foreign)

    @rule(identity=links, step_s=st.integers(0, 90))
    def login(self, identity: dict[str, str], step_s: int) -> None:
        """An `identified` event linking two identifiers."""
        self._produce(self._event("identified", identity, {}, step_s, 0, False), None)

    @rule(identity=identities, step_s=st.integers(0, 90))
    def erase(self, identity: dict[str, str], step_s: int) -> None:
        """An erasure request under one identifier."""
        self._produce(self._event("erasure_requested", identity, {}, step_s, 0, False), None)

    @precondition(lambda self: bool(self.produced))
    @rule(pick=st.integers(0, 10_000), foreign=st.none() | st.integers(0, PARTITIONS - 1))
    def resend(self, pick: int, foreign: int | None) -> None:
        """A producer's retry: an event already produced, again."""
        self._produce(self.produced[pick % len(self.produced)], foreign)

    @rule(sku=st.sampled_from(["sku-1", "sku-2"]), stock=st.integers(0, 2),
          ahead_s=st.integers(1, 300))
    def restock(self, sku: str, stock: int, ahead_s: int) -> None:
        """A stock record valid from a time after every event produced so far (so no event
        already decided should have seen it: live and replay read the same versions)."""
        self.context.put(f"stock:{sku}", stock, int(
            (START + timedelta(milliseconds=self.clock_ms + ahead_s * 1000)).timestamp() * 1000))

    # -- the workers ---------------------------------------------------------------------------

    def _inputs(self, partition: int) -> list[tuple[str, int]]:
        return [(self.topics.events, partition), (self.topics.repartition, partition)]

    def _waiting(self, partition: int) -> int:
        return sum(len(self.broker.log(*tp)) - self.position.get(tp, 0)
                   for tp in self._inputs(partition))

    def _take(self, partition: int, count: int, mix: list[bool]) -> list[Message]:
        taken: list[Message] = []
        inputs = self._inputs(partition)
        for choice in mix + [False] * count:
            if len(taken) >= count:
                break
            order = inputs if choice else inputs[::-1]
            for tp in order:
                log, at = self.broker.log(*tp), self.position.get(tp, 0)
                if at < len(log):
                    taken.append(log[at])
                    self.position[tp] = at + 1
                    break
            else:
                break
        return taken

    def _done(self, batch: list[Message], commit: bool) -> None:
        self.history.extend(batch)
        if commit:
            for message in batch:
                self.committed[(message.topic, message.partition)] = message.offset + 1

    def _next(self, worker: int, partition: int, count: int, mix: list[bool]
              ) -> list[Message]:
        queue = self.retry.get(worker)
        return queue[0] if queue else self._take(partition, count, mix)

    def _process(self, worker: int, batch: list[Message], commit: bool) -> bool:
        queue = self.retry.setdefault(worker, [])
        try:
            self.run(self.workers[worker].process(batch))
        except OSError:
            if not queue or queue[0] is not batch:
                queue.insert(0, batch)
            return False
        if queue and queue[0] is batch:
            queue.pop(0)
        self._done(batch, commit)
        return True

    @rule(partition=st.integers(0, PARTITIONS - 1), count=st.integers(1, 12),
          mix=st.lists(st.booleans(), max_size=12), commit=st.booleans(),
          fail=st.sampled_from([None, None, None, None, "lost", "landed"]))
    def deliver(self, partition: int, count: int, mix: list[bool], commit: bool,
                fail: str | None) -> None:
        """The owner of a partition takes a batch from its two inputs (its failed batches
        first, unchanged, as the runtime retries them) and processes it; maybe a shipment
        fails."""
        worker = self.owner[partition]
        batch = self._next(worker, partition, count, mix)
        if not batch:
            return
        self.broker.fail_next = fail
        self._process(worker, batch, commit)
        self.broker.fail_next = None

    @rule(first=st.integers(0, PARTITIONS - 1), second=st.integers(0, PARTITIONS - 1),
          counts=st.tuples(st.integers(1, 8), st.integers(1, 8)), commit=st.booleans(),
          fail=st.sampled_from([None, None, (1, "lost"), (2, "landed"), (3, "lost"),
                                (4, "landed"), (2, "lost"), (3, "landed")]))
    def deliver_pipelined(self, first: int, second: int, counts: tuple[int, int],
                          commit: bool, fail: tuple[int, str] | None) -> None:
        """The lean runtime's pipeline: the second batch is decided while the first one's
        output is acknowledged (begin, begin, changelog, complete, changelog, complete); a
        failed shipment abandons every batch not complete, processed again in order."""
        worker = self.owner[first]
        if self.retry.get(worker):
            return
        if self.owner[second] != worker:
            second = first
        batches = [b for b in (self._take(first, counts[0], []),
                               self._take(second, counts[1], [])) if b]
        if not batches:
            return
        failing = None
        if fail is not None:
            failing = self.broker.shipments + fail[0]
            self.broker.fail_plan[failing] = fail[1]
        processor = self.workers[worker]
        done = 0
        changelog_of: list[int] = []  # the shipment that carried each batch's changelog

        async def pipeline() -> None:
            nonlocal done
            begun = [await processor.begin(batch) for batch in batches]
            for pending, batch in zip(begun, batches, strict=True):
                await processor.send_changelog(pending)
                changelog_of.append(self.broker.shipments)
                await processor.complete(pending)
                self._done(batch, commit)
                done += 1

        landed_before = len(self.broker.landed)
        try:
            self.run(pipeline())
        except OSError:
            processor.abandon()
            self.retry[worker] = batches[done:]
            # What the abandoned batches shipped before the failure stays on the broker; if
            # they are not retried as they were (a crash, a rebalance), it is the remainder.
            self.broker.uncertain.update((m.topic, m.value)
                                         for m in self.broker.landed[landed_before:])
            if fail is not None and fail[1] == "landed" and failing in changelog_of[done:]:
                # Its changelog landed (the acknowledgement was lost): a worker that crashes
                # now recovers the batch's effects, so replay must have applied it here; if
                # the batch is retried instead, the retry applies nothing twice.
                self.history.extend(batches[changelog_of.index(failing)])
        self.broker.fail_plan.clear()

    def _rewind(self, partitions: set[int]) -> None:
        for partition in partitions:
            for tp in self._inputs(partition):
                self.position[tp] = self.committed.get(tp, 0)

    @rule(worker=st.integers(0, 1))
    def crash(self, worker: int) -> None:
        """kill -9: the worker's memory and store are gone; a new one recovers its partitions
        from the changelog and consumes from the committed offsets."""
        self.retry.pop(worker, None)
        owned = {p for p, w in self.owner.items() if w == worker}
        self._rewind(owned)
        self.workers[worker] = self._processor()
        self.run(self.workers[worker].assign(owned))

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def rebalance(self, partition: int) -> None:
        """The partition moves to the other worker. The old owner's failed batches are dropped
        and every partition they held is consumed again from its committed offset (as the
        runtime seeks back), not only the one that moved."""
        old = self.owner[partition]
        new = 1 - old
        dropped = self.retry.pop(old, [])
        self.run(self.workers[old].revoke({partition}))
        self._rewind({partition} | {m.partition for batch in dropped for m in batch})
        self.owner[partition] = new
        self.run(self.workers[new].assign({partition}))

    @invariant()
    def changelog_follows_the_actions(self) -> None:
        """No changelog record of a batch lands without its actions (they are shipped first
        and acknowledged before the changelog is sent): nothing is left in the send buffer
        between steps."""
        assert not self.broker.pending

    # -- the end: quiesce, replay, compare -------------------------------------------------

    def quiesce(self) -> None:
        for _ in range(500):
            busy = False
            for partition in range(PARTITIONS):
                worker = self.owner[partition]
                batch = self._next(worker, partition, 50, [])
                if batch:
                    busy = True
                    assert self._process(worker, batch, True)
            if not busy:
                return
        raise AssertionError("the workers never caught up (a forwarding loop?)")

    def oracle(self) -> Replayer:
        replayer = Replayer(self.rulebook, self.context, partitions=PARTITIONS, deliver=False)
        replayer.risky = Everything()
        self.expected_actions: set[bytes] = set()
        self.expected_audit: set[bytes] = set()
        # `ignored` records (inputs dated before an erasure) of inputs the oracle applies a
        # second time (a batch whose changelog landed, then retried): the worker's retry
        # starts from the store without that batch, so it may or may not write them
        self.maybe_audit: set[bytes] = set()
        repartition = self.topics.repartition
        for message in self.history:
            key = message.key
            if message.topic == repartition and key is not None and control_kind(message):
                result = replayer.apply_control(key, control_kind(message) or "", message.value)
                self._expect(result.decisions)
                continue
            try:
                event = decode_event(message.value)
            except EventError:
                continue
            if message.topic != repartition or key is None:
                key = event.key().encode()
                if partition_for_key(key, PARTITIONS) != message.partition:
                    continue  # forwarded to its owner: applied there, later in the history
            try:
                outcome = replayer.apply_at(key, event)
            except ValueError:
                continue  # poisoned: dead-lettered by the worker, nothing applied
            if outcome.duplicate or (outcome.effects is not None
                                     and outcome.effects.forward is not None):
                if outcome.late:  # not applied, but audited (kind "late"), as the worker does
                    self.expected_audit.update(dumps(r) for r in outcome.decisions)
                continue
            self.expected_actions.update(dumps(a) for a in outcome.actions)
            self._expect(outcome.decisions)
        return replayer

    def _expect(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            target = self.maybe_audit if record["outcome"] == "ignored" else self.expected_audit
            target.add(dumps(record))

    def compare(self) -> None:
        replayer = self.oracle()
        uncertain = self.broker.uncertain
        actions = {m.value for m in self.broker.records(self.topics.actions) if m.value}
        audit = {m.value for m in self.broker.records(self.topics.decisions) if m.value}
        assert self.expected_actions <= actions
        assert all((self.topics.actions, value) in uncertain
                   for value in actions - self.expected_actions)
        assert self.expected_audit <= audit
        assert all((self.topics.decisions, value) in uncertain or value in self.maybe_audit
                   for value in audit - self.expected_audit)
        refresh = self.rulebook.policy.learning.refresh  # type: ignore[union-attr]
        for partition in range(PARTITIONS):
            store = self.workers[self.owner[partition]].store(partition)
            assert store is not None
            stored = {key: store.get(key) for key in store.keys()}  # noqa: SIM118
            expected = {key: profile.to_bytes() for key, profile in replayer.profiles.items()
                        if partition_for_key(key, PARTITIONS) == partition}
            assert stored == expected, f"partition {partition}: profiles differ from replay"
            raw = store.get(LEARNING_KEY)
            live = LearningState.from_bytes(raw, refresh) if raw else LearningState(refresh)
            want = replayer.learning.get(partition) or LearningState(refresh)
            assert live.to_bytes() == want.to_bytes(), f"partition {partition}: tallies"
            held = replayer.tombstones.get(partition)
            tombs = {(key[len(TOMBSTONE_PREFIX):].decode(), int(value))
                     for key, value in store.scan(TOMBSTONE_PREFIX)}
            assert tombs == set(held.items() if held is not None else ()), \
                f"partition {partition}: erasure tombstones differ from replay"


LiveEqualsReplay.TestCase.settings = settings(
    max_examples=500 if SOAK else 40, stateful_step_count=80 if SOAK else 50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_live_equals_replay = pytest.mark.filterwarnings("ignore")(LiveEqualsReplay.TestCase)
