"""Closed-loop learning: deterministic Thompson sampling, warm-up, and the `learning` example
converging to the best offer."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.learning import LearningState, propensity, thompson
from service.replay.runner import Replayer, replay_events
from service.tools.learning_sim import TRUE_RATES, simulate_learning
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
    state = LearningState(600_000)
    for response in ("accepted", "converted", "declined", "shown", "bogus"):
        state.observe([("a", "all", response)], 0)
    assert state.snapshot(1_200_000) == {"propensity:a:all": [2, 1]}


def test_decisions_read_the_responses_dated_one_epoch_before_their_own() -> None:
    """A decision reads the responses dated before the start of the epoch before its own
    (one epoch of grace): with 10-minute epochs, a response at 00:05 is read from 00:20 on."""
    state = LearningState(600_000)
    assert state.context(0, {}) == {}
    state.observe([("a", "all", "accepted")], 300_000)
    assert state.context(600_000, {}) == {}
    assert state.context(1_199_999, {}) == {}
    assert state.context(1_200_000, {}) == {"propensity:a:all": [1, 0]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["accepted", "declined"]),
                          st.integers(0, 20)), max_size=40), st.randoms(use_true_random=False))
def test_what_a_decision_reads_does_not_depend_on_processing_order(
        items: list[tuple[int, str, int]], random: Any) -> None:
    """Responses processed in any order within one epoch of lateness give every decision the
    same counts: the snapshot at t depends on the responses' event times only."""
    epoch = 1000
    responses = [(minute * epoch, response) for minute, response, _ in items]
    asks = sorted({ask * epoch + 500 for _, _, ask in items})
    one, other = LearningState(epoch), LearningState(epoch)
    for ts, response in sorted(responses):
        one.observe([("a", "all", response)], ts)
    shuffled = list(responses)
    random.shuffle(shuffled)
    for ts, response in shuffled:
        other.observe([("a", "all", response)], ts)
    for ask in asks:
        assert one.snapshot(ask) == other.snapshot(ask)


def test_tallies_survive_their_stored_form_and_fold_old_epochs() -> None:
    """The stored form reads back to the same snapshots; past KEEP_EPOCHS epochs the oldest
    fold into the base tally, and the newest ones stay apart."""
    state = LearningState(10)
    for n in range(LearningState.KEEP_EPOCHS + 10):
        state.observe([("a", "all", "accepted" if n % 2 else "declined")], n * 10)
    assert len(state.epochs) == LearningState.KEEP_EPOCHS and state.base
    again = LearningState.from_bytes(state.to_bytes(), 10)
    for ts in range(0, 700, 7):
        assert again.snapshot(ts) == state.snapshot(ts)


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
