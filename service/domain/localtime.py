"""The customer's own time zone, their local clock at an event, and quiet hours in it.

Where the zone comes from, highest precedence first (examples/README.md documents it):

1. a context record `time_zone:<profile key>` (e.g. `time_zone:customer_id:c-42`) in force at
   the event's time: reference data from the system of record (a CRM), read like stock, so a
   correction or a deletion applies from its `valid_from` on and is not copied into the profile;
2. `properties.time_zone` of an `identified` event: the account's setting, sent by the identity
   service at login or registration (the identity attribute);
3. `properties.time_zone` of any other event: the zone a device reports;
4. the UTC offset of the customer's newest event (no daylight saving: a fallback only).

Sources 2 and 3 are held in the profile (`tz_name`, with their rank and event time): a source
never replaces one of higher rank, and within a rank the newest by event time wins. A value that
is not an IANA zone name known to tzdata is ignored. Local time is computed with `zoneinfo`, so
quiet hours follow daylight saving; the fallback offset keeps the arithmetic it always had.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.event import Event
from service.domain.profile import Profile

__all__ = [
    "RANK_DEVICE",
    "RANK_IDENTITY",
    "WEEKDAYS",
    "ZONE_CONTEXT_PREFIX",
    "ZONE_PROPERTY",
    "customer_zone",
    "is_quiet",
    "iso_at",
    "local_minute",
    "local_moment",
    "merge_zone",
    "note_zone",
    "quiet_end",
    "zone_label",
    "zone_named",
]

ZONE_PROPERTY = "time_zone"
ZONE_CONTEXT_PREFIX = "time_zone:"
RANK_DEVICE = 1  # properties.time_zone of any event
RANK_IDENTITY = 2  # properties.time_zone of an `identified` event
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTE_MS = 60_000


@lru_cache(maxsize=1024)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone `name` (e.g. "Asia/Taipei"), or None when tzdata does not know it."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@lru_cache(maxsize=256)
def _fixed(offset_min: int) -> timezone:
    return timezone(timedelta(minutes=offset_min))


def note_zone(profile: Profile, event: Event) -> None:
    """Hold the zone an event's `properties.time_zone` names, by the precedence above."""
    name = event.properties.get(ZONE_PROPERTY)
    if not isinstance(name, str) or zone_named(name) is None:
        return
    rank = RANK_IDENTITY if event.type == "identified" else RANK_DEVICE
    if rank > profile.tz_rank or (rank == profile.tz_rank and event.ts_ms >= profile.tz_ms):
        profile.tz_name, profile.tz_rank, profile.tz_ms = name, rank, event.ts_ms


def merge_zone(merged: Profile, other: Profile) -> None:
    """Fold `other`'s held zone into `merged`: higher rank, then newer, then the smaller name
    (so the result does not depend on which side is which)."""
    if other.tz_name is None:
        return
    mine = (merged.tz_rank, merged.tz_ms, merged.tz_name or "")
    theirs = (other.tz_rank, other.tz_ms, other.tz_name)
    if merged.tz_name is None or theirs > mine:
        merged.tz_name, merged.tz_rank, merged.tz_ms = other.tz_name, other.tz_rank, other.tz_ms


def customer_zone(profile: Profile, context: Mapping[str, Any]) -> tuple[tzinfo | None, str]:
    """The customer's zone and its name; (None, "") for the fallback offset (the newest event's),
    which callers handle with plain arithmetic."""
    if context:
        name = context.get(ZONE_CONTEXT_PREFIX + profile.key)
        if isinstance(name, str):
            zone = zone_named(name)
            if zone is not None:
                return zone, name
    name = profile.tz_name
    if name is not None:
        zone = zone_named(name)
        if zone is not None:
            return zone, name
    return None, ""


def zone_label(name: str, offset_min: int) -> str:
    """The zone as reasons show it: its name, or "UTC+09:00" for the fallback offset."""
    if name:
        return name
    sign = "-" if offset_min < 0 else "+"
    return f"UTC{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


def local_moment(ts_ms: int, zone: tzinfo | None, offset_min: int) -> datetime:
    """The wall-clock time at `ts_ms` in `zone` (the fixed offset when None)."""
    return datetime.fromtimestamp(ts_ms / 1000, zone if zone is not None else _fixed(offset_min))


def local_minute(ts_ms: int, zone: tzinfo | None, offset_min: int) -> int:
    """Minute of the local day (0..1439) at `ts_ms`."""
    if zone is None:
        return (ts_ms // _MINUTE_MS + offset_min) % 1440
    moment = datetime.fromtimestamp(ts_ms // 1000, zone)
    return moment.hour * 60 + moment.minute


def is_quiet(minute: int, window: tuple[int, int]) -> bool:
    """Whether local minute-of-day `minute` lies in [start, end), wrapping past midnight."""
    start, end = window
    return start <= minute < end if start < end else (minute >= start or minute < end)


def _instant(day: date, minute: int, zone: tzinfo, fold: int) -> int:
    wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, fold=fold,
                    tzinfo=zone)
    return int(wall.timestamp()) * 1000


def quiet_end(ts_ms: int, window: tuple[int, int], zone: tzinfo | None, offset_min: int) -> int:
    """The first instant (epoch ms, on a local minute) after `ts_ms` at which the local time is
    outside `window`; `ts_ms` itself must be quiet. Daylight saving: when the end's wall time
    occurs twice, its first occurrence; when a spring-forward gap swallows it, the gap's end;
    when the clock falls back out of the window (back past its start), that instant."""
    tz = zone if zone is not None else _fixed(offset_min)
    today = datetime.fromtimestamp(ts_ms // 1000, tz).date()
    end = window[1]
    candidates: set[int] = set()
    for day in (today, today + timedelta(days=1), today + timedelta(days=2)):
        early, late = _instant(day, end, tz, 1), _instant(day, end, tz, 0)
        candidates.update((early, late))
        if early < late:  # a gap: the wall time does not exist; the exit lies in between
            candidates.update(range(early + _MINUTE_MS, late, _MINUTE_MS))
    for instant in sorted(candidates):
        if instant > ts_ms and not is_quiet(local_minute(instant, zone, offset_min), window):
            change = _offset_change(ts_ms, instant, tz) if zone is not None else None
            if change is not None and not is_quiet(local_minute(change, zone, offset_min),
                                                   window):
                return change
            return instant
    raise ValueError("quiet hours without an end")  # start == end is refused by the rulebook


def _offset_change(after_ms: int, before_ms: int, tz: tzinfo) -> int | None:
    """The first minute in (after_ms, before_ms) with another UTC offset than at after_ms
    (one transition at most lies within the two days searched), or None."""
    def offset(ms: int) -> timedelta | None:
        return datetime.fromtimestamp(ms // 1000, tz).utcoffset()

    first = offset(after_ms)
    if offset(before_ms) == first:
        return None
    low, high = after_ms // _MINUTE_MS, before_ms // _MINUTE_MS  # offset(high) differs
    while high - low > 1:
        middle = (low + high) // 2
        if offset(middle * _MINUTE_MS) == first:
            low = middle
        else:
            high = middle
    found = high * _MINUTE_MS
    return found if after_ms < found < before_ms else None


def iso_at(ts_ms: int, zone: tzinfo | None, offset_min: int) -> str:
    """ISO-8601 with the local UTC offset at that instant, e.g. 2026-03-02T08:00:00+08:00."""
    return local_moment(ts_ms, zone, offset_min).isoformat()
