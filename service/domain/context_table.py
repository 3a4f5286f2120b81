"""Reference data versioned in event time: the value of each key in force at a given instant.

A context record (stock of a sku, a paused signal, a store's opening hours) holds *from* a point
in time: its `valid_from` field, else the Kafka record's timestamp, else the beginning of time.
`ContextTable` keeps, per key, its versions in `valid_from` order, and `as_of(ts_ms)` is the
mapping a decision reads: for each key the newest version with `valid_from <= ts_ms`. The worker
and replay read the same way, so a log spanning a stock-out and a restock replays as it ran.

History is bounded: at most `max_versions` per key (default 64; the oldest go first). An event
dated before a key's first version reads the key as absent; once versions were dropped, an
event dated before the oldest kept one reads that version (the closest known value).
A record whose `valid_from` lies before the newest event time already decided (`decided_ms`,
set by the worker) arrived *late*: decisions already made did not see it, replay will. Such
records are counted in `late` (a metric), the only way live and replay can differ on context;
a fired signal's pause (key `signal:...`) is late by nature (it is published after the event
that fired it) and is counted apart, in `late_signals`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["BEGINNING", "DEFAULT_MAX_VERSIONS", "ContextTable", "ContextView"]

BEGINNING = -(2**62)  # valid_from of a record that carries no time: in force for any event
DEFAULT_MAX_VERSIONS = 64
_DELETED: Any = None  # a version whose value is None: the key is absent from then on


class ContextTable:
    """Per key, `[valid_from_ms, ...]` and the values in the same order; `latest` holds each
    key's newest version (what events newer than every version read, the common case)."""

    __slots__ = ("_froms", "_pruned", "_values", "decided_ms", "late", "late_signals", "latest",
                 "max_versions", "newest_from")

    def __init__(self, max_versions: int = DEFAULT_MAX_VERSIONS) -> None:
        if max_versions < 1:
            raise ValueError("a context table keeps at least one version per key")
        self.max_versions = max_versions
        self._froms: dict[str, list[int]] = {}
        self._values: dict[str, list[Any]] = {}
        self._pruned: set[str] = set()  # keys whose oldest versions were dropped
        self.latest: dict[str, Any] = {}
        self.newest_from = BEGINNING  # the newest valid_from of any version
        self.decided_ms = BEGINNING  # the newest event time decided so far (the worker's)
        self.late = 0
        self.late_signals = 0

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ContextTable:
        """A table whose values hold from the beginning of time (tests, plain mappings)."""
        table = cls()
        for key, value in values.items():
            table.put(key, value, BEGINNING)
        return table

    def copy(self) -> ContextTable:
        """An independent table with the same versions (a replay that adds signals to it)."""
        other = ContextTable(self.max_versions)
        other._froms = {key: list(froms) for key, froms in self._froms.items()}
        other._values = {key: list(values) for key, values in self._values.items()}
        other._pruned = set(self._pruned)
        other.latest = dict(self.latest)
        other.newest_from, other.decided_ms, other.late = \
            self.newest_from, self.decided_ms, self.late
        other.late_signals = self.late_signals
        return other

    def put(self, key: str, value: Any, valid_from_ms: int = BEGINNING) -> None:
        """Record that `key` holds `value` from `valid_from_ms` on (None: absent from then).
        A second record for the same key and instant replaces the first (last writer wins)."""
        if valid_from_ms < self.decided_ms:
            if key.startswith("signal:"):
                self.late_signals += 1
            else:
                self.late += 1
        froms = self._froms.get(key)
        if froms is None:
            froms = self._froms[key] = []
            self._values[key] = []
        values = self._values[key]
        at = bisect_right(froms, valid_from_ms)
        if at and froms[at - 1] == valid_from_ms:
            values[at - 1] = value
        else:
            froms.insert(at, valid_from_ms)
            values.insert(at, value)
            if len(froms) > self.max_versions:
                del froms[0], values[0]
                self._pruned.add(key)
        newest = values[-1]
        if newest is _DELETED:
            self.latest.pop(key, None)
        else:
            self.latest[key] = newest
        if valid_from_ms > self.newest_from:
            self.newest_from = valid_from_ms

    def get_at(self, key: str, ts_ms: int) -> Any:
        """The value of `key` in force at `ts_ms` (None when absent)."""
        froms = self._froms.get(key)
        if froms is None:
            return None
        at = bisect_right(froms, ts_ms)
        if at:
            return self._values[key][at - 1]
        return self._values[key][0] if key in self._pruned else None

    def as_of(self, ts_ms: int) -> Mapping[str, Any]:
        """The mapping a decision at event time `ts_ms` reads."""
        if ts_ms >= self.newest_from:
            return self.latest  # every key's newest version is in force: no view needed
        return ContextView(self, ts_ms)

    def versions(self, key: str) -> list[tuple[int, Any]]:
        """`(valid_from_ms, value)` of every kept version of `key`, oldest first."""
        return list(zip(self._froms.get(key, ()), self._values.get(key, ()), strict=True))

    def names(self) -> Iterator[str]:
        """Every key with a kept version (absent ones included)."""
        return iter(self._froms)

    def __len__(self) -> int:
        return len(self.latest)


class ContextView(Mapping[str, Any]):
    """`ContextTable` as of one instant (a read-only mapping; absent keys are missing)."""

    __slots__ = ("_table", "_ts")

    def __init__(self, table: ContextTable, ts_ms: int) -> None:
        self._table = table
        self._ts = ts_ms

    def get(self, key: str, default: Any = None) -> Any:
        value = self._table.get_at(key, self._ts)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self._table.get_at(key, self._ts)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._table.get_at(key, self._ts) is not None

    def __iter__(self) -> Iterator[str]:
        table, ts = self._table, self._ts
        return (key for key in table.names() if table.get_at(key, ts) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
