"""Conditions and paths on the customer's local clock at the event (their own zone, with
daylight saving; localtime.py says where the zone comes from).

    - {local_time: ["09:00", "18:00"]}    # from 09:00 (inclusive) to 18:00; may wrap midnight
    - {local_day: [sat, sun]}             # one of these local days of the week
    - {value: local.hour, gte: 18}        # any operator on a local path

Paths: `local.time` ("23:30"), `local.hour` (0-23), `local.minute` (minute of the day),
`local.weekday` (mon..sun), `local.date` ("2026-03-02"), `local.zone` (the zone's name, or
"UTC+09:00" for the fallback offset). The two conditions are entries of subjects.py's table;
conditions.py reads the paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from service.domain.cond import Cond, Env
from service.domain.fields import SpecError
from service.domain.localtime import (
    WEEKDAYS,
    customer_zone,
    is_quiet,
    local_moment,
    zone_label,
)

if TYPE_CHECKING:
    from service.domain.conditions import ConditionCompiler

__all__ = ["CLOCK_PATTERN", "LOCAL_PATHS", "local_day", "local_getter", "local_time"]

CLOCK_PATTERN = r"^([01]\d|2[0-3]):([0-5]\d)$"  # "HH:MM" (also in the rulebook's JSON Schema)
_CLOCK = re.compile(CLOCK_PATTERN)


def _moment(env: Env) -> tuple[datetime, str]:
    profile = env.profile
    zone, name = customer_zone(profile, env.context)
    return local_moment(env.event.ts_ms, zone, profile.tz_min), zone_label(name, profile.tz_min)


LOCAL_PATHS: dict[str, Callable[[datetime, str], str | int]] = {
    "local.time": lambda at, _: f"{at.hour:02d}:{at.minute:02d}",
    "local.hour": lambda at, _: at.hour,
    "local.minute": lambda at, _: at.hour * 60 + at.minute,
    "local.weekday": lambda at, _: WEEKDAYS[at.weekday()],
    "local.date": lambda at, _: at.date().isoformat(),
    "local.zone": lambda _, label: label,
}


def local_getter(path: str) -> Callable[[Env], str | int]:
    """The function of the env a `local.*` path reads."""
    read = LOCAL_PATHS.get(path)
    if read is None:
        raise SpecError((), f"{path!r} is not a local path (" + ", ".join(LOCAL_PATHS) + ")")

    def get(env: Env) -> str | int:
        return read(*_moment(env))

    return get


def _minute(text: object, index: int) -> int:
    match = _CLOCK.match(text) if isinstance(text, str) else None
    if match is None:
        raise SpecError((index,), 'must be a clock time "HH:MM"')
    return int(match.group(1)) * 60 + int(match.group(2))


def local_time(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    """A `local_time: [from, to]` condition."""
    if not isinstance(arg, list) or len(arg) != 2:
        raise SpecError((), 'needs [from, to] clock times, e.g. ["09:00", "18:00"]')
    window = (_minute(arg[0], 0), _minute(arg[1], 1))
    if window[0] == window[1]:
        raise SpecError((), "from and to are equal")
    text = f"local time in {arg[0]}-{arg[1]}"

    def test(env: Env) -> bool:
        at, _ = _moment(env)
        return is_quiet(at.hour * 60 + at.minute, window)

    def explain(env: Env) -> list[str]:
        at, label = _moment(env)
        return [f"customer's local time {at.hour:02d}:{at.minute:02d} ({label}) in "
                f"{arg[0]}-{arg[1]}"]

    return Cond(test, explain, text)


def local_day(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    """A `local_day: [sat, sun]` (or one day) condition."""
    days = arg if isinstance(arg, list) else [arg]
    if not days or any(day not in WEEKDAYS for day in days):
        raise SpecError((), "needs days of the week: " + ", ".join(WEEKDAYS))
    wanted = frozenset(WEEKDAYS.index(day) for day in days)
    listed = ", ".join(str(day) for day in days)

    def test(env: Env) -> bool:
        return _moment(env)[0].weekday() in wanted

    def explain(env: Env) -> list[str]:
        at, label = _moment(env)
        return [f"customer's local day {WEEKDAYS[at.weekday()]} ({label}) in {listed}"]

    return Cond(test, explain, f"local day in {listed}")
