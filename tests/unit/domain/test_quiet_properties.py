"""Hypothesis properties of quiet hours in the customer's own zone, across daylight-saving
transitions: decide()'s verdict against a direct zoneinfo computation, and deferral times
against a minute-by-minute search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import Rulebook, parse_rulebook
from tests.events import make_event
from tests.unit.domain.replaykit import run_events

#: zones with daylight saving of one hour, of 30 minutes (Lord Howe), in the south, 45-minute
#: offsets (Chatham), none at all (Taipei, Kolkata)
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
         "Pacific/Chatham", "Asia/Taipei", "Asia/Kolkata", "Europe/London")
_HOUR_MS = 3_600_000


def _transitions() -> list[int]:
    """Every UTC-offset change of ZONES in 2026 (epoch ms), found hour by hour."""
    out = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name in ZONES:
        zone = ZoneInfo(name)
        before = start.astimezone(zone).utcoffset()
        for hour in range(1, 365 * 24):
            moment = start + timedelta(hours=hour)
            offset = moment.astimezone(zone).utcoffset()
            if offset != before:
                out.append(int(moment.timestamp()) * 1000)
                before = offset
    return out


TRANSITIONS = _transitions()
# clock times around typical transition hours (01:00-03:00 local) and ordinary quiet hours
_CLOCKS = ["00:00", "00:30", "01:00", "01:45", "02:00", "02:15", "02:30", "03:00", "03:30",
           "06:00", "07:00", "08:00", "21:00", "22:00", "23:30"]


@lru_cache(maxsize=512)
def _book(start: str, end: str, mode: str) -> Rulebook:
    return parse_rulebook(
        f'version: "q"\nactions:\n  ping:\n    channel: sms\n    consent: exempt\n'
        f"    when: {{event: {{type: ping}}}}\n    expires: 3d\ncontact_policy:\n"
        f'  quiet_hours: {{sms: {{start: "{start}", end: "{end}", mode: {mode}}}}}\n', "q.yaml")


def _quiet(ms: int, zone: str, start: str, end: str) -> bool:
    """The oracle: local wall time by astimezone (not the code's fromtimestamp), in [start, end)."""
    local = datetime.fromtimestamp(ms // 1000, UTC).astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    first, last = (int(t[:2]) * 60 + int(t[3:]) for t in (start, end))
    return first <= minute < last if first < last else (minute >= first or minute < last)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


cases = st.tuples(
    st.sampled_from(ZONES),
    st.sampled_from(TRANSITIONS),
    st.integers(-30 * _HOUR_MS, 30 * _HOUR_MS).map(lambda ms: ms - ms % 1000),
    st.sampled_from(_CLOCKS),
    st.sampled_from(_CLOCKS),
).filter(lambda case: case[3] != case[4])


def _decide(zone: str, at_ms: int, start: str, end: str, mode: str) -> dict[str, object]:
    told = make_event("app_opened", at=_iso(at_ms - 40 * _HOUR_MS), time_zone=zone)
    replay = run_events(_book(start, end, mode), [told, make_event("ping", at=_iso(at_ms))])
    [record] = replay.decisions
    return record


@settings(max_examples=150, deadline=None)
@given(cases)
def test_quiet_hours_verdict_matches_zoneinfo(case: tuple[str, int, int, str, str]) -> None:
    """Around every 2026 transition of zones with and without daylight saving, an sms is
    suppressed for quiet_hours exactly when zoneinfo puts the customer's wall clock inside the
    window."""
    zone, transition, shift, start, end = case
    at_ms = transition + shift
    record = _decide(zone, at_ms, start, end, "suppress")
    suppressed = record["suppressed_by"] == "quiet_hours"
    assert suppressed == _quiet(at_ms, zone, start, end)


@settings(max_examples=120, deadline=None)
@given(cases)
def test_deferral_is_the_first_minute_outside_quiet_hours(
        case: tuple[str, int, int, str, str]) -> None:
    """A deferred send's not_before lies after the event, outside the quiet hours, and is the
    earliest such minute (every minute boundary between the event and it is quiet); its UTC
    offset is the zone's offset at that instant."""
    zone, transition, shift, start, end = case
    at_ms = transition + shift
    record = _decide(zone, at_ms, start, end, "defer")
    if not _quiet(at_ms, zone, start, end):
        assert "not_before" not in record and record["outcome"] == "sent"
        return
    moment = datetime.fromisoformat(str(record["not_before"]))
    nb_ms = int(moment.timestamp() * 1000)
    assert nb_ms > at_ms and not _quiet(nb_ms, zone, start, end)
    assert moment.utcoffset() == moment.astimezone(ZoneInfo(zone)).utcoffset()
    minute = (at_ms // 60_000 + 1) * 60_000
    while minute < nb_ms:
        assert _quiet(minute, zone, start, end), f"{_iso(minute)} is already outside"
        minute += 60_000
