"""Windowed traits, the `top` trait, crossings and comparisons between two fields, checked
against brute-force recomputation over the list of applied events."""

from __future__ import annotations

from collections import Counter
from textwrap import dedent
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import Event
from service.domain import Profile, RulebookError, decide, parse_rulebook
from service.domain.identity import merge_profiles
from service.domain.scoring import Trait
from tests.events import at_ms, make_event

HOUR = 3_600_000
WITHIN = 5 * HOUR
LATENESS = 8 * HOUR
T0 = 1_772_400_000_000

BOOK = parse_rulebook(dedent("""\
    version: "windowed-1"
    scores:
      lead:
        floor: 0
        points:
          - {when: {type: up}, add: 10}
          - {when: {type: down}, add: -7}
    traits:
      n: {kind: count, when: {type: v}, within: 5h}
      total: {kind: sum, field: properties.x, when: {type: v}, within: 5h}
      kinds: {kind: distinct_count, field: properties.k, when: {type: v}, within: 5h}
      latest: {kind: last, field: properties.k, when: {type: v}, within: 5h}
      most: {kind: top, field: properties.k, when: {type: v}, within: 5h}
      high: {kind: max, field: properties.x, when: {type: v}, within: 5h}
      ever_most: {kind: top, field: properties.k, when: {type: v}}
    actions:
      lead_crossed: {channel: web, consent: exempt, when: [{score: lead, crosses: 25}]}
      busy_crossed: {channel: web, consent: exempt, when: [{trait: n, crosses: 3}]}
    arbitration: {max_per_event: 5}
    idempotence: {max_lateness: 8h}
    """), "windowed.yaml")
TRAITS: dict[str, Trait] = {t.name: t for t in BOOK.traits.by_type["v"]}


def _event(index: int, etype: str, ts: int, x: int = 0, k: str = "a") -> Event:
    return make_event(etype, event_id=f"e-{index}", at=at_ms(ts), x=x, k=k)


@st.composite
def _histories(draw: st.DrawFn) -> list[Event]:
    """Up to 40 events of one customer (fewer than the 64 remembered ids, so only lateness
    drops events), time wandering forward and back, some far back, some exactly a window or
    the lateness horizon away, some redelivered."""
    events: list[Event] = []
    clock = T0
    for index in range(draw(st.integers(1, 40))):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # a redelivery
            continue
        clock += draw(st.one_of(st.integers(-2, 2), st.integers(-10 * HOUR, 4 * HOUR),
                                st.sampled_from([WITHIN, -WITHIN, LATENESS, -LATENESS,
                                                 WITHIN + 1, -LATENESS - 1])))
        etype = draw(st.sampled_from(["v", "v", "v", "up", "down", "other"]))
        events.append(_event(index, etype, clock, draw(st.integers(-5, 20)),
                             draw(st.sampled_from(["a", "b", "c"]))))
    return events


class _Brute:
    """The applied events, recomputed from scratch: lateness and redeliveries as decide()."""

    def __init__(self) -> None:
        self.applied: list[Event] = []
        self.ids: set[str] = set()
        self.newest = -1

    def apply(self, event: Event) -> bool:
        if event.event_id in self.ids or event.ts_ms < self.newest - LATENESS:
            return False
        self.ids.add(event.event_id)
        self.applied.append(event)
        self.newest = max(self.newest, event.ts_ms)
        return True

    def window(self, newest: int) -> list[Event]:
        """Matching events in (newest - within, newest], in time order, ties by arrival."""
        live = [e for e in self.applied if e.type == "v" and newest - WITHIN < e.ts_ms <= newest]
        return sorted(live, key=lambda e: e.ts_ms)

    def values(self, newest: int) -> dict[str, Any]:
        live = self.window(newest)
        xs = [e.properties["x"] for e in live]
        ks = [e.properties["k"] for e in live]
        return {"n": len(live), "total": sum(xs), "kinds": len(set(ks)),
                "latest": ks[-1] if ks else None, "most": _top(live),
                "high": max(xs) if xs else None,
                "ever_most": _top([e for e in self.applied if e.type == "v"])}

    def lead(self) -> float:
        score = 0.0
        for event in self.applied:
            if event.type in ("up", "down"):
                score = max(score + (10 if event.type == "up" else -7), 0.0)
        return score


def _top(events: list[Event]) -> Any:
    counts = Counter(e.properties["k"] for e in events)
    newest = {e.properties["k"]: e.ts_ms for e in sorted(events, key=lambda e: e.ts_ms)}
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], -newest[k], k))


