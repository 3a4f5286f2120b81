"""bench/rounds.py: interleaved rounds are reported by their medians, ratios per round."""

from __future__ import annotations

from bench.harness import Measurement
from bench.rounds import combine_rounds


def _m(rate: float, ok: bool = True) -> Measurement:
    return Measurement(events=int(rate * 10), seconds=10.0, cpu_seconds=9.0, ok=ok)


def test_median_rates_and_medians_of_per_round_ratios() -> None:
    """Each row is its median-rate run; the ratios are the medians of each round's own ratios
    (not the ratio of the medians), so a round whose machine was slow for every row counts
    as one round, not as a slow worker against a fast baseline."""
    names = ("raw aiokafka", "naive faust", "touchflow worker")
    rates = ((60_000, 4_000, 40_000), (30_000, 1_500, 13_500), (50_000, 3_000, 33_000))
    rounds = [list(zip(names, map(_m, row), strict=True)) for row in rates]
    rows, summary = combine_rounds(rounds)
    assert [name for name, _ in rows] == ["raw aiokafka", "naive faust", "touchflow worker"]
    assert dict(rows)["touchflow worker"].rate == 33_000
    assert summary["touchflow worker"]["vs_naive"] == [10.0, 9.0, 11.0]
    assert summary["touchflow worker"]["median_vs_naive"] == 10.0
    # the ratio of the medians would say 33,000 / 3,000 = 11.0x
    assert summary["touchflow worker"]["vs_ceiling"] == [0.667, 0.45, 0.66]
    assert summary["touchflow worker"]["median_vs_ceiling"] == 0.66
    assert "vs_naive" not in summary["naive faust"]
    assert "median of 3 rounds: 40,000, 13,500, 33,000/s" in dict(rows)["touchflow worker"].note


def test_a_row_failing_in_any_round_is_reported_failed() -> None:
    """A failure is not hidden behind the medians of the rounds that worked."""
    rounds = [[("naive faust", _m(4_000)), ("touchflow worker", _m(40_000))],
              [("naive faust", _m(4_000)), ("touchflow worker", _m(0, ok=False))]]
    rows, summary = combine_rounds(rounds)
    assert dict(rows)["touchflow worker"].ok is False
    assert "touchflow worker" not in summary


def test_vs_ceiling_is_against_the_fastest_ceiling_row_of_each_round() -> None:
    """With several ceiling rows (aiokafka, aiokafka batched, librdkafka), each round's
    ratio is against whichever of them was fastest in that round."""
    names = ("raw aiokafka", "librdkafka", "touchflow worker")
    rates = ((50_000, 60_000, 30_000), (40_000, 20_000, 20_000), (45_000, 50_000, 25_000))
    rounds = [list(zip(names, map(_m, row), strict=True)) for row in rates]
    _, summary = combine_rounds(rounds, ceiling=("raw aiokafka", "librdkafka"))
    assert summary["touchflow worker"]["vs_ceiling"] == [0.5, 0.5, 0.5]
    assert "vs_ceiling" not in summary["librdkafka"]
