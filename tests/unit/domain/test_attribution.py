"""Attribution and response auditing: conversions credited to the latest action within the
window, once per action, across channels, for treated and held-out customers alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from textwrap import dedent
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import Event
from schemas.models import DecisionRecord
from service.domain import Profile, Rulebook, decide, parse_rulebook

EventFactory = Callable[..., Event]

BOOK = dedent("""\
    version: "attr-1"
    actions:
      app_offer:
        channel: mobile
        consent: exempt
        when: [{event: {type: app_opened}}]
      web_offer:
        channel: web
        consent: exempt
        when: [{event: {type: page_viewed}}]
    attribution:
      conversions: {type: purchase}
      window: 1d
    """)

HOLDOUT = BOOK.replace('version: "attr-1"', dedent("""\
    version: "attr-2"
    experiments:
      control:
        arms: {everyone: 1.0}
        holdout: [everyone]"""))


def _book(text: str = BOOK) -> Rulebook:
    return parse_rulebook(text, "attr.yaml")


def _run(book: Rulebook, events: list[Event]) -> tuple[Profile | None, list[dict[str, Any]]]:
    profile: Profile | None = None
    records: list[dict[str, Any]] = []
    for item in events:
        outcome = decide(profile, item, {}, book)
        profile = outcome.profile
        records.extend(outcome.decisions)
    return profile, records


def _credits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "attribution"]


def test_purchase_in_store_is_credited_to_the_latest_offer_once(event: EventFactory) -> None:
    """An app offer then a web offer, then a store purchase: the web offer (last touch) gets
    the credit; a second purchase credits the app offer; a third finds nothing left."""
    book = _book()
    _, records = _run(book, [
        event("app_opened", channel="mobile", at="2026-03-02T10:00:00+00:00"),
        event("page_viewed", channel="web", at="2026-03-02T11:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-02T15:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-02T16:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-02T17:00:00+00:00"),
    ])
    credits = _credits(records)
    assert [c["action"] for c in credits] == ["web_offer", "app_offer"]
    assert all(c["arm"] == "treated" and c["outcome"] == "converted" for c in credits)
    assert "purchase on store 4.0h after web_offer" in credits[0]["reasons"][0]
    sent_ids = {r["action_id"] for r in records if r["kind"] == "action"}
    assert {c["action_id"] for c in credits} == sent_ids
    for record in records:
        DecisionRecord.model_validate(record)


def test_no_credit_outside_the_window_or_before_the_action(event: EventFactory) -> None:
    """A purchase more than the window after the offer, or earlier than it (late arrival),
    is not credited."""
    book = _book()
    _, records = _run(book, [
        event("app_opened", channel="mobile", at="2026-03-02T10:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-02T09:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-03T10:00:01+00:00"),
    ])
    assert _credits(records) == []


def test_redelivered_purchase_credits_nothing_more(event: EventFactory) -> None:
    """The same purchase event delivered twice is one conversion."""
    book = _book()
    buy = event("purchase", channel="store", at="2026-03-02T12:00:00+00:00")
    _, records = _run(book, [
        event("app_opened", channel="mobile", at="2026-03-02T10:00:00+00:00"),
        event("page_viewed", channel="web", at="2026-03-02T10:30:00+00:00"),
        buy, buy,
    ])
    assert len(_credits(records)) == 1


def test_held_out_decisions_are_credited_as_holdout(event: EventFactory) -> None:
    """A customer in the holdout gets nothing, but a purchase after the held-out decision is
    credited with arm `holdout`: the control group's conversion rate."""
    book = _book(HOLDOUT)
    _, records = _run(book, [
        event("app_opened", channel="mobile", at="2026-03-02T10:00:00+00:00"),
        event("purchase", channel="store", at="2026-03-02T12:00:00+00:00"),
    ])
    assert [r["outcome"] for r in records if r["kind"] == "action"] == ["held_out"]
    credits = _credits(records)
    assert len(credits) == 1 and credits[0]["arm"] == "holdout"


def test_response_is_audited_with_its_action(event: EventFactory) -> None:
    """An `action_response` naming a sent action by id yields a `response` record with the
    action, its channel and the arm; an unknown action id yields none."""
    book = _book()
    profile, records = _run(book, [event("app_opened", channel="mobile")])
    sent = next(r for r in records if r["kind"] == "action")
    answer = event("action_response", channel="mobile", at="2026-03-02T12:05:00+00:00",
                   action_id=sent["action_id"], response="accepted")
    outcome = decide(profile, answer, {}, book)
    [record] = outcome.decisions
    assert (record["kind"], record["outcome"], record["action"], record["channel"],
            record["arm"]) == ("response", "accepted", "app_offer", "mobile", "treated")
    stray = event("action_response", channel="mobile", at="2026-03-02T12:06:00+00:00",
                  action_id="no-such-id", response="accepted")
    assert decide(outcome.profile, stray, {}, book).decisions == []


def test_attribution_section_errors_name_the_field() -> None:
    """An unknown action in `attribution.actions` is refused with its line and field."""
    bad = BOOK + "  actions: [app_offer, nope]\n"
    try:
        parse_rulebook(bad, "attr.yaml")
    except Exception as exc:  # RulebookError
        assert "attribution.actions[1]" in str(exc) or "attribution.actions.1" in str(exc)
        assert "nope" in str(exc)
    else:
        raise AssertionError("an unknown action was accepted")


_STEP = st.tuples(st.sampled_from(["app_opened", "page_viewed", "purchase"]),
                  st.integers(0, 72 * 60))


@settings(max_examples=80, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=25))
def test_each_action_is_credited_at_most_once(steps: list[tuple[str, int]]) -> None:
    """For any sequence of opens, views and purchases (in any time order), every credited
    action id was decided for this customer, and none is credited twice; each credit lies
    within the window after its action."""
    from tests.events import make_event

    book = _book()
    events = []
    for index, (etype, minute) in enumerate(steps):
        at = f"2026-03-02T{minute // 60 % 24:02d}:{minute % 60:02d}:00+00:00"
        day = 2 + minute // (24 * 60)
        at = f"2026-03-{day:02d}" + at[10:]
        channel = {"app_opened": "mobile", "page_viewed": "web", "purchase": "store"}[etype]
        events.append(make_event(etype, channel=channel, at=at, event_id=f"e{index}"))
    _, records = _run(book, events)
    decided = {r["action_id"]: r for r in records if r["kind"] == "action"}
    credited = [r["action_id"] for r in _credits(records)]
    assert len(credited) == len(set(credited))
    assert set(credited) <= set(decided)
    for credit in _credits(records):
        lag = (datetime.fromisoformat(credit["decided_at"])
               - datetime.fromisoformat(decided[credit["action_id"]]["decided_at"]))
        assert timedelta(0) <= lag <= timedelta(days=1)
