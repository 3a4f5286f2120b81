"""Hypothesis properties of decide(): determinism, idempotence, arrival-order independence."""

from __future__ import annotations

from textwrap import dedent

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import Event
from service.domain import parse_rulebook
from tests.events import make_event
from tests.unit.domain.replaykit import run_events

BOOK = parse_rulebook(dedent("""\
    version: "prop-1"
    scores:
      views: {points: [{when: {type: product_viewed}, add: 1}]}
      heat:
        half_life: 20m
        points: [{when: {type: [product_viewed, page_viewed]}, add: 3}]
    traits:
      last_category: {kind: last, field: properties.category}
      pages: {kind: count, when: {type: page_viewed}}
      biggest: {kind: max, field: properties.price}
    patterns:
      burst:
        kind: count
        when: {type: product_viewed}
        by: properties.category
        at_least: 3
        within: 10m
    actions:
      nudge:
        channel: web
        consent: exempt
        when: [{pattern: burst}]
        payload: {category: "{event.properties.category}"}
      deal:
        channel: email
        when: [{score: views, gte: 4}]
        value: 2
        cooldown: 15m
    contact_policy:
      cap: {max: 2, within: 30m}
    arbitration: {max_per_event: 2}
    """), "prop.yaml")


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    """Up to 25 events of two customers within one hour, distinct times per customer."""
    count = draw(st.integers(1, 25))
    seconds = draw(st.lists(st.integers(0, 3599), min_size=count, max_size=count, unique=True))
    events = []
    for index, second in enumerate(seconds):
        kind = draw(st.sampled_from(["product_viewed", "page_viewed", "search"]))
        events.append(make_event(
            kind,
            at=f"2026-03-02T10:{second // 60:02d}:{second % 60:02d}+01:00",
            customer=draw(st.sampled_from(["c-1", "c-2"])),
            event_id=f"e-{index}",
            category=draw(st.sampled_from(["phones", "tablets"])),
            price=draw(st.integers(1, 999)),
        ))
    return events


def _state(replay: object) -> dict[str, bytes]:
    profiles = replay.profiles  # type: ignore[attr-defined]
    return {k: p.to_bytes() for k, p in sorted(profiles.items()) if p is not None}


@settings(max_examples=60, deadline=None)
@given(event_lists())
def test_replay_is_byte_identical(events: list[Event]) -> None:
    """Replaying the same events twice gives byte-identical actions, records and profiles."""
    first, second = run_events(BOOK, events), run_events(BOOK, events)
    assert first.output_bytes() == second.output_bytes()
    assert _state(first) == _state(second)


@settings(max_examples=60, deadline=None)
@given(event_lists(), st.data())
def test_redelivery_changes_nothing(events: list[Event], data: st.DataObject) -> None:
    """Redelivering any event at any later point yields the same actions, records and final
    profiles as the log without the redelivery; the copy is flagged duplicate."""
    source = data.draw(st.integers(0, len(events) - 1))
    where = data.draw(st.integers(source + 1, len(events)))
    with_copy = [*events[:where], events[source], *events[where:]]
    plain, doubled = run_events(BOOK, events), run_events(BOOK, with_copy)
    assert doubled.outcomes[where][1].duplicate
    kept = [o for i, (_, o) in enumerate(doubled.outcomes) if i != where]
    assert [orjson.dumps([o.actions, o.decisions]) for o in kept] == \
        [orjson.dumps([o.actions, o.decisions]) for _, o in plain.outcomes]
    assert _state(plain) == _state(doubled)


@settings(max_examples=80, deadline=None)
@given(event_lists(), st.randoms(use_true_random=False))
def test_arrival_order_does_not_lose_window_counts(events: list[Event], rng: object) -> None:
    """Shuffling the arrival order keeps what the windows hold and what they mean: the same
    window entries, counts, last values and maxima; the burst pattern fires for a customer in
    one order iff it fires in the other; decayed scores agree up to rounding."""
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    ordered, mixed = run_events(BOOK, events), run_events(BOOK, shuffled)
    for key, profile in ordered.profiles.items():
        other = mixed.profiles[key]
        assert profile is not None and other is not None
        assert profile.windows == other.windows
        assert profile.traits == other.traits
        assert profile.scores.get("views") == other.scores.get("views")
        heat, heat2 = profile.scores.get("heat", 0.0), other.scores.get("heat", 0.0)
        assert abs(heat - heat2) <= 1e-9 * max(1.0, heat)
        assert profile.newest_ms == other.newest_ms

    def bursts(replay: object) -> set[str]:
        outcomes = replay.outcomes  # type: ignore[attr-defined]
        return {d["customer_id"] for _, o in outcomes for d in o.decisions
                if d["action"] == "nudge"}

    assert bursts(ordered) == bursts(mixed)
