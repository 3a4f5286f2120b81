"""A bounded set of recently seen `action_id`s with a time to live.

Touchflow delivers at least once: after a crash, actions already sent may come again, with the
same `action_id`, usually within seconds or minutes. Remembering ids for as long as an action
stays actionable (its `expires_at`), and at most `max_entries` of them, is enough.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["Deduplicator"]


class Deduplicator:
    """`first(action_id)` is True the first time an id is seen and False while it is
    remembered: for `ttl_s` seconds from its first sighting (a repeat does not extend it), and
    while it is among the `max_entries` newest ids (past that, the oldest is forgotten first).
    `clock` gives seconds (monotonic by default; tests pass their own)."""

    __slots__ = ("_clock", "_seen", "max_entries", "ttl_s")

    def __init__(self, *, ttl_s: float = 86_400.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> expiry, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, action_id: object) -> bool:
        if not isinstance(action_id, str):
            return False
        expiry = self._seen.get(action_id)
        return expiry is not None and expiry > self._clock()

    def first(self, action_id: str) -> bool:
        """Record `action_id`; True if it was not remembered (handle the action), False for a
        repeat (skip it)."""
        now = self._clock()
        self._expire(now)
        if action_id in self._seen:
            return False
        self._seen[action_id] = now + self.ttl_s
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # Ids are stored in order of first sighting with one TTL, so expiries are in order too
        # (a clock that steps back only delays expiry).
        seen = self._seen
        while seen:
            oldest, expiry = next(iter(seen.items()))
            if expiry > now:
                break
            del seen[oldest]
