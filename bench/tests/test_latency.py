"""bench/latency.py's arithmetic: the steady schedule the load follows and the percentiles
reported (no timing: fixed inputs, exact outputs)."""

from __future__ import annotations

from bench.latency import percentile, slices, summary


def test_schedule_covers_every_event_once_at_its_due_time() -> None:
    """Slices of rate x 5 ms events partition 0..count exactly, and a slice is due when its
    first event is (n / rate), so the clock of an event never starts before it was due."""
    plan = slices(1_003, 2_000.0)
    assert plan[0] == (0, 10, 0.0)
    assert plan[1] == (10, 20, 0.005)
    assert plan[-1] == (1_000, 1_003, 0.5)
    covered = [n for start, end, _ in plan for n in range(start, end)]
    assert covered == list(range(1_003))
    assert slices(3, 10.0) == [(0, 1, 0.0), (1, 2, 0.1), (2, 3, 0.2)]  # at least one per slice


def test_percentiles_by_nearest_rank_after_the_warm_up() -> None:
    """Events due in the first 3 s are left out of the percentiles (metadata waits), p50,
    p95, p99 and max come from the rest by rank, and the per-second worst cases keep all; a
    generator more than 50 ms behind its schedule marks the row."""
    warm = [(float(ms), 5.0) for ms in range(0, 3000, 100)]  # 30 slow ones during warm-up
    steady = [(3000.0 + n, (n + 1) / 1000) for n in range(100)]  # 1..100 ms
    result = summary(warm + steady, 1000.0, 990.0, 130, 12.34)
    assert result["received"] == 100
    assert (result["p50_ms"], result["p95_ms"], result["p99_ms"], result["max_ms"]) == \
        (51.0, 95.0, 99.0, 100.0)
    assert result["p99_ms_with_warm_up"] == 5000.0
    assert result["slowest_ms_by_second"] == [5000, 5000, 5000, 100]
    assert (result["rate_target"], result["rate_achieved"]) == (1000, 990)
    assert result["generator_lag_max_ms"] == 12.3
    assert result["generator_kept_up"]
    assert not summary(steady, 1000.0, 990.0, 100, 50.1)["generator_kept_up"]
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_the_legs_either_side_of_the_records_timestamp_after_the_warm_up() -> None:
    """With each received record's timestamp, the figure splits at it: due -> stamped and
    stamped -> held, each by rank over the events due after the warm-up only."""
    warm = [(0.0, 5.0)]
    steady = [(3000.0 + n, (n + 10) / 1000) for n in range(100)]  # 10..109 ms in all
    stamps = [4000.0] + [3000.0 + n + n // 10 for n in range(100)]  # stamped 0..9 ms in
    result = summary(warm + steady, 1000.0, 990.0, 101, 0.0, stamps)
    assert (result["to_stamp_p50_ms"], result["to_stamp_p99_ms"]) == (5.0, 9.0)
    assert (result["stamp_to_held_p50_ms"], result["stamp_to_held_p99_ms"]) == (55.0, 99.0)
