"""Closing the loop per customer: responses and conversions credited to the actions behind them.

Every action a customer was decided for, sent or held out by an experiment, is booked in the
profile's `recent` list as `[ts, action, action_id]` (sent) or `[ts, action, action_id, flags]`
with `HELD_OUT`; `CREDITED` is set once a conversion has been credited to it.

- An `action_response` event (`shown`, `accepted`, `declined`, `converted`) names the action
  (by `action_id`, else by `action`); it is audited as a `response` record.
- A conversion (an event matching the rulebook's `attribution.conversions`, e.g. any
  `purchase`) within `attribution.window` after an action is credited to the latest such
  action not yet credited (last touch), on any channel: an online offer followed by a purchase
  in the store counts. Each action is credited at most once, and a redelivered conversion is a
  duplicate event, so it credits nothing. Held-out decisions are credited the same way: their
  conversion rate is the control group's, which is what the treated rate is compared with
  (`touchflow report`).

Pure functions over the profile: the worker and replay call them from `decide()`.
"""

from __future__ import annotations

from typing import Any

from schemas.event import Event
from schemas.vocabulary import Arm, RecordKind, RecordOutcome, Response
from service.domain.audit import audit_record
from service.domain.fields import EventMatch, digest32, format_ms
from service.domain.profile import Profile

__all__ = [
    "CREDITED", "HELD_OUT", "AttributionPolicy", "arm_of", "attribute", "find_booked",
    "response_record",
]

HELD_OUT = 1
CREDITED = 2


class AttributionPolicy:
    """The rulebook's `attribution` section, compiled."""

    __slots__ = ("actions", "match", "window")

    def __init__(self, window: int, match: EventMatch, actions: frozenset[str] | None) -> None:
        self.window = window
        self.match = match
        self.actions = actions  # None: every action can be credited


def _flags(entry: list[Any]) -> int:
    return int(entry[3]) if len(entry) > 3 else 0


def arm_of(entry: list[Any] | None) -> Arm:
    """`holdout` for a held-out decision, else `treated` (a response implies it was sent)."""
    return "holdout" if entry is not None and _flags(entry) & HELD_OUT else "treated"


def find_booked(profile: Profile, action_id: str) -> list[Any] | None:
    """The `recent` entry of the action with this id, if still remembered."""
    for entry in profile.recent:
        if entry[2] == action_id:
            return entry
    return None


def _record(profile: Profile, kind: RecordKind, outcome: RecordOutcome, event: Event,
            version: str, action: str, channel: str | None, action_id: str | None, arm: Arm,
            reasons: list[str]) -> dict[str, Any]:
    return audit_record(
        digest32(profile.key, kind, action_id or action, event.event_id, version), kind,
        profile.customer_id, event.event_id, version, event.occurred_at, outcome, reasons,
        action=action, channel=channel, action_id=action_id, arm=arm)


def response_record(profile: Profile, event: Event, version: str, action: str,
                    channel: str | None, entry: list[Any] | None, response: Response
                    ) -> dict[str, Any]:
    """The audit record of one `action_response`."""
    action_id = entry[2] if entry is not None else None
    arm = arm_of(entry)
    via = f" on {event.channel}" if event.channel else ""
    return _record(profile, "response", response, event, version, action, channel, action_id,
                   arm, [f"customer responded {response}{via} to {action} ({arm})"])


def _lag(millis: int) -> str:
    if millis >= 86_400_000:
        return f"{millis / 86_400_000:.1f}d"
    if millis >= 3_600_000:
        return f"{millis / 3_600_000:.1f}h"
    return f"{max(millis, 0) // 60_000}m"


def attribute(profile: Profile, event: Event, policy: AttributionPolicy, version: str,
              channels: dict[str, str]) -> dict[str, Any] | None:
    """Credit the conversion `event` to the latest uncredited action within the window before
    it; mark that action credited and return the audit record (None: nothing to credit)."""
    ts = event.ts_ms
    window = policy.window
    scope = policy.actions
    best: list[Any] | None = None
    for entry in profile.recent:
        booked = entry[0]
        if booked > ts or ts - booked > window or _flags(entry) & CREDITED:
            continue
        if scope is not None and entry[1] not in scope:
            continue
        if best is None or booked >= best[0]:
            best = entry
    if best is None:
        return None
    flags = _flags(best) | CREDITED
    if len(best) > 3:
        best[3] = flags
    else:
        best.append(flags)
    name = str(best[1])
    arm = arm_of(best)
    lag = _lag(ts - int(best[0]))
    return _record(
        profile, "attribution", "converted", event, version, name, channels.get(name),
        str(best[2]), arm,
        [f"{event.type} on {event.channel} {lag} after {name} ({arm}); last touch within "
         f"{format_ms(window)}"],
    )
