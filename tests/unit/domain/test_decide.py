"""decide(): idempotence, lateness, core event types, policies, experiments, wire fields."""

from __future__ import annotations

import base64
from collections.abc import Callable
from textwrap import dedent

import orjson
import pytest

from schemas.event import Event
from service.domain import Profile, ProfileFormatError, Rulebook, decide, parse_rulebook
from tests.unit.domain.replaykit import run_events

EventFactory = Callable[..., Event]

BOOK = dedent("""\
    version: "unit-1"
    scores:
      interest:
        points:
          - {name: view, when: {type: product_viewed}, add: 10}
    actions:
      offer:
        channel: sms
        when:
          - event: {type: product_viewed}
          - {score: interest, gte: 20}
        payload: {sku: "{event.properties.sku}", n: "{score.interest}"}
        expires: 90m
        once: true
    contact_policy:
      quiet_hours: {sms: {start: "21:00", end: "08:00"}}
      consent_default: opt_out
    """)


@pytest.fixture
def book() -> Rulebook:
    """The small unit rulebook above."""
    return parse_rulebook(BOOK, "unit.yaml")


def test_action_fields_are_deterministic(book: Rulebook, event: EventFactory) -> None:
    """action_id is the digest of (key, action, trigger, version); decided_at is occurred_at;
    expires_at keeps the trigger's UTC offset; payload templates keep JSON types."""
    first = event("product_viewed", at="2026-03-02T10:00:00+09:00", sku="s-1")
    second = event("product_viewed", at="2026-03-02T10:05:00.250+09:00", sku="s-1")
    replay = run_events(book, [first, second])
    [action] = replay.actions
    assert action["decided_at"] == "2026-03-02T10:05:00.250+09:00"
    assert action["expires_at"] == "2026-03-02T11:35:00.250000+09:00"
    assert action["payload"] == {"sku": "s-1", "n": 20.0}
    assert action["customer_id"] == "c-1" and len(action["action_id"]) == 32
    again = run_events(book, [first, second])
    assert replay.output_bytes() == again.output_bytes()
    assert action["rulebook_version"] == book.version


def test_redelivered_event_changes_nothing(book: Rulebook, event: EventFactory) -> None:
    """A redelivered event_id is a duplicate: same profile bytes, no actions, no records."""
    view = event("product_viewed", sku="s")
    outcome = decide(None, view, {}, book)
    assert outcome.profile is not None
    before = outcome.profile.to_bytes()
    again = decide(outcome.profile, view, {}, book)
    assert again.duplicate and not again.actions and not again.decisions
    assert again.profile is not None and again.profile.to_bytes() == before


def test_forgotten_ids_raise_the_floor(book: Rulebook, event: EventFactory) -> None:
    """Once an id is pushed out of the remembered ring, an event older than the newest forgotten
    one is treated as a possible redelivery (duplicate); newer unseen events still apply."""
    profile = None
    events = [event("page_viewed", at=f"2026-03-02T{10 + i // 60}:{i % 60:02d}:00+00:00")
              for i in range(70)]
    for item in events:
        profile = decide(profile, item, {}, book).profile
    assert profile is not None and profile.seen.size() == book.remember_events == 64
    assert profile.floor_ms == events[5].ts_ms  # ids of 10:00..10:05 forgotten
    assert decide(profile, events[0], {}, book).duplicate  # a forgotten redelivery
    under_floor = event("page_viewed", at="2026-03-02T10:04:30+00:00")
    assert decide(profile, under_floor, {}, book).duplicate  # cannot be told from one
    late_but_new = event("page_viewed", at="2026-03-02T10:30:30+00:00")
    assert decide(profile, late_but_new, {}, book).duplicate is False


