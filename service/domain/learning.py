"""Learned propensities: Beta-Bernoulli per action and segment, explored by Thompson sampling.

Arbitration ranks eligible actions by priority x propensity x value. With a `learning`
section in the rulebook, an action's propensity for a customer is a draw from
Beta(prior_accept + accepted, prior_decline + declined) of the customer's segment, once at
least `warm_up` responses were seen for that action and segment (1.0 before). The draw's
randomness comes from a hash of (event id, action), so the same log always gives the same
decisions: replay stays byte-identical.

The counts are cross-customer state. decide() stays pure by reading them from the context
mapping under `propensity:<action>:<segment>` -> [accepted, declined]; who fills it is the
caller's business: the per-input step (service/domain/step.py) keeps one `LearningState` per
partition, fed by the `action_response` events it applies (Outcome.responses), for the worker
and replay alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from hashlib import blake2b
from typing import Any

from schemas.codec import dumps, loads
from schemas.vocabulary import SUCCESS_RESPONSES

__all__ = ["LearningState", "propensity", "propensity_key", "thompson"]

FAILURE = frozenset({"declined"})


def thompson(accepted: float, declined: float, seed: str) -> float:
    """A deterministic draw from Beta(accepted, declined) (both > 0), seeded by `seed`."""
    state = int.from_bytes(blake2b(seed.encode(), digest_size=8).digest(), "big")
    return random.Random(state).betavariate(accepted, declined)


def propensity_key(action: str, segment: str) -> str:
    """Where the counts of one action and segment live in the context mapping."""
    return f"propensity:{action}:{segment}"


def propensity(context: Mapping[str, Any], action: str, segment: str, event_id: str,
               warm_up: int, prior: tuple[float, float]) -> tuple[float, str]:
    """The propensity to rank with, and the reason line that explains it."""
    counts = context.get(propensity_key(action, segment))
    accepted, declined = (counts[0], counts[1]) if counts else (0, 0)
    seen = accepted + declined
    if seen < warm_up:
        return 1.0, f"propensity 1.0 (warming up: {seen:g} of {warm_up} responses, {segment})"
    value = thompson(prior[0] + accepted, prior[1] + declined, f"{event_id}\x1f{action}")
    mean = (prior[0] + accepted) / (prior[0] + prior[1] + seen)
    return value, (f"propensity {value:.3f} (Thompson draw; {accepted:g}/{seen:g} accepted, "
                   f"mean {mean:.3f}, {segment})")


class LearningState:
    """One partition's accepted/declined tallies per (action, segment), bucketed by the event
    time of each response (epochs of `refresh_ms`), and the snapshot decisions read.

    A decision at event time t reads the responses dated before the start of the epoch
    *before* t's (one epoch of grace): with `refresh: 10m`, a decision at 10:25 reads the
    responses dated before 10:10. So what a decision reads depends on event times only, not on
    when the responses were processed, as long as none arrives more than one epoch late (such
    a response is counted in `late`; it counts from then on, in the worker and in replay
    alike). The state is per partition and travels in the partition's store and changelog with
    the profiles, so a restart or a rebalance continues from exactly the committed counts:
    never a response counted twice, never one lost. Epochs older than `KEEP_EPOCHS` behind the
    newest are folded into one base tally (a decision dated that far back reads it whole).
    """

    KEEP_EPOCHS = 48
    __slots__ = ("_cache", "_cache_epoch", "base", "base_upto", "decided_epoch", "dirty",
                 "epochs", "late", "refresh_ms")

    def __init__(self, refresh_ms: int) -> None:
        self.refresh_ms = max(1, refresh_ms)
        self.epochs: dict[int, dict[str, list[int]]] = {}
        self.base: dict[str, list[int]] = {}  # every epoch up to `base_upto`, folded
        self.base_upto = -(2**62)
        self.late = 0
        self.decided_epoch = -(2**62)  # the newest epoch a decision read a snapshot for
        self.dirty = False  # changed since last stored (the worker writes it with its batch)
        self._cache_epoch: int | None = None
        self._cache: dict[str, list[int]] = {}

    def observe(self, responses: Sequence[tuple[str, str, str]], ts_ms: int) -> None:
        """Count the responses of one event dated `ts_ms`."""
        epoch = ts_ms // self.refresh_ms
        self.dirty = True
        if epoch < self.decided_epoch - 1:
            self.late += 1  # more than one epoch late: decisions already read without it
        cached = self._cache_epoch
        if cached is not None and epoch < cached - 1:
            self._cache_epoch = None
        bucket = self.base if epoch <= self.base_upto else self.epochs.setdefault(epoch, {})
        for action, segment, response in responses:
            if response in SUCCESS_RESPONSES:
                index = 0
            elif response in FAILURE:
                index = 1
            else:
                continue
            counts = bucket.setdefault(propensity_key(action, segment), [0, 0])
            counts[index] += 1
        if len(self.epochs) > self.KEEP_EPOCHS:
            self._fold()

    def _fold(self) -> None:
        keep = sorted(self.epochs)[-self.KEEP_EPOCHS:]
        for epoch in sorted(self.epochs):
            if epoch >= keep[0]:
                break
            _add_all(self.base, self.epochs.pop(epoch))
            self.base_upto = max(self.base_upto, epoch)
        self._cache_epoch = None

    def snapshot(self, ts_ms: int) -> dict[str, list[int]]:
        """The counts a decision at `ts_ms` reads (shared: do not modify)."""
        epoch = ts_ms // self.refresh_ms
        if epoch > self.decided_epoch:
            self.decided_epoch = epoch
            self.dirty = True
        if epoch != self._cache_epoch:
            total: dict[str, list[int]] = {}
            _add_all(total, self.base)
            for number, bucket in self.epochs.items():
                if number < epoch - 1:
                    _add_all(total, bucket)
            self._cache, self._cache_epoch = total, epoch
        return self._cache

    def context(self, ts_ms: int, base: Mapping[str, Any]) -> Mapping[str, Any]:
        """The context for an event at `ts_ms`: `base` plus the propensity snapshot."""
        snapshot = self.snapshot(ts_ms)
        if not snapshot:
            return base
        return {**base, **snapshot} if len(base) < 64 else _Overlay(snapshot, base)

    def to_bytes(self) -> bytes:
        """The stored form (the partition's store and changelog)."""
        return dumps({"v": 1, "r": self.refresh_ms, "bu": self.base_upto,
                             "b": self.base, "late": self.late, "de": self.decided_epoch,
                             "e": {str(k): v for k, v in sorted(self.epochs.items())}})

    @classmethod
    def from_bytes(cls, data: bytes, refresh_ms: int) -> LearningState:
        """Read the stored form; tallies kept under another refresh period are re-bucketed
        into the base (their epochs no longer line up)."""
        raw = loads(data)
        state = cls(refresh_ms)
        state.late = int(raw.get("late", 0))
        state.decided_epoch = int(raw.get("de", state.decided_epoch))
        epochs = {int(k): v for k, v in raw.get("e", {}).items()}
        if int(raw.get("r", refresh_ms)) == state.refresh_ms:
            state.base, state.base_upto, state.epochs = raw.get("b", {}), int(raw["bu"]), epochs
        else:
            state.base = dict(raw.get("b", {}))
            for bucket in epochs.values():
                _add_all(state.base, bucket)
            state.base_upto = max(epochs, default=int(raw.get("bu", state.base_upto)))
        return state


def _add_all(total: dict[str, list[int]], counts: Mapping[str, list[int]]) -> None:
    for key, (accepted, declined) in counts.items():
        current = total.get(key)
        if current is None:
            total[key] = [accepted, declined]
        else:
            current[0] += accepted
            current[1] += declined


class _Overlay(Mapping[str, Any]):
    """Two mappings read as one (the snapshot first), without copying a big context."""

    def __init__(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> None:
        self._first = first
        self._second = second

    def __getitem__(self, key: str) -> Any:
        if key in self._first:
            return self._first[key]
        return self._second[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._first
        yield from (k for k in self._second if k not in self._first)

    def __len__(self) -> int:
        return len(self._first) + sum(1 for k in self._second if k not in self._first)
