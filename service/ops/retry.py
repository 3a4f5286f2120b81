"""Retry waits shared by the worker's loops (tenacity): exponential backoff plus random jitter,
so that workers which lost the broker together do not all retry in the same instant.

`backoff(initial, maximum)` waits initial x 2^(n-1) seconds, capped at `maximum`, plus up to
`initial` seconds at random, before the n-th retry. `streak_backoff` does the same over a
count the caller keeps (a background reader's consecutive failures), so a reader that ran
well for a day starts again from the shortest wait.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

from tenacity import RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

__all__ = ["backoff", "streak_backoff"]


def backoff(initial: float, maximum: float) -> wait_base:
    """Exponential backoff from `initial` up to `maximum` seconds, plus 0..`initial` jitter."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


def streak_backoff(initial: float, maximum: float,
                   failures: Callable[[], int]) -> Callable[[RetryCallState], float]:
    """`backoff`, but by `failures()` (the consecutive failures before this one) instead of
    tenacity's attempt count, which never goes down."""
    wait = backoff(initial, maximum)

    def waiting(_: RetryCallState) -> float:
        # (the waits read only `attempt_number` of the state)
        state = cast(RetryCallState, SimpleNamespace(attempt_number=failures() + 1))
        return float(wait(state))

    return waiting
