"""Cross-customer signals: windowed counts keyed by something other than the customer.

A rulebook `signals` entry counts events matching `when`, grouped by the value at `by` (a
product sku, a store id; never a customer id), in event time. When `at_least` distinct events
of one group fall within `within`, the signal fires: an operations message (e.g.
`product_issue` for sku-1) and a context entry `signal:<name>:<group>` that stays active for
`hold` after the newest of those events. Actions read it with the condition
`{signal: NAME, key: TEMPLATE}` (true while active at the event's time), typically in
`suppress_unless: [{not: {signal: product_issue, key: "{event.properties.sku}"}}]`: a
promotion pauses by itself while its product is in trouble.

`SignalState` is pure and deterministic: replay feeds it every event in log order; the worker
feeds it the small signal-feed records its processors emit, on the worker that owns the
group's partition (service/stream/signal_aggregator.py). A redelivered event id is counted once.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.event import Event
from service.domain.fields import EventMatch, Getter, digest32, format_ms

__all__ = ["Fired", "Signal", "SignalState", "is_active", "signal_key"]


def signal_key(name: str, group: str) -> str:
    """Where an active signal lives in the context mapping."""
    return f"signal:{name}:{group}"


def is_active(context: Mapping[str, Any], name: str, group: str, ts_ms: int) -> bool:
    """True while the signal `name` for `group` is active at event time `ts_ms`."""
    value = context.get(signal_key(name, group))
    return isinstance(value, dict) and isinstance(value.get("until_ms"), int) \
        and ts_ms < value["until_ms"]


@dataclass(slots=True, eq=False)
class Signal:
    """One compiled `signals` entry."""

    name: str
    match: EventMatch
    by: Getter
    within: int
    at_least: int
    hold: int
    description: str | None

    def group_of(self, event: Event) -> str | None:
        """The group this event counts in, or None when it does not match or has no group."""
        if not self.match.test(event):
            return None
        value = self.by(event)
        if value is None or isinstance(value, dict | list) or value == "":
            return None
        return str(value)


@dataclass(frozen=True, slots=True)
class Fired:
    """A signal that fired: the operations message and the context entry it sets, in force
    from `at_ms`, the time of the event whose count made it fire (its `valid_from`)."""

    message: dict[str, Any]
    context_key: str
    context_value: dict[str, Any]
    at_ms: int


class _Track:
    __slots__ = ("entries", "until_ms")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str]] = []  # (ts, event id), oldest first, bounded
        self.until_ms = -1


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat()


class SignalState:
    """Windowed counts per (signal, group); `observe` returns what fired."""

    def __init__(self, specs: Mapping[str, Signal], version: str) -> None:
        self.specs = specs
        self.version = version
        self.tracks: dict[tuple[str, str], _Track] = {}

    def observe(self, name: str, group: str, event_id: str, ts_ms: int) -> Fired | None:
        """Count one event (once per id) and return the firing, if this event made it fire."""
        spec = self.specs.get(name)
        if spec is None:
            return None
        track = self.tracks.get((name, group))
        if track is None:
            track = self.tracks[(name, group)] = _Track()
        entries = track.entries
        if any(seen == event_id for _, seen in entries):
            return None
        insort(entries, (ts_ms, event_id))
        newest = entries[-1][0]
        horizon = newest - spec.within
        while entries and (entries[0][0] <= horizon or len(entries) > spec.at_least):
            del entries[0]
        if (ts_ms, event_id) not in entries or len(entries) < spec.at_least:
            return None
        if newest < track.until_ms:
            return None  # already active: one message per episode
        track.until_ms = newest + spec.hold
        first = entries[0][0]
        signal_id = digest32(name, group, str(newest), self.version)
        reason = (f"{len(entries)} {spec.description or 'matching events'} for {group} within "
                  f"{format_ms(spec.within)} (threshold {spec.at_least})")
        message = {
            "signal_id": signal_id,
            "signal": name,
            "key": group,
            "count": len(entries),
            "window": format_ms(spec.within),
            "first_at": _iso(first),
            "fired_at": _iso(newest),
            "active_until": _iso(track.until_ms),
            "trigger_event_id": event_id,
            "rulebook_version": self.version,
            "reasons": [reason],
        }
        value = {"since_ms": newest, "until_ms": track.until_ms, "count": len(entries),
                 "signal_id": signal_id, "reason": reason}
        return Fired(message, signal_key(name, group), value, ts_ms)