def test_too_late_event_is_ignored(book: Rulebook, event: EventFactory) -> None:
    """An event more than max_lateness (7d) older than the newest one is ignored."""
    now = decide(None, event("page_viewed", at="2026-03-20T10:00:00+00:00"), {}, book).profile
    old = decide(now, event("product_viewed", at="2026-03-01T10:00:00+00:00"), {}, book)
    assert old.duplicate and old.profile is not None and "interest" not in old.profile.scores


def test_late_event_is_its_own_outcome_with_an_audit_record(book: Rulebook,
                                                             event: EventFactory) -> None:
    """An event older than max_lateness that the profile provably never applied (newer than
    its idempotence floor) is `late`: not applied, and one `late` audit record (deterministic
    id) says it was dropped; a redelivery of an applied event stays a plain duplicate."""
    first = event("page_viewed", at="2026-03-20T10:00:00+00:00")
    now = decide(None, first, {}, book).profile
    old = event("product_viewed", at="2026-03-01T10:00:00+00:00")
    outcome = decide(now, old, {}, book)
    assert outcome.late and outcome.duplicate and not outcome.actions
    [record] = outcome.decisions
    assert record["kind"] == "late" and record["outcome"] == "late"
    assert record["trigger_event_id"] == old.event_id and "max_lateness" in record["reasons"][0]
    assert decide(now, old, {}, book).decisions == [record]  # same id on a redelivery
    redelivered = decide(now, first, {}, book)
    assert redelivered.duplicate and not redelivered.late and not redelivered.decisions


def test_event_under_the_floor_is_a_duplicate_not_late(book: Rulebook,
                                                       event: EventFactory) -> None:
    """At or before the idempotence floor an old event may be a forgotten redelivery ("too
    late to be sure"): it counts as a duplicate, never as a late loss, however old."""
    profile = None
    events = [event("page_viewed", at=f"2026-03-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00")
              for i in range(70)]
    for item in events:
        profile = decide(profile, item, {}, book).profile
    assert profile is not None and profile.floor_ms == events[5].ts_ms
    ancient = event("page_viewed", at="2026-02-01T00:00:00+00:00")
    outcome = decide(profile, ancient, {}, book)
    assert outcome.duplicate and not outcome.late and not outcome.decisions


def test_erasure_returns_no_profile_and_one_record(book: Rulebook, event: EventFactory) -> None:
    """erasure_requested -> profile None and one 'erasure' record with outcome 'erased'."""
    profile = decide(None, event("product_viewed"), {}, book).profile
    outcome = decide(profile, event("erasure_requested"), {}, book)
    assert outcome.profile is None and not outcome.actions and not outcome.duplicate
    [record] = outcome.decisions
    assert record["kind"] == "erasure" and record["outcome"] == "erased"
    assert record["customer_id"] == "c-1"


def test_consent_withdrawal_suppresses_and_newest_wins(book: Rulebook,
                                                       event: EventFactory) -> None:
    """A withdrawn channel consent suppresses with no_consent; a late, older grant does not
    override the newer withdrawal (last writer by event time)."""
    log = [
        event("consent_changed", at="2026-03-02T10:00:00+00:00",
              props={"channel": "sms", "granted": False}),
        event("consent_changed", at="2026-03-02T09:00:00+00:00",
              props={"channel": "sms", "granted": True}),
        event("product_viewed", at="2026-03-02T10:01:00+00:00"),
        event("product_viewed", at="2026-03-02T10:02:00+00:00"),
    ]
    replay = run_events(book, log)
    assert replay.actions == []
    [record] = replay.decisions
    assert record["suppressed_by"] == "no_consent"
    assert record["reasons"][0] == "no consent for channel sms: withdrawn"


def test_opt_in_default_needs_a_grant(event: EventFactory) -> None:
    """consent_default opt_in: nothing is sent on a channel until consent is granted."""
    book = parse_rulebook(BOOK.replace("consent_default: opt_out", "consent_default: opt_in"))
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(2)]
    assert run_events(book, views).decisions[0]["suppressed_by"] == "no_consent"
    grant = event("consent_changed", at="2026-03-02T09:00:00+00:00",
                  props={"channel": "sms", "granted": True})
    assert len(run_events(book, [grant, *views]).actions) == 1


