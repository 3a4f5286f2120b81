"""Learned propensities: Beta-Bernoulli per action and segment, explored by Thompson sampling.

Arbitration ranks eligible actions by priority x propensity x value. With a `learning`
section in the rulebook, an action's propensity for a customer is a draw from
Beta(prior_accept + accepted, prior_decline + declined) of the customer's segment, once at
least `warm_up` responses were seen for that action and segment (1.0 before). The draw's
randomness comes from a hash of (event id, action), so the same log always gives the same
decisions: replay stays byte-identical.

The counts are cross-customer state. decide() stays pure by reading them from the context
mapping under `propensity:<action>:<segment>` -> [accepted, declined]; who fills it is the
caller's business: replay (service/replay/runner.py) and the worker's processor keep a
`PropensityTable` fed by the `action_response` events they process (Outcome.responses), and
publish a snapshot into the context at a fixed cadence in event time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from hashlib import blake2b
from typing import Any

__all__ = [
    "LearningState", "PropensityTable", "context_key", "propensity", "segment_of", "thompson",
]

SUCCESS = frozenset({"accepted", "converted"})
FAILURE = frozenset({"declined"})


def thompson(accepted: float, declined: float, seed: str) -> float:
    """A deterministic draw from Beta(accepted, declined) (both > 0), seeded by `seed`."""
    state = int.from_bytes(blake2b(seed.encode(), digest_size=8).digest(), "big")
    return random.Random(state).betavariate(accepted, declined)


def context_key(action: str, segment: str) -> str:
    """Where the counts of one action and segment live in the context mapping."""
    return f"propensity:{action}:{segment}"


def propensity(context: Mapping[str, Any], action: str, segment: str, event_id: str,
               warm_up: int, prior: tuple[float, float]) -> tuple[float, str]:
    """The propensity to rank with, and the reason line that explains it."""
    counts = context.get(context_key(action, segment))
    accepted, declined = (counts[0], counts[1]) if counts else (0, 0)
    seen = accepted + declined
    if seen < warm_up:
        return 1.0, f"propensity 1.0 (warming up: {seen:g} of {warm_up} responses, {segment})"
    value = thompson(prior[0] + accepted, prior[1] + declined, f"{event_id}\x1f{action}")
    mean = (prior[0] + accepted) / (prior[0] + prior[1] + seen)
    return value, (f"propensity {value:.3f} (Thompson draw; {accepted:g}/{seen:g} accepted, "
                   f"mean {mean:.3f}, {segment})")


def segment_of(segments: Mapping[str, bool], order: tuple[str, ...]) -> str:
    """The first listed segment the customer is in, else `all`."""
    for name in order:
        if segments.get(name):
            return name
    return "all"


class PropensityTable:
    """Accepted/declined counts per (action, segment), and their context snapshot."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}

    def observe(self, action: str, segment: str, response: str) -> None:
        if response in SUCCESS:
            index = 0
        elif response in FAILURE:
            index = 1
        else:
            return
        counts = self.counts.setdefault((action, segment), [0, 0])
        counts[index] += 1

    def snapshot(self) -> dict[str, list[int]]:
        """The context entries decide() reads (copies: later updates do not leak in)."""
        return {context_key(a, s): list(c) for (a, s), c in self.counts.items()}

    def __iter__(self) -> Iterator[tuple[tuple[str, str], list[int]]]:
        return iter(sorted(self.counts.items()))


class LearningState:
    """A `PropensityTable` and the snapshot decide() sees, refreshed every `refresh` ms of
    event time (so a replay of the same log always sees the same snapshots). `source` gives
    the counts to snapshot (default: this table; the worker sums all partitions')."""

    def __init__(self, refresh_ms: int,
                 source: Callable[[], dict[str, list[int]]] | None = None) -> None:
        self.table = PropensityTable()
        self.source = source if source is not None else self.table.snapshot
        self.refresh_ms = max(1, refresh_ms)
        self._snapshot: dict[str, list[int]] = {}
        self._next_ms: int | None = None

    def context(self, ts_ms: int, base: Mapping[str, Any]) -> Mapping[str, Any]:
        """The context for an event at `ts_ms`: `base` plus the current propensity snapshot."""
        if self._next_ms is None or ts_ms >= self._next_ms:
            self._snapshot = self.source()
            self._next_ms = (ts_ms // self.refresh_ms + 1) * self.refresh_ms
        if not self._snapshot:
            return base
        return {**base, **self._snapshot} if len(base) < 64 else _Overlay(self._snapshot, base)

    def observe(self, responses: Sequence[tuple[str, str, str]]) -> None:
        for action, segment, response in responses:
            self.table.observe(action, segment, response)

    def checkpoint(self) -> tuple[Any, ...]:
        """The state `restore` goes back to (the worker abandoning a batch after a failure)."""
        return ({key: list(c) for key, c in self.table.counts.items()}, self._snapshot,
                self._next_ms)

    def restore(self, saved: tuple[Any, ...]) -> None:
        counts, self._snapshot, self._next_ms = saved
        self.table.counts.clear()
        self.table.counts.update({key: list(c) for key, c in counts.items()})


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
