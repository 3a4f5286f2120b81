"""Replay's driver of the per-input step (service/domain/step.py), in memory, event time only.

The worker's processor drives the same step over Kafka batches; this driver keeps every
profile in one dict and delivers what the worker sends through the repartition topic -- an
event forwarded to the profile its alias was merged into, identity control records (link,
merge, erase) -- in process, first in first out, right after the event that caused them. The
learned propensity tallies are kept per partition (the partition that owns the profile key,
as in the worker, so pass the worker's partition count); cross-customer signals are counted
in process and what fires enters the versioned context from the firing event's time on.

Events are atomic, as in the worker: a `decide()` that raises leaves the profile as it was.
The worker restores from its last encoded copy; here, copying every profile before every
event would cost a large share of replay's time (docs/decisions.md, "Atomic events"), so a
key is copied only once it is known to fail (`risky`). A failure on a key not yet known
leaves that profile damaged and is recorded in `tainted`; `replay_stream` then runs the log
again with those keys risky (failures are bugs, rare, and a run is deterministic, so the
second run fails at the same events and rolls them back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.event import Event
from service.domain.capacity import CapacityState, with_quota
from service.domain.context_table import ContextTable
from service.domain.decide import Outcome
from service.domain.erasure import Tombstones
from service.domain.learning import LearningState
from service.domain.partitioning import partition_for_key
from service.domain.profile import Profile
from service.domain.rules import Rulebook
from service.domain.signals import SignalState
from service.domain.step import (
    Control,
    ControlResult,
    event_context,
    step_control,
    step_event,
)
from service.ops.defaults import PARTITIONS, TOMBSTONE_MARGIN_S

__all__ = ["DEFAULT_PARTITIONS", "Replayer"]

DEFAULT_PARTITIONS: int = PARTITIONS  # (the settings' defaults, without importing them)
DEFAULT_TOMBSTONE_MARGIN_S: int = TOMBSTONE_MARGIN_S


class Replayer:
    """The profiles of one replay, and the in-process delivery of the step's effects.

    `deliver=False` leaves forwards and control records undelivered (kept in `undelivered`):
    a caller that replays a recorded history, where they appear as inputs of their own, feeds
    them through `apply_at` and `apply_control`."""

    def __init__(self, rulebook: Rulebook,
                 context: ContextTable | Mapping[str, Any] | None = None, *,
                 partitions: int = DEFAULT_PARTITIONS, deliver: bool = True,
                 tombstone_margin_s: int = DEFAULT_TOMBSTONE_MARGIN_S) -> None:
        self.rulebook = rulebook
        self.context = context if isinstance(context, ContextTable) else \
            ContextTable.of(context or {})
        if rulebook.signals and isinstance(context, ContextTable):
            self.context = context.copy()  # fired signals are added: keep the caller's as is
        self.partitions = partitions
        self.deliver = deliver
        self.profiles: dict[bytes, Profile] = {}
        learning = rulebook.policy.learning
        self._refresh_ms = learning.refresh if learning is not None else None
        self.learning: dict[int, LearningState] = {}
        # erasure tombstones, per partition as in the worker (expiry follows its event time)
        self.tombstones: dict[int, Tombstones] = {}
        self._tombstone_horizon = rulebook.max_lateness + tombstone_margin_s * 1000
        self._specs = list(rulebook.signals.values())
        self.signals = SignalState(rulebook.signals, rulebook.version) if self._specs else None
        self.risky: set[bytes] = set()  # keys copied before each step (see the module doc)
        self.tainted: set[bytes] = set()  # keys a step failed on without a copy
        self.dead: list[tuple[str, str]] = []  # (reason, error) the worker would dead-letter
        self.undelivered: list[tuple[bytes, Event | Control]] = []
        # capacity quotas per partition, as in the worker; their records are delivered in
        # process right after the step that sent them (service/domain/capacity.py)
        self.capacity: dict[int, CapacityState] = {}
        self._partition_of: dict[bytes, int] = {}  # (capacity only: a key's partition)

    # -- the log's events ---------------------------------------------------------------------

    def apply(self, event: Event) -> Outcome:
        """Apply one event of the log under its own profile key, then deliver what it caused
        (audit records of the identity steps are added to the outcome's); `decide()`'s
        exceptions propagate (the caller counts them, as the worker dead-letters them)."""
        text = event.key()
        outcome = self.apply_at(text.encode(), event, text)
        effects = outcome.effects
        if effects is None or not self.deliver:  # (most events: nothing to deliver)
            return outcome
        for _ in range(8):  # a merged alias: the profile it was merged into decides
            if effects.forward is None:
                break
            outcome = self.apply_at(effects.forward.encode(), event)
            effects = outcome.effects
            if effects is None:
                return outcome
        if effects.controls:
            self._deliver(effects.controls, outcome)
        return outcome

    def apply_at(self, key: bytes, event: Event, text: str | None = None) -> Outcome:
        """One step of `event` at the profile under `key` (`text`: the same, decoded; no
        delivery of its effects)."""
        profiles = self.profiles
        profile = profiles.get(key)
        ts = event.ts_ms
        tallies = self._tallies(key) if self._refresh_ms is not None else None
        context = event_context(self.context, tallies, ts)
        quota = self._quota(key) if self.rulebook.capacity else None
        if quota is not None:
            quota.advance(ts)
            context = with_quota(context, quota)
        before = profile.clone() if profile is not None and key in self.risky else None
        text = text if text is not None else key.decode()
        tombs = self.tombstones.get(partition_for_key(key, self.partitions)) \
            if self.tombstones else None
        erased_ms = tombs.erased_ms(text) if tombs is not None and profile is None else -1
        try:
            outcome = step_event(profile, text, event, context, self.rulebook, self._specs,
                                 erased_ms)
        except Exception:
            if quota is not None:
                self._deliver_quota(quota)
            if key in self.risky:
                if before is None:
                    profiles.pop(key, None)
                else:
                    profiles[key] = before
            else:
                self.tainted.add(key)
            raise
        if quota is not None and (quota.outbox or quota.held_back):
            self._deliver_quota(quota)
        effects = outcome.effects
        if outcome.duplicate or (effects is not None and (
                effects.forward is not None or effects.ignored)):
            if effects is not None and not self.deliver:
                if effects.forward is not None:
                    self.undelivered.append((effects.forward.encode(), event))
                elif effects.controls:
                    self.undelivered.extend((c.target.encode(), c) for c in effects.controls)
            return outcome
        if tombs is not None:
            tombs.advance(ts, self._tombstone_horizon)
        if outcome.responses and tallies is not None:
            tallies.observe(outcome.responses, ts)
        kept = outcome.profile
        if kept is None:
            profiles.pop(key, None)
        elif kept is not profile:
            profiles[key] = kept
        if effects is not None:
            if effects.tombstone >= 0:
                self._tombstones(key).mark(text, effects.tombstone)
            if effects.feeds:
                self._signal(event, effects.feeds, outcome)
            if effects.controls and not self.deliver:
                self.undelivered.extend((c.target.encode(), c) for c in effects.controls)
        return outcome

    # -- identity control records ------------------------------------------------------------

    def apply_control(self, key: bytes, kind: str, value: bytes | None) -> ControlResult:
        """Apply one control record addressed to `key` (no delivery of what it sends)."""
        text = key.decode()
        profile = self.profiles.get(key)
        tombs = self.tombstones.get(partition_for_key(key, self.partitions)) \
            if self.tombstones else None
        erased_ms = tombs.erased_ms(text) if tombs is not None and profile is None else -1
        result = step_control(profile, text, kind, value, self.rulebook, erased_ms)
        if result.tombstone >= 0:
            self._tombstones(key).mark(text, result.tombstone)
        if result.dead is not None:
            self.dead.append(result.dead)
        if result.changed:
            if result.profile is None:
                self.profiles.pop(key, None)
            else:
                self.profiles[key] = result.profile
        if result.controls and not self.deliver:
            self.undelivered.extend((c.target.encode(), c) for c in result.controls)
        return result

    def _deliver(self, controls: Iterable[Control], outcome: Outcome) -> None:
        queue: deque[Control] = deque(controls)
        decisions = outcome.decisions
        while queue:
            control = queue.popleft()
            result = self.apply_control(control.target.encode(), control.kind, control.body)
            decisions.extend(result.decisions)
            queue.extend(result.controls)

    # -- cross-customer state ----------------------------------------------------------------

    def _tombstones(self, key: bytes) -> Tombstones:
        partition = partition_for_key(key, self.partitions)
        tombs = self.tombstones.get(partition)
        if tombs is None:
            tombs = self.tombstones[partition] = Tombstones()
        return tombs

    def _quota(self, key: bytes) -> CapacityState:
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._partition_of[key] = partition_for_key(key, self.partitions)
        state = self.capacity.get(partition)
        return state if state is not None else self._capacity(partition)

    def _capacity(self, partition: int) -> CapacityState:
        state = self.capacity.get(partition)
        if state is None:
            state = self.capacity[partition] = CapacityState(
                self.rulebook.capacity, partition, self.partitions)
        return state

    def _deliver_quota(self, state: CapacityState) -> None:
        """Deliver the quota records `state` sent, and those they cause, first in first out
        (the worker sends them through the repartition topic; returns, after its store write:
        here nothing is lost, so at once)."""
        queue = deque([*state.outbox, *state.held_back])
        state.outbox.clear()
        state.held_back.clear()
        while queue:
            record = queue.popleft()
            target = self._capacity(record.partition)
            error = target.receive(record.body)
            if error is not None:
                self.dead.append(("bad_control", error))
            queue.extend(target.outbox)
            queue.extend(target.held_back)
            target.outbox.clear()
            target.held_back.clear()

    def _tallies(self, key: bytes) -> LearningState:
        partition = partition_for_key(key, self.partitions)
        tallies = self.learning.get(partition)
        if tallies is None:
            assert self._refresh_ms is not None
            tallies = self.learning[partition] = LearningState(self._refresh_ms)
        return tallies

    def _signal(self, event: Event, feeds: Iterable[tuple[str, str]],
                outcome: Outcome) -> None:
        """Count the event in its signals; a firing goes to the operations output and into
        the context from this event's time on (the event itself decided without it, as in
        the worker, where the signal arrives through the context topic)."""
        state = self.signals
        if state is None:
            return
        for name, group in feeds:
            fired = state.observe(name, group, event.event_id, event.ts_ms)
            if fired is not None:
                outcome.operations = [*outcome.operations, fired.message]
                self.context.put(fired.context_key, fired.context_value, event.ts_ms)
