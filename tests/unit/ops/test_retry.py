"""Retry waits (service/ops/retry.py): exponential backoff with jitter, so workers that failed
together do not retry together, and a streak-based wait that starts short again after a
reader recovered."""

from __future__ import annotations

from types import SimpleNamespace

from service.ops.retry import backoff, streak_backoff


def _waits(wait: object, attempt: int, samples: int = 200) -> list[float]:
    return [wait(SimpleNamespace(attempt_number=attempt)) for _ in range(samples)]  # type: ignore[operator]


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    """The n-th wait lies in [initial x 2^(n-1), that + initial], capped at the maximum (plus
    the jitter), and waits of one attempt differ from worker to worker (jitter)."""
    wait = backoff(1.0, 30.0)
    for attempt, low in ((1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 30.0)):
        values = _waits(wait, attempt)
        assert all(low <= v <= low + 1.0 for v in values), (attempt, min(values), max(values))
        assert len(set(values)) > 100  # spread, not in step
        assert max(values) - min(values) > 0.5


def test_streak_backoff_follows_the_failures_in_a_row() -> None:
    """A streak wait depends on the caller's count of failures before this one, not on
    tenacity's ever-growing attempt number: after a reset it is short again."""
    failures = [0]
    wait = streak_backoff(1.0, 30.0, lambda: failures[0])
    assert all(1.0 <= v <= 2.0 for v in _waits(wait, attempt=50))
    failures[0] = 3
    assert all(8.0 <= v <= 9.0 for v in _waits(wait, attempt=1))
    failures[0] = 0
    assert all(1.0 <= v <= 2.0 for v in _waits(wait, attempt=99))
