"""Per-channel checks of an action: quiet hours in the customer's own zone (suppress or defer),
and what the audit says about a channel preference list (`channels: [sms, email]`).

policy.py's `choose_channel` tries an action's channels in order; these helpers say whether a
channel is in its quiet hours now, when a deferred send may go (`not_before`), and how the
skipped channels are written into reasons and audit records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from service.domain.conditions import Env
from service.domain.localtime import (
    customer_zone,
    is_quiet,
    iso_at,
    local_minute,
    quiet_end,
    zone_label,
)

__all__ = ["Deferral", "Skip", "channel_fields", "channel_notes", "clock", "deferral",
           "quiet_now"]


class Skip(NamedTuple):
    """A channel of a preference list that was not used, and why (a suppression reason)."""

    channel: str
    reason: str
    why: str


class Deferral(NamedTuple):
    """A send held back by quiet hours: `ms` (epoch) and `at` (ISO-8601, local offset)."""

    ms: int
    at: str
    why: str


def clock(minute: int) -> str:
    """Minute of the day -> "HH:MM"."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _describe(channel: str, window: tuple[int, int], minute: int, name: str,
              offset_min: int) -> str:
    return (f"quiet hours {clock(window[0])}-{clock(window[1])} on {channel}; customer's "
            f"local time {clock(minute)} ({zone_label(name, offset_min)})")


def quiet_now(channel: str, window: tuple[int, int], env: Env) -> str | None:
    """Why `channel` is in its quiet hours at the event, in the customer's zone; None if not."""
    profile = env.profile
    zone, name = customer_zone(profile, env.context)
    minute = local_minute(env.event.ts_ms, zone, profile.tz_min)
    if not is_quiet(minute, window):
        return None
    return _describe(channel, window, minute, name, profile.tz_min)


def deferral(channel: str, window: tuple[int, int], env: Env, expires_ms: int
             ) -> tuple[Deferral | None, str | None]:
    """For a channel whose quiet hours defer: (None, None) outside them; (the deferral, None)
    inside; (None, why) when the action would expire before they end (then it is suppressed)."""
    profile = env.profile
    ts = env.event.ts_ms
    zone, name = customer_zone(profile, env.context)
    minute = local_minute(ts, zone, profile.tz_min)
    if not is_quiet(minute, window):
        return None, None
    end = quiet_end(ts, window, zone, profile.tz_min)
    at = iso_at(end, zone, profile.tz_min)
    why = _describe(channel, window, minute, name, profile.tz_min)
    if end >= ts + expires_ms:
        return None, f"{why}; it would expire before they end at {at}"
    return Deferral(end, at, why), None


def channel_notes(skipped: Sequence[Skip], later: Deferral | None) -> list[str]:
    """Reason lines: each skipped channel, and the deferral."""
    lines = [f"{skip.channel} skipped ({skip.reason}): {skip.why}" for skip in skipped]
    if later is not None:
        lines.append(f"deferred to {later.at}: {later.why}")
    return lines


def channel_fields(skipped: Sequence[Skip], later: Deferral | None) -> dict[str, Any]:
    """Audit record fields: `skipped_channels` and `not_before`."""
    out: dict[str, Any] = {}
    if skipped:
        out["skipped_channels"] = [{"channel": s.channel, "reason": s.reason, "why": s.why}
                                   for s in skipped]
    if later is not None:
        out["not_before"] = later.at
    return out