@settings(max_examples=150, deadline=None)
@given(events=_histories())
def test_windowed_traits_equal_a_recomputation_over_the_applied_events(
        events: list[Event]) -> None:
    """After every event - late ones within the window, late ones dropped for lateness,
    redeliveries - each windowed trait (count, sum, distinct_count, last, top, max) and the
    unwindowed top read exactly what a recomputation over the applied events gives at the
    customer's newest event time; and a `crosses` action fires exactly on the events that
    take the value from below the threshold to at or above it."""
    brute = _Brute()
    profile: Profile | None = None
    before_lead, before_n = 0.0, 0
    for event in events:
        outcome = decide(profile, event, {}, BOOK)
        applied = brute.apply(event)
        assert outcome.duplicate is not applied
        profile = outcome.profile
        assert profile is not None
        expected = brute.values(brute.newest)
        actual = {name: trait.read(profile) for name, trait in TRAITS.items()}
        assert actual == expected
        sent = {a["action"] for a in outcome.actions}
        if applied:
            lead, n = brute.lead(), expected["n"]
            assert ("lead_crossed" in sent) == (before_lead < 25 <= lead)
            assert ("busy_crossed" in sent) == (before_n < 3 <= n)
            before_lead, before_n = lead, n
        else:
            assert not sent


def test_windowed_trait_keeps_only_the_newest_entries_it_may_read() -> None:
    """Memory is bounded: entries older than the window are dropped when the trait changes,
    at most `keep` entries are kept (the count saturates there), and an event older than the
    window is not stored at all."""
    book = parse_rulebook(dedent("""\
        version: "k"
        traits:
          n: {kind: count, when: {type: v}, within: 1h, keep: 3}
        actions:
          a: {channel: web, consent: exempt, when: [{trait: n, gte: 99}]}
        """), "k.yaml")
    trait = book.traits.by_type["v"][0]
    profile = None
    for index in range(5):
        profile = decide(profile, _event(index, "v", T0 + index * 60_000), {}, book).profile
    assert profile is not None and len(profile.traits["n"]) == 3 and trait.read(profile) == 3
    profile = decide(profile, _event(10, "v", T0 + 2 * HOUR), {}, book).profile
    assert profile is not None and profile.traits["n"] == [[T0 + 2 * HOUR]]
    profile = decide(profile, _event(11, "v", T0 + HOUR - 1), {}, book).profile
    assert profile is not None and profile.traits["n"] == [[T0 + 2 * HOUR]]
    assert trait.read(profile) == 1
    later = decide(profile, _event(12, "other", T0 + 4 * HOUR), {}, book).profile
    assert later is not None and trait.read(later) == 0  # read at the newest time


def test_top_ties_go_to_the_most_recent_then_the_smallest_text() -> None:
    """Equal counts: the value seen most recently in event time wins, whatever the arrival
    order; at equal counts and times, the smallest text. A full unwindowed top forgets the
    weakest value (fewest events, then oldest)."""
    book = parse_rulebook(dedent("""\
        version: "t"
        traits:
          fav: {kind: top, field: properties.k, when: {type: v}, max_items: 2}
        actions:
          a: {channel: web, consent: exempt, when: [{trait: fav, eq: zz}]}
        """), "t.yaml")
    trait = book.traits.by_type["v"][0]
    in_order = [_event(1, "v", T0, k="b"), _event(2, "v", T0 + 5, k="a")]
    for events in (in_order, in_order[::-1]):
        profile = None
        for event in events:
            profile = decide(profile, event, {}, book).profile
        assert profile is not None and trait.read(profile) == "a"
    profile = None
    for event in [_event(1, "v", T0, k="b"), _event(2, "v", T0, k="a")]:
        profile = decide(profile, event, {}, book).profile
    assert profile is not None and trait.read(profile) == "a"
    profile = decide(profile, _event(3, "v", T0 + 9, k="c"), {}, book).profile
    assert profile is not None and sorted(r[0] for r in profile.traits["fav"]) == ["a", "c"]


def test_old_stored_profiles_read_and_take_windowed_traits() -> None:
    """Backward compatibility: a stored format-2 profile written before windowed traits
    existed (and a format-1 one) reads as before, and a rulebook with windowed and top traits
    decides on it; a trait whose stored shape is from an older definition (a plain count
    where a windowed count is now declared) reads as empty instead of failing."""
    stored_v2 = orjson.dumps({"v": 2, "k": "customer_id:c-1", "n": T0, "s": {"lead": 20.0},
                              "t": {"n": 4, "ever_most": "not-a-list"}})
    stored_v1 = orjson.dumps({"v": 1, "k": "customer_id:c-1", "n": T0, "s": {"lead": 20.0}})
    for stored in (stored_v2, stored_v1):
        profile = Profile.from_bytes(stored)
        assert profile.scores == {"lead": 20.0} and profile.newest_ms == T0
        if stored is stored_v2:
            assert TRAITS["n"].read(profile) == 0 and TRAITS["ever_most"].read(profile) is None
        outcome = decide(profile, _event(1, "up", T0 + 1), {}, BOOK)
        assert [a["action"] for a in outcome.actions] == ["lead_crossed"]
        after = decide(outcome.profile, _event(2, "v", T0 + 2, k="q"), {}, BOOK).profile
        assert after is not None and TRAITS["n"].read(after) == 1
        assert TRAITS["ever_most"].read(after) == "q"
        assert Profile.from_bytes(after.to_bytes()) == after