def test_quiet_hours_use_customer_local_time(book: Rulebook, event: EventFactory) -> None:
    """22:30 local (+09:00) is inside sms quiet hours 21:00-08:00 even though it is 13:30 UTC."""
    views = [event("product_viewed", at=f"2026-03-02T22:3{i}:00+09:00") for i in range(2)]
    [record] = run_events(book, views).decisions
    assert record["suppressed_by"] == "quiet_hours"
    assert "local time 22:31" in record["reasons"][0]


def test_once_only(book: Rulebook, event: EventFactory) -> None:
    """A once-only action is sent once; later qualifying events audit it as once_only."""
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(3)]
    replay = run_events(book, views)
    assert [d["outcome"] for d in replay.decisions] == ["sent", "suppressed"]
    assert replay.decisions[1]["suppressed_by"] == "once_only"


def test_action_response_is_counted_per_action(book: Rulebook, event: EventFactory) -> None:
    """An action_response naming a sent action_id is counted under that action's name."""
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(2)]
    replay = run_events(book, views)
    action_id = replay.actions[0]["action_id"]
    response = event("action_response", channel="sms", at="2026-03-02T10:05:00+00:00",
                     action_id=action_id, response="converted")
    profile = decide(replay.profiles["customer_id:c-1"], response, {}, book).profile
    assert profile is not None and profile.responses == {"offer": {"converted": 1}}


@pytest.mark.parametrize("odd", [["converted"], {"kind": "converted"}, 3, None])
def test_action_response_with_a_non_text_response_is_not_counted(
        book: Rulebook, event: EventFactory, odd: object) -> None:
    """An action_response whose `response` is not a string (a list, an object, a number) is
    applied as an ordinary event: nothing is counted and decide() does not raise (a list once
    raised `unhashable type`, dead-lettering the event as a decision error)."""
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(2)]
    replay = run_events(book, views)
    action_id = replay.actions[0]["action_id"]
    response = event("action_response", channel="sms", at="2026-03-02T10:05:00+00:00",
                     action_id=action_id, response=odd)
    profile = decide(replay.profiles["customer_id:c-1"], response, {}, book).profile
    assert profile is not None and profile.responses == {}


def test_holdout_arm_is_audited_not_sent(event: EventFactory) -> None:
    """A customer in a holdout arm gets a held_out record and no action; assignment is a pure
    function of the customer key."""
    text = BOOK + "experiments:\n  gc: {arms: {control: 1}, holdout: [control]}\n"
    book = parse_rulebook(text)
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(2)]
    replay = run_events(book, views)
    assert replay.actions == []
    [record] = replay.decisions
    assert record["outcome"] == "held_out" and record["suppressed_by"] == "experiment_holdout"
    assert record["experiment"] == {"gc": "control"}


def test_profile_round_trip_and_version_check(book: Rulebook, event: EventFactory) -> None:
    """to_bytes/from_bytes round-trips exactly; another format version is refused clearly."""
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(3)]
    profile = run_events(book, views).profiles["customer_id:c-1"]
    assert profile is not None
    again = Profile.from_bytes(profile.to_bytes())
    assert again == profile and again.to_bytes() == profile.to_bytes()
    raw = orjson.loads(profile.to_bytes())
    raw["v"] = 3
    with pytest.raises(ProfileFormatError, match="format version 3"):
        Profile.from_bytes(orjson.dumps(raw))
    with pytest.raises(ProfileFormatError):
        Profile.from_bytes(b"not json")


