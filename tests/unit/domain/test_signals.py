"""Cross-customer signals: windowed counts per group in event time, once per event id, one
message per episode, active for `hold`; rulebook checks of the `signals` section."""

from __future__ import annotations

from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import parse_rulebook
from service.domain.rules import RulebookError
from service.domain.signals import SignalState, is_active

BOOK = dedent("""\
    version: "sig-1"
    signals:
      surge:
        description: complaint calls
        when: {type: call_center_call, properties: {reason: complaint}}
        by: properties.sku
        within: 1h
        at_least: 3
        hold: 2h
    actions:
      promo:
        channel: web
        consent: exempt
        when: [{event: {type: product_viewed}}]
        suppress_unless:
          - not: {signal: surge, key: "{event.properties.sku}"}
    """)
MIN = 60_000


def _state() -> SignalState:
    rulebook = parse_rulebook(BOOK, "sig.yaml")
    return SignalState(rulebook.signals, rulebook.version)


def test_fires_once_when_the_threshold_is_reached_within_the_window() -> None:
    """Three events of one group within the hour fire; a fourth while active does not; other
    groups count on their own; events further apart than the window never fire."""
    state = _state()
    assert state.observe("surge", "a", "e1", 0) is None
    assert state.observe("surge", "b", "e2", 1 * MIN) is None
    assert state.observe("surge", "a", "e3", 10 * MIN) is None
    fired = state.observe("surge", "a", "e4", 50 * MIN)
    assert fired is not None and fired.message["count"] == 3
    assert fired.context_key == "signal:surge:a"
    assert fired.context_value["until_ms"] == 50 * MIN + 120 * MIN
    assert state.observe("surge", "a", "e5", 55 * MIN) is None
    slow = _state()
    assert all(slow.observe("surge", "c", f"s{n}", n * 61 * MIN) is None for n in range(10))


def test_redelivered_event_counts_once() -> None:
    """The same event id observed three times is one event."""
    state = _state()
    assert all(state.observe("surge", "a", "e1", 0) is None for _ in range(3))
    assert state.observe("surge", "a", "e2", MIN) is None
    assert state.observe("surge", "a", "e3", 2 * MIN) is not None


def test_fires_again_after_the_hold() -> None:
    """After `hold`, a new burst is a new episode with a new message id."""
    state = _state()
    first = [state.observe("surge", "a", f"x{n}", n * MIN) for n in range(3)][-1]
    again = [state.observe("surge", "a", f"y{n}", 200 * MIN + n * MIN) for n in range(3)][-1]
    assert first is not None and again is not None
    assert first.message["signal_id"] != again.message["signal_id"]


def test_a_firing_carries_the_time_of_the_event_that_made_it_fire() -> None:
    """`Fired.at_ms` is the firing event's time (the pause's valid_from), also when that
    event arrives after a newer one of the same window."""
    state = _state()
    state.observe("surge", "a", "e1", 0)
    state.observe("surge", "a", "e3", 30 * MIN)
    fired = state.observe("surge", "a", "e2", 20 * MIN)  # late, completes the window
    assert fired is not None and fired.at_ms == 20 * MIN
    fresh = _state()
    last = [fresh.observe("surge", "b", f"x{n}", n * MIN) for n in range(3)][-1]
    assert last is not None and last.at_ms == 2 * MIN


def test_signal_condition_reads_the_context_at_event_time() -> None:
    """`is_active` holds from the firing until `until_ms` (exclusive), judged by event time."""
    state = _state()
    fired = [state.observe("surge", "a", f"x{n}", n * MIN) for n in range(3)][-1]
    assert fired is not None
    context = {fired.context_key: fired.context_value}
    assert is_active(context, "surge", "a", 3 * MIN)
    assert not is_active(context, "surge", "a", 2 * MIN + 120 * MIN)
    assert not is_active(context, "surge", "b", 3 * MIN)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("by: properties.sku", "by: identity.customer_id", "customer identifier"),
    ("{signal: surge,", "{signal: nope,", "no signal named 'nope'"),
])
def test_bad_signal_sections_are_refused_with_the_field(old: str, new: str,
                                                        expected: str) -> None:
    """Grouping by a customer identifier, or naming an unknown signal, is refused with the
    rulebook file and line."""
    with pytest.raises(RulebookError) as error:
        parse_rulebook(BOOK.replace(old, new), "sig.yaml")
    message = str(error.value)
    assert "sig.yaml:" in message and expected in message


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 300)), min_size=1, max_size=40))
def test_duplicates_never_change_what_fires(calls: list[tuple[int, int]]) -> None:
    """Feeding every event twice (each redelivery right after the original) fires exactly the
    same messages as feeding each once."""
    once, twice = _state(), _state()
    fired_once, fired_twice = [], []
    for index, (group, minute) in enumerate(calls):
        args = ("surge", f"g{group}", f"e{index}", minute * MIN)
        fired_once.append(once.observe(*args))
        fired_twice.append(twice.observe(*args))
        assert twice.observe(*args) is None
    assert [f and f.message for f in fired_once] == [f and f.message for f in fired_twice]