def test_merged_windowed_traits_read_as_one_history() -> None:
    """Merging an alias into a profile: windowed entries are united (each event once) and
    `top` counts added, so the merged traits read what one history of both would."""
    alias_events = [_event(1, "v", T0, x=3, k="b"), _event(2, "v", T0 + 10, x=4, k="b")]
    main_events = [_event(3, "v", T0 + 20, x=5, k="a")]
    alias = main = None
    for event in alias_events:
        alias = decide(alias, event, {}, BOOK).profile
    for event in main_events:
        main = decide(main, event, {}, BOOK).profile
    assert alias is not None and main is not None
    merged, changed = merge_profiles(main, "anonymous_id:x", alias, BOOK)
    assert changed
    one = None
    for event in alias_events + main_events:
        one = decide(one, event, {}, BOOK).profile
    assert one is not None
    for name, trait in TRAITS.items():
        assert trait.read(merged) == trait.read(one), name


def test_comparison_between_two_fields() -> None:
    """`{value: A, gt: {path: B}}` compares two fields: numbers by value, a missing side is
    false, and the reason shows both values."""
    book = parse_rulebook(dedent("""\
        version: "c"
        traits:
          usual: {kind: max, field: properties.price, when: {type: bought}}
        actions:
          splurge:
            channel: web
            consent: exempt
            when:
              - event: {type: viewed}
              - {value: event.properties.price, gt: {path: trait.usual}}
        """), "c.yaml")
    profile = decide(None, _event(1, "viewed", T0), {}, book).profile  # no usual price yet
    viewed = make_event("viewed", event_id="e-2", at=at_ms(T0 + 1), price=120)
    assert not decide(profile, viewed, {}, book).actions
    bought = make_event("bought", event_id="e-3", at=at_ms(T0 + 2), price=80)
    profile = decide(profile, bought, {}, book).profile
    again = make_event("viewed", event_id="e-4", at=at_ms(T0 + 3), price=120)
    outcome = decide(profile, again, {}, book)
    [action] = outcome.actions
    assert action["reasons"][-1] == "event.properties.price 120 > trait.usual (trait.usual = 80)"


@pytest.mark.parametrize(("fragment", "message"), [
    ("traits: {d: {kind: distinct_count, field: properties.k}}", "needs a window"),
    ("actions: {a: {channel: web, when: [{value: event.properties.x, crosses: 3}]}}",
     "a crossing needs a score or a trait"),
    ("actions: {a: {channel: web, when: [{score: s, crosses: high}]}}", "needs a number"),
    ("actions: {a: {channel: web, when: [{score: s, in: {path: score.s}}]}}",
     "only as eq, ne, gt"),
    ("actions: {a: {channel: web, when: [{score: s, gt: {path: trait.nope}}]}}",
     "no trait named 'nope'"),
])
def test_new_conditions_report_mistakes_with_file_line_and_field(fragment: str,
                                                                 message: str) -> None:
    """Misused windows, crossings and path comparisons are rulebook errors naming the field."""
    text = ("version: e\nscores: {s: {points: [{when: {type: v}, add: 1}]}}\n" + fragment
            + ("\nactions: {z: {channel: web, when: [{score: s}]}}"
               if not fragment.startswith("actions") else ""))
    with pytest.raises(RulebookError) as caught:
        parse_rulebook(text, "bad.yaml")
    assert message in str(caught.value) and "bad.yaml:" in str(caught.value)


def test_crossing_fires_once_per_climb_and_its_reason_says_what_it_was() -> None:
    """A level condition would hold on every event above 25; `crosses: 25` holds on the one
    that climbs past it, again only after the value fell below, and its reason gives the value
    before the event."""
    profile = None
    sent = []
    reasons = []
    steps = ["up", "up", "up", "up", "down", "down", "up", "up", "down", "down", "down",
             "down", "up"]
    for index, etype in enumerate(steps):
        outcome = decide(profile, _event(index, etype, T0 + index), {}, BOOK)
        profile = outcome.profile
        for action in outcome.actions:
            sent.append((index, action["action"]))
            reasons.extend(action["reasons"])
    # lead: 10 20 30 40 33 26 36 46 39 32 25 18 28: 26 and 25 are not below 25; 18 is
    assert sent == [(2, "lead_crossed"), (12, "lead_crossed")]
    assert reasons == ["lead 30 crosses 25 (was 20)", "lead 28 crosses 25 (was 18)"]
