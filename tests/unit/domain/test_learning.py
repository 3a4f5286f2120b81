"""Closed-loop learning: deterministic Thompson sampling, warm-up, and the `learning` example
converging to the best offer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.learning import LearningState, PropensityTable, propensity, thompson
from service.learning_sim import TRUE_RATES, simulate_learning
from service.replay.runner import Replayer, replay_events
from tests.unit.domain.replaykit import EXAMPLES, load_example

RULES = EXAMPLES / "learning" / "rulebook.yaml"


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.text(min_size=1, max_size=20))
def test_thompson_draw_is_a_deterministic_probability(accepted: int, declined: int,
                                                      seed: str) -> None:
    """The same counts and event id always give the same draw, in [0, 1]."""
    first = thompson(1 + accepted, 1 + declined, seed)
    assert first == thompson(1 + accepted, 1 + declined, seed)
    assert 0.0 <= first <= 1.0


def test_propensity_is_one_while_warming_up_then_learned() -> None:
    """Below `warm_up` responses the propensity is 1.0 (and says so); above, a draw near the
    observed acceptance rate."""
    value, why = propensity({}, "offer", "all", "e1", 20, (1.0, 1.0))
    assert value == 1.0 and "warming up: 0 of 20" in why
    context = {"propensity:offer:all": [300, 700]}
    draws = [propensity(context, "offer", "all", f"e{n}", 20, (1.0, 1.0))[0]
             for n in range(200)]
    assert 0.27 < sum(draws) / len(draws) < 0.33


def test_counts_only_grow_and_ignore_other_responses() -> None:
    """accepted/converted count as success, declined as failure, shown as neither."""
    table = PropensityTable()
    for response in ("accepted", "converted", "declined", "shown", "bogus"):
        table.observe("a", "all", response)
    assert table.snapshot() == {"propensity:a:all": [2, 1]}


def test_snapshots_refresh_on_event_time_only() -> None:
    """decide() sees counts as of the last refresh boundary in event time, not live ones."""
    state = LearningState(600_000)
    assert state.context(0, {}) == {}
    state.observe([("a", "all", "accepted")])
    assert state.context(599_999, {}) == {}
    assert state.context(600_000, {}) == {"propensity:a:all": [1, 0]}


def test_learning_example_converges_to_the_best_offer_and_beats_uniform() -> None:
    """In the simulated population the best offer (30 % true acceptance) takes over: most of
    the last quarter's sends, and an acceptance rate well above uniform choice (16 %)."""
    run = simulate_learning(RULES)
    quarter = len(run.sent) // 4
    late = run.shares(slice(-quarter, None))
    assert max(late, key=late.__getitem__) == max(TRUE_RATES, key=TRUE_RATES.__getitem__)
    assert late["offer_points"] > 0.8
    assert run.acceptance(slice(-quarter, None)) > run.uniform_rate() + 0.05


def test_shipped_log_replays_to_the_simulated_decisions() -> None:
    """The example's events.jsonl, replayed, sends exactly the offers the simulation saw, and
    twice gives identical output."""
    rulebook, events, context = load_example("learning")
    run = simulate_learning(RULES)
    replayed = [a["action"] for step in replay_events(events, rulebook, context)
                if step.outcome is not None for a in step.outcome.actions]
    assert replayed == run.sent
    again = Replayer(rulebook, context)
    assert [a["action"] for e in events for a in again.apply(e).actions] == run.sent
