"""Window patterns in event time: counts within a window, and sequences (A then B within T).

A pattern *fires* on the event that completes it; conditions see it as `{pattern: NAME}`.

- `count`: at least `at_least` matching events (with the same `by` value, if set) whose times
  all fit in one window of length `within` that contains the current event's time. For events
  in time order that is "the last `within`"; a late event counts in the windows it belongs to.
- `sequence`: an event matching `first` and one matching `then` (same `by` value), the `then`
  event no earlier than the `first` one and at most `within` after it, one of them being the
  current event (so a late `first` completes a sequence too).

Each pattern keeps the times of its matching events in the profile, sorted, at most `keep`
of them, and forgets those that can no longer share a window with an event that is still
accepted (see `Profile` for the lateness horizon).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Any

from schemas.event import Event
from service.domain.fields import EventMatch, Getter, compile_event_getter
from service.domain.profile import Profile

__all__ = ["Pattern"]


class Pattern:
    """A compiled window pattern."""

    __slots__ = ("at_least", "by", "first", "keep", "kind", "match", "name", "text", "then",
                 "within")

    def __init__(self, name: str, kind: str, within: int, match: EventMatch | None,
                 first: EventMatch | None, then: EventMatch | None, at_least: int,
                 by: str | None, keep: int, text: str) -> None:
        self.name = name
        self.kind = kind
        self.within = within
        self.match = match
        self.first = first
        self.then = then
        self.at_least = at_least
        self.by: Getter | None = compile_event_getter(by) if by else None
        self.keep = max(keep, at_least)
        self.text = text

    def types(self) -> frozenset[str] | None:
        """Event types this pattern looks at (None: any type)."""
        parts = [m for m in (self.match, self.first, self.then) if m is not None]
        types: frozenset[str] = frozenset()
        for part in parts:
            if part.types is None:
                return None
            types |= part.types
        return types

    def update(self, profile: Profile, event: Event, horizon_ms: int) -> bool:
        """Record `event` if it matches; True if the pattern fires on it."""
        if self.kind == "count":
            assert self.match is not None
            if not self.match.test(event):
                return False
            return self._count(profile, event, horizon_ms)
        assert self.first is not None and self.then is not None
        is_first = self.first.test(event)
        is_then = self.then.test(event)
        if not (is_first or is_then):
            return False
        return self._sequence(profile, event, horizon_ms, is_first, is_then)

    def _group(self, event: Event) -> str | int | float | bool | None:
        if self.by is None:
            return None
        value = self.by(event)
        return value if isinstance(value, str | int | float | bool) else None

    def _trim(self, entries: list[list[Any]], horizon_ms: int) -> None:
        cutoff = horizon_ms - self.within
        drop = 0
        while drop < len(entries) and entries[drop][0] < cutoff:
            drop += 1
        if len(entries) - drop > self.keep:
            drop = len(entries) - self.keep
        if drop:
            del entries[:drop]

    def _count(self, profile: Profile, event: Event, horizon_ms: int) -> bool:
        ts = event.ts_ms
        group = self._group(event)
        entries = profile.windows.get(self.name)
        if entries is None:
            entries = profile.windows[self.name] = []
        if entries and entries[-1][0] > ts:
            insort(entries, [ts, group], key=lambda e: e[0])
        else:
            entries.append([ts, group])
        self._trim(entries, horizon_ms)
        times = [e[0] for e in entries if e[1] == group] if self.by else [e[0] for e in entries]
        need = self.at_least
        if len(times) < need:
            return False
        within = self.within
        if times[-1] == ts:  # the usual case: the newest event; window (ts - within, ts]
            return len(times) - bisect_left(times, ts - within) >= need
        # A late event: is there a window of length `within` holding it and `need` events?
        start = bisect_left(times, ts - within)
        for i in range(start, bisect_right(times, ts)):
            if bisect_right(times, times[i] + within) - i >= need:
                return True
        return False

    def _sequence(self, profile: Profile, event: Event, horizon_ms: int, is_first: bool,
                  is_then: bool) -> bool:
        ts = event.ts_ms
        group = self._group(event)
        entries = profile.windows.get(self.name)
        if entries is None:
            entries = profile.windows[self.name] = []
        within = self.within
        fired = False
        for when, step, entry_group in entries:
            if entry_group != group:
                continue
            if is_then and step == 0 and ts - within <= when <= ts:
                fired = True
                break
            if is_first and step == 1 and ts <= when <= ts + within:
                fired = True
                break
        for step in (0, 1):
            if (step == 0 and is_first) or (step == 1 and is_then):
                entry = [ts, step, group]
                if entries and entries[-1][0] > ts:
                    insort(entries, entry, key=lambda e: e[0])
                else:
                    entries.append(entry)
        self._trim(entries, horizon_ms)
        return fired
