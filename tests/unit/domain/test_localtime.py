"""The customer's own time zone: where it comes from, quiet hours and local-time conditions in
it (with daylight saving), and how it is stored in and merged between profiles."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent

import orjson
import pytest

from schemas.event import Event
from service.domain import Profile, Rulebook, RulebookError, decide, parse_rulebook
from service.domain.context_table import ContextTable
from service.domain.identity import merge_profiles
from service.domain.localtime import quiet_end, zone_named
from tests.unit.domain.replaykit import run_events

EventFactory = Callable[..., Event]

BOOK = dedent("""\
    version: "tz-1"
    actions:
      apology:
        channel: sms
        consent: exempt
        when: {event: {type: flight_delayed}}
      evening_offer:
        channel: web
        when:
          - event: {type: page_viewed}
          - {local_time: ["18:00", "23:00"]}
          - {local_day: [fri, sat]}
        payload: {at: "{local.time}", day: "{local.weekday}", zone: "{local.zone}"}
    contact_policy:
      quiet_hours: {sms: {start: "21:00", end: "08:00"}}
    """)


@pytest.fixture
def book() -> Rulebook:
    """Quiet hours on sms; a web offer on Friday and Saturday evenings, local time."""
    return parse_rulebook(BOOK, "tz.yaml")


def _outcomes(book: Rulebook, events: list[Event],
              context: dict[str, object] | None = None) -> list[tuple[str, str | None]]:
    replay = run_events(book, events, context)
    return [(d["outcome"], d["suppressed_by"]) for d in replay.decisions]


def test_utc_stamped_delay_respects_the_passengers_zone(book: Rulebook,
                                                        event: EventFactory) -> None:
    """A delay notice stamped 15:30Z for a Taipei passenger is 23:30 local,
    inside sms quiet hours, once the app told us the zone; without a zone the event's offset
    (UTC) is the fallback and it goes out."""
    zone = event("app_opened", at="2026-03-02T09:00:00+08:00", time_zone="Asia/Taipei")
    delay = event("flight_delayed", at="2026-03-02T15:30:00Z")
    assert _outcomes(book, [zone, delay]) == [("suppressed", "quiet_hours")]
    replay = run_events(book, [zone, delay])
    assert "customer's local time 23:30 (Asia/Taipei)" in replay.decisions[0]["reasons"][0]
    assert _outcomes(book, [event("flight_delayed", at="2026-03-02T15:30:00Z")]) == [
        ("sent", None)]


def test_identity_attribute_outranks_a_device_zone(book: Rulebook, event: EventFactory) -> None:
    """An `identified` event's time_zone (the account's) is not replaced by a later device's;
    among device zones the newest by event time wins, whatever the arrival order."""
    account = event("identified", at="2026-03-01T10:00:00Z", time_zone="Asia/Taipei")
    device = event("app_opened", at="2026-03-01T11:00:00Z", time_zone="Europe/Lisbon")
    profile = run_events(book, [account, device]).profiles["customer_id:c-1"]
    assert profile is not None and profile.tz_name == "Asia/Taipei"
    newer = event("app_opened", at="2026-03-01T12:00:00Z", time_zone="America/Chicago")
    older = event("app_opened", at="2026-03-01T08:00:00Z", time_zone="Europe/Lisbon")
    profile = run_events(book, [newer, older]).profiles["customer_id:c-1"]
    assert profile is not None and profile.tz_name == "America/Chicago"


def test_context_record_outranks_the_profile_and_is_read_as_of_the_event(
        book: Rulebook, event: EventFactory) -> None:
    """A `time_zone:<profile key>` context record beats the events' zones while it is in
    force; before its valid_from the profile's zone applies; it is not copied into the
    profile."""
    table = ContextTable()
    table.put("time_zone:customer_id:c-1", "Asia/Taipei", 1_772_460_000_000)  # 2026-03-02T14:00Z
    device = event("app_opened", at="2026-03-02T09:00:00Z", time_zone="Europe/London")
    before = event("flight_delayed", at="2026-03-02T13:30:00Z")  # London 13:30
    after = event("flight_delayed", at="2026-03-02T15:30:00Z")  # Taipei 23:30
    replay = run_events(book, [device, before, after], table)
    assert [(d["outcome"], d["suppressed_by"]) for d in replay.decisions] == [
        ("sent", None), ("suppressed", "quiet_hours")]
    profile = replay.profiles["customer_id:c-1"]
    assert profile is not None and profile.tz_name == "Europe/London"


def test_a_name_tzdata_does_not_know_is_ignored(book: Rulebook, event: EventFactory) -> None:
    """Unknown or unsafe zone names change nothing (the held zone stays, or the fallback)."""
    for bad in ("Mars/Olympus", "../etc/passwd", "", 42):
        profile = run_events(book, [event("app_opened", time_zone=bad)]).profiles[
            "customer_id:c-1"]
        assert profile is not None and profile.tz_name is None
    assert zone_named("Asia/Taipei") is not None and zone_named("/etc/localtime") is None


def test_quiet_hours_follow_daylight_saving(book: Rulebook, event: EventFactory) -> None:
    """Berlin springs forward on 2026-03-29: 06:30Z is 07:30 local (quiet) the day before and
    08:30 local (not quiet) that day; a fixed offset would call both 07:30."""
    zone = event("app_opened", at="2026-03-20T12:00:00Z", time_zone="Europe/Berlin")
    saturday = event("flight_delayed", at="2026-03-28T06:30:00Z")
    sunday = event("flight_delayed", at="2026-03-29T06:30:00Z")
    assert _outcomes(book, [zone, saturday]) == [("suppressed", "quiet_hours")]
    assert _outcomes(book, [zone, sunday]) == [("sent", None)]


def test_local_time_and_day_conditions(book: Rulebook, event: EventFactory) -> None:
    """local_time/local_day read the customer's zone: Friday 11:30Z is Friday 19:30 in Taipei
    (eligible) but Friday 11:30 in UTC; payload templates read local.* paths."""
    zone = event("app_opened", at="2026-03-06T01:00:00Z", time_zone="Asia/Taipei")
    view = event("page_viewed", at="2026-03-06T11:30:00Z")
    replay = run_events(book, [zone, view])
    [action] = replay.actions
    assert action["payload"] == {"at": "19:30", "day": "fri", "zone": "Asia/Taipei"}
    assert "customer's local day fri (Asia/Taipei) in fri, sat" in action["reasons"]
    assert run_events(book, [view]).actions == []
    sunday = event("page_viewed", at="2026-03-08T11:30:00Z")
    assert run_events(book, [zone, sunday]).actions == []


@pytest.mark.parametrize(("condition", "message"), [
    ('{local_time: ["25:00", "08:00"]}', 'when[0].local_time[0]: must be a clock time "HH:MM"'),
    ('{local_time: "21:00"}', "when[0].local_time: needs [from, to] clock times"),
    ('{local_time: ["08:00", "08:00"]}', "when[0].local_time: from and to are equal"),
    ("{local_day: [funday]}", "when[0].local_day: needs days of the week: mon, tue"),
    ("{local_day: [mon], eq: 1}", "when[0].local_day: a local_day condition takes no operators"),
    ("{value: local.season, eq: 1}", "'local.season' is not a local path"),
])
def test_bad_local_conditions_are_named(condition: str, message: str) -> None:
    """Malformed local-time conditions fail the rulebook with the field and what is wanted."""
    text = ('version: "t"\nactions:\n  a:\n    channel: web\n    when: [' + condition + "]\n")
    with pytest.raises(RulebookError) as caught:
        parse_rulebook(text, "r.yaml")
    assert message in str(caught.value)


def test_old_stored_profiles_read_and_new_ones_round_trip(book: Rulebook,
                                                          event: EventFactory) -> None:
    """A format-2 profile stored before zones existed reads as 'zone not known'; a held zone
    survives to_bytes/from_bytes and clone(); the stored form is unchanged when no zone."""
    stored = orjson.dumps({"v": 2, "k": "customer_id:c-1", "n": 1_772_445_600_000, "z": 540})
    old = Profile.from_bytes(stored)
    assert old.tz_name is None and old.tz_rank == 0 and old.tz_min == 540
    assert old.to_bytes() == stored
    profile = run_events(book, [event("app_opened", time_zone="Asia/Taipei")]).profiles[
        "customer_id:c-1"]
    assert profile is not None
    again = Profile.from_bytes(profile.to_bytes())
    assert (again.tz_name, again.tz_rank, again.tz_ms) == ("Asia/Taipei", 1, profile.tz_ms)
    assert again == profile and profile.clone() == profile


def test_merge_keeps_the_stronger_zone(book: Rulebook, event: EventFactory) -> None:
    """Merging an alias keeps the zone of the higher-ranked source, whichever side has it."""
    known = decide(None, event("identified", customer="c-1", time_zone="Asia/Taipei"), {},
                   book).profile
    alias = decide(None, event("app_opened", customer="c-2", time_zone="Europe/Paris"), {},
                   book).profile
    assert known is not None and alias is not None
    merged, _ = merge_profiles(known, alias.key, alias, book)
    assert merged.tz_name == "Asia/Taipei"
    other_way, _ = merge_profiles(alias, known.key, known, book)
    assert other_way.tz_name == "Asia/Taipei"


def test_quiet_end_of_a_wall_time_the_clock_skips() -> None:
    """Quiet 00:00-02:30 in Berlin on the spring-forward night: 02:30 does not exist; the quiet
    period ends at 03:00 local (01:00Z), the gap's end, not an hour later."""
    berlin = zone_named("Europe/Berlin")
    start = 1_774_744_200_000  # 2026-03-29T00:30:00Z = 01:30 CET, quiet
    assert quiet_end(start, (0, 150), berlin, 0) == 1_774_746_000_000  # 01:00:00Z


def test_quiet_end_when_the_clock_falls_back_out_of_the_window() -> None:
    """Quiet 02:15-00:00 in Berlin on the fall-back night: at 02:59 CEST it is quiet; at 01:00Z
    the clock goes back to 02:00 CET, before the window's start: the quiet period ends there
    (found by the deferral property), not at midnight."""
    berlin = zone_named("Europe/Berlin")
    assert quiet_end(1_792_889_999_000, (135, 0), berlin, 0) == 1_792_890_000_000
