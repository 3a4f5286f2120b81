"""Channel preference lists (`channels: [sms, email]`) and quiet hours that defer
(`not_before`): which channel is used, what the audit says about the others, and the wire
fields consumers read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from textwrap import dedent
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from schemas.event import Event
from schemas.models import Action, DecisionRecord
from service.domain import Rulebook, RulebookError, parse_rulebook
from tests.events import make_event
from tests.unit.domain.replaykit import run_events

EventFactory = Callable[..., Event]

BOOK = dedent("""\
    version: "ch-1"
    actions:
      apology:
        channels: [sms, email, mobile]
        when: {event: {type: flight_delayed}}
        payload: {flight: "{event.properties.flight}"}
        expires: 12h
        cooldown: 1d
    contact_policy:
      quiet_hours:
        sms: {start: "21:00", end: "08:00", mode: defer}
        email: {start: "22:00", end: "07:00"}
      consent_by_channel: {sms: opt_in}
    """)


@pytest.fixture
def book() -> Rulebook:
    """sms (opt-in, quiet hours defer), then e-mail (quiet hours suppress), then mobile."""
    return parse_rulebook(BOOK, "ch.yaml")


def _grant(event: EventFactory, channel: str, at: str = "2026-03-02T00:00:00Z") -> Event:
    return event("consent_changed", at=at, props={"channel": channel, "granted": True})


def _check_wire(actions: list[dict[str, object]], decisions: list[dict[str, object]]) -> None:
    TypeAdapter(list[Action]).validate_python(actions)
    TypeAdapter(list[DecisionRecord]).validate_python(decisions)


def test_first_consented_channel_is_used_and_the_skip_is_audited(book: Rulebook,
                                                                 event: EventFactory) -> None:
    """No sms consent (opt-in): the apology goes by e-mail; the record says sms was skipped
    for no_consent, and its reasons say so too."""
    replay = run_events(book, [event("flight_delayed", at="2026-03-02T12:00:00Z", flight="TF1")])
    [action] = replay.actions
    [record] = replay.decisions
    assert action["channel"] == "email" and "not_before" not in action
    assert record["channel"] == "email" and record["outcome"] == "sent"
    assert record["skipped_channels"] == [{
        "channel": "sms", "reason": "no_consent",
        "why": "no consent for channel sms: never given (opt-in)"}]
    assert record["reasons"][0].startswith("sms skipped (no_consent): no consent for channel sms")
    _check_wire(replay.actions, replay.decisions)


def test_consented_channel_outside_quiet_hours_goes_first(book: Rulebook,
                                                          event: EventFactory) -> None:
    """With sms consent at noon: sms, no skipped channels, no not_before."""
    replay = run_events(book, [_grant(event, "sms"),
                               event("flight_delayed", at="2026-03-02T12:00:00Z")])
    [action] = replay.actions
    assert action["channel"] == "sms" and "not_before" not in action
    assert "skipped_channels" not in replay.decisions[0]


def test_deferrable_channel_waits_only_when_nothing_else_can_go(book: Rulebook,
                                                                event: EventFactory) -> None:
    """21:30 UTC: sms is in its (deferring) quiet hours, e-mail is not yet: e-mail now, sms
    audited as skipped for quiet_hours. 23:30: e-mail is quiet too, mobile has no quiet hours:
    mobile now. With mobile consent withdrawn as well, sms goes with not_before 08:00."""
    grant = _grant(event, "sms")
    replay = run_events(book, [grant, event("flight_delayed", at="2026-03-02T21:30:00Z")])
    assert [a["channel"] for a in replay.actions] == ["email"]
    [skip] = replay.decisions[0]["skipped_channels"]
    assert skip["channel"] == "sms" and skip["reason"] == "quiet_hours"
    assert "it would wait until 2026-03-03T08:00:00+00:00" in skip["why"]
    late = event("flight_delayed", at="2026-03-02T23:30:00Z")
    replay = run_events(book, [grant, late])
    assert [a["channel"] for a in replay.actions] == ["mobile"]
    assert [s["channel"] for s in replay.decisions[0]["skipped_channels"]] == ["sms", "email"]
    withdraw = event("consent_changed", at="2026-03-02T00:00:00Z",
                     props={"channel": "mobile", "granted": False})
    replay = run_events(book, [grant, withdraw, late])
    [action] = replay.actions
    assert action["channel"] == "sms"
    assert action["not_before"] == "2026-03-03T08:00:00+00:00"
    record = replay.decisions[0]
    assert record["not_before"] == action["not_before"] and record["outcome"] == "sent"
    assert [s["channel"] for s in record["skipped_channels"]] == ["email", "mobile"]
    assert any(line.startswith("deferred to 2026-03-03T08:00:00+00:00: quiet hours 21:00-08:00")
               for line in action["reasons"])
    _check_wire(replay.actions, replay.decisions)


def test_no_usable_channel_suppresses_with_the_first_channels_reason(
        book: Rulebook, event: EventFactory) -> None:
    """Every channel refused: suppressed_by is the preferred channel's reason and the record
    lists all three."""
    refusals = [event("consent_changed", at="2026-03-02T00:00:00Z",
                      props={"channel": name, "granted": False}) for name in ("email", "mobile")]
    replay = run_events(book, [*refusals, event("flight_delayed", at="2026-03-02T12:00:00Z")])
    assert replay.actions == []
    [record] = replay.decisions
    assert record["suppressed_by"] == "no_consent" and record["channel"] == "sms"
    assert [s["channel"] for s in record["skipped_channels"]] == ["sms", "email", "mobile"]
    assert record["reasons"][0] == ("no channel could be used (sms: no_consent, email: "
                                    "no_consent, mobile: no_consent)")


def test_a_stop_that_is_not_about_the_channel_ends_the_search(book: Rulebook,
                                                              event: EventFactory) -> None:
    """A cool-down (checked before consent) stops the action on its preferred channel: no other
    channel is tried; a contact cap (checked after) stops it on the first channel that passed
    consent and quiet hours, with the channels skipped before it audited."""
    first = event("flight_delayed", at="2026-03-02T12:00:00Z")
    second = event("flight_delayed", at="2026-03-02T13:00:00Z")
    replay = run_events(book, [first, second])
    assert replay.audit("c-1")[1][2:] == ("suppressed", "cooldown")
    assert replay.decisions[1]["channel"] == "sms"
    assert "skipped_channels" not in replay.decisions[1]
    capped = parse_rulebook(BOOK.replace("cooldown: 1d", "cooldown: 1m") + "  cap: {max: 1, "
                            "within: 1d}\n", "cap.yaml")
    replay = run_events(capped, [first, second])
    record = replay.decisions[1]
    assert (record["suppressed_by"], record["channel"]) == ("contact_cap", "email")
    assert [s["channel"] for s in record["skipped_channels"]] == ["sms"]


def test_single_channel_deferral_and_expiry(event: EventFactory) -> None:
    """A single-channel action deferred by quiet hours goes with not_before in the customer's
    zone (DST offset of that instant); one that would expire first is suppressed instead."""
    text = dedent("""\
        version: "d-1"
        actions:
          notice:
            channel: sms
            consent: exempt
            when: {event: {type: flight_delayed}}
            expires: EXPIRES
        contact_policy:
          quiet_hours: {sms: {start: "21:00", end: "08:00", mode: defer}}
        """)
    zone = event("app_opened", at="2026-03-27T12:00:00Z", time_zone="Europe/Berlin")
    night = event("flight_delayed", at="2026-03-28T22:30:00Z")  # 23:30 CET, DST starts 02:00
    replay = run_events(parse_rulebook(text.replace("EXPIRES", "1d")), [zone, night])
    [action] = replay.actions
    assert action["not_before"] == "2026-03-29T08:00:00+02:00"
    assert datetime.fromisoformat(action["not_before"]) < datetime.fromisoformat(
        action["expires_at"])
    short = run_events(parse_rulebook(text.replace("EXPIRES", "2h")), [zone, night])
    assert short.actions == []
    [record] = short.decisions
    assert record["suppressed_by"] == "quiet_hours"
    assert "it would expire before they end at 2026-03-29T08:00:00+02:00" in record["reasons"][0]


@pytest.mark.parametrize(("action", "message"), [
    ("channel: sms\n    channels: [sms, email]", "channel: give either channel or channels"),
    ("when: {event: {type: x}}", "channel: needs a channel (or channels"),
    ("channels: [sms, sms]", "channels: names a channel twice"),
    ("channels: []", "channels: List should have at least 1 item"),
    ("channels: [pigeon]", "channels[0]: Input should be"),
])
def test_bad_channel_lists_are_named(action: str, message: str) -> None:
    """channel and channels are exclusive, one is needed, a list names known channels once."""
    body = action if action.startswith("when") else action + "\n    when: {event: {type: x}}"
    text = 'version: "t"\nactions:\n  a:\n    ' + body + "\n"
    with pytest.raises(RulebookError) as caught:
        parse_rulebook(text, "r.yaml")
    assert message in str(caught.value)


def test_bad_quiet_hours_mode_is_named() -> None:
    """mode accepts suppress or defer only."""
    text = dedent("""\
        version: "t"
        actions: {a: {channel: sms, when: {event: {type: x}}}}
        contact_policy: {quiet_hours: {sms: {start: "21:00", end: "08:00", mode: later}}}
        """)
    with pytest.raises(RulebookError) as caught:
        parse_rulebook(text, "r.yaml")
    assert "quiet_hours.sms.mode: Input should be 'suppress' or 'defer'" in str(caught.value)


_BOOK = parse_rulebook(BOOK, "ch.yaml")
_DEFAULTS = {"sms": False, "email": True, "mobile": True}  # sms is opt-in
_QUIET = {"sms": (21 * 60, 8 * 60), "email": (22 * 60, 7 * 60)}


def _is_quiet(channel: str, minute: int) -> bool:
    window = _QUIET.get(channel)
    return window is not None and (minute >= window[0] or minute < window[1])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["sms", "email", "mobile"]), st.booleans()),
       st.integers(0, 24 * 60 - 1), st.sampled_from(["Asia/Taipei", "America/New_York", None]))
def test_the_channel_used_is_the_first_allowed_one(grants: dict[str, bool], minute: int,
                                                   zone: str | None) -> None:
    """For any consent state and local time: the first consented channel outside its quiet
    hours goes now; else the first consented one whose quiet hours defer goes with not_before;
    else the action is suppressed with the first channel's reason; every channel before the
    one used (bar a deferred one) is listed as skipped."""
    events = [make_event("consent_changed", at="2026-03-01T00:00:00Z",
                         props={"channel": name, "granted": granted})
              for name, granted in grants.items()]
    if zone is not None:
        events.append(make_event("app_opened", at="2026-03-01T01:00:00Z", time_zone=zone))
    local = datetime(2026, 3, 2, minute // 60, minute % 60,
                     tzinfo=ZoneInfo(zone) if zone else UTC)
    events.append(make_event("flight_delayed", at=local.isoformat()))
    [record] = run_events(_BOOK, events).decisions
    order = ["sms", "email", "mobile"]
    allowed = {c: grants.get(c, _DEFAULTS[c]) for c in order}
    now = [c for c in order if allowed[c] and not _is_quiet(c, minute)]
    deferrable = [c for c in order if allowed[c] and c == "sms" and _is_quiet(c, minute)]
    skipped = [s["channel"] for s in record.get("skipped_channels", [])]
    if now:
        assert (record["outcome"], record["channel"]) == ("sent", now[0])
        assert "not_before" not in record
        assert skipped == order[:order.index(now[0])]
    elif deferrable:
        assert (record["outcome"], record["channel"]) == ("sent", "sms")
        assert datetime.fromisoformat(record["not_before"]) > local
        assert skipped == ["email", "mobile"]
    else:
        reason = "no_consent" if not allowed["sms"] else "quiet_hours"
        assert (record["outcome"], record["suppressed_by"]) == ("suppressed", reason)
        assert skipped == order


def test_legitimate_interest_lists_move_on_after_a_channel_objection(
        event: EventFactory) -> None:
    """Legal basis per channel: an objection to sms moves a legitimate-interest
    apology to e-mail (audited with its reason and basis); an objection to the purpose stops
    it on every channel."""
    book = parse_rulebook(dedent("""\
        version: "li-1"
        actions:
          apology:
            channels: [sms, email]
            basis: legitimate_interest
            purpose: service_recovery
            when: {event: {type: flight_delayed}}
        """), "li.yaml")
    sms_no = event("consent_changed", at="2026-03-02T00:00:00Z",
                   props={"channel": "sms", "granted": False})
    delay = event("flight_delayed", at="2026-03-02T12:00:00Z")
    replay = run_events(book, [sms_no, delay])
    [record] = replay.decisions
    assert (record["outcome"], record["channel"], record["legal_basis"]) == (
        "sent", "email", "legitimate_interest")
    assert [(s["channel"], s["reason"]) for s in record["skipped_channels"]] == [
        ("sms", "objection")]
    purpose_no = event("consent_changed", at="2026-03-02T00:00:00Z",
                       props={"purpose": "service_recovery", "granted": False})
    [record] = run_events(book, [purpose_no, delay]).decisions
    assert (record["outcome"], record["suppressed_by"]) == ("suppressed", "objection")
    assert [s["channel"] for s in record["skipped_channels"]] == ["sms", "email"]