def test_version_1_profile_is_read_and_skips_pre_upgrade_redeliveries(
    book: Rulebook, event: EventFactory,
) -> None:
    """A stored version-1 profile (ids digested another way) is still read: its scores and
    traits survive, and redeliveries of events applied before the upgrade are skipped (the
    id ring's newest time becomes the "too late to be sure" floor), while a newer event counts."""
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(3)]
    profile = run_events(book, views).profiles["customer_id:c-1"]
    assert profile is not None
    raw = orjson.loads(profile.to_bytes())
    raw["v"] = 1  # its ring: 8-byte digest and 6-byte big-endian time, interleaved
    raw["r"] = base64.b64encode(b"".join(
        b"\x01" * 8 + ts.to_bytes(6, "big") for ts in profile.seen.times())).decode()
    old = Profile.from_bytes(orjson.dumps(raw))
    assert old.scores == profile.scores and old.traits == profile.traits
    assert not old.seen and old.floor_ms == max(profile.seen.times())  # inclusive floor
    for view in views:
        again = decide(old, view, {}, book)
        assert again.duplicate and again.profile is not None
        assert again.profile.scores == profile.scores
    later = decide(old, event("product_viewed", at="2026-03-02T10:09:00+00:00"), {}, book)
    assert not later.duplicate and later.profile is not None
    assert later.profile.scores != profile.scores


def test_new_profile_customer_id(event: EventFactory) -> None:
    """customer_id is the customer id for customer-keyed profiles, else the profile key."""
    assert Profile.new("customer_id:c-9").customer_id == "c-9"
    assert Profile.new("anonymous_id:a-1").customer_id == "anonymous_id:a-1"


def test_actions_needing_a_pattern_are_skipped_only_when_it_did_not_fire(
    rulebook_from: Callable[[str], Rulebook], event: EventFactory,
) -> None:
    """An action whose top-level conditions name a pattern is left out of the catalog of an
    event on which no pattern fired (it could not be eligible); one that names the pattern
    under not/any stays in; and on the event that fires the pattern it is sent as before."""
    book = rulebook_from(dedent("""\
        version: "needs-1"
        patterns:
          twice: {kind: count, when: {type: product_viewed}, at_least: 2, within: 1h}
        actions:
          burst: {channel: web, consent: exempt, when: [{pattern: twice}]}
          calm:
            channel: web
            consent: exempt
            when: [{event: {type: product_viewed}}, {not: {pattern: twice}}]
          either:
            channel: web
            consent: exempt
            when: [{any: [{pattern: twice}, {event: {type: page_viewed}}]}]
        arbitration: {max_per_event: 3}
        """))
    quiet = {a.name for a in book.unprompted.by_type["product_viewed"]}
    assert quiet == {"calm", "either"}
    assert {a.name for a in book.actions.by_type["product_viewed"]} == {"burst", "calm",
                                                                          "either"}
    views = [event("product_viewed", at=f"2026-03-02T10:0{i}:00+00:00") for i in range(2)]
    outcomes = run_events(book, views).outcomes
    assert [a["action"] for a in outcomes[0][1].actions] == ["calm"]
    assert sorted(a["action"] for a in outcomes[1][1].actions) == ["burst", "either"]


def test_redelivering_a_long_history_applies_nothing_twice(
    book: Rulebook, event: EventFactory,
) -> None:
    """200 events of one customer, then all of them again (a takeover redelivering a long
    backlog): every redelivery is a duplicate. When the floor's own millisecond counted as
    new, the event at the floor was applied again, forgot the next id, whose time became the
    floor, and so on: remember_events + 1 events counted twice (found by a SIGKILL takeover
    in a 1,000-event-per-customer backlog: scores 1066 instead of 1001)."""
    views = [event("product_viewed", at=f"2026-03-02T10:{i // 60:02d}:{i % 60:02d}+00:00")
             for i in range(200)]
    profile = run_events(book, views).profiles["customer_id:c-1"]
    assert profile is not None
    stored = profile.to_bytes()
    again = Profile.from_bytes(stored)
    for view in views:
        outcome = decide(again, view, {}, book)
        assert outcome.duplicate, view.event_id
    assert again.to_bytes() == stored
