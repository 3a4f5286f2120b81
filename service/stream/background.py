"""A coroutine run as a background task of the worker, started and stopped with it.

A background reader (the context reader, the signal aggregator) follows a topic until it
fails; it is then retried with jittered backoff (service/ops/retry.py). Each failure is counted
in `touchflow_background_failures_total{component}` and logged, and `/readyz` carries the
reason until the reader works again: the worker decides with its data, so a reader that
cannot read must show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from service.ops.retry import streak_backoff

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["Background"]

log = logging.getLogger(__name__)


class Background:
    """Subclasses implement `_attempt()` (connect, then follow until an error or until
    cancelled) and call `_working()` once it reads again; `start()`/`stop()` manage it."""

    task_name = "touchflow-background"
    component = "background"  # the metric label and the /readyz name
    retry_initial_s = 1.0
    retry_max_s = 30.0  # subclasses take TOUCHFLOW_RETRY_MAX_S
    _task: asyncio.Task[None] | None = None
    metrics: Metrics | None = None
    readiness: Readiness | None = None
    failures = 0  # consecutive, reset by `_working()`

    async def _attempt(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        """`_attempt()` again after each failure, forever (until cancelled)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # (not CancelledError: it stops us)
            wait=streak_backoff(self.retry_initial_s, self.retry_max_s, lambda: self.failures),
            before_sleep=self._failed, reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt()

    def _failed(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        name = type(error).__name__
        self.failures += 1
        if self.metrics is not None:
            self.metrics.background_failures.labels(self.component).inc()
        if self.readiness is not None:
            self.readiness.mark_failing(
                self.component, f"{name}, retrying ({self.failures} in a row)")
        delay = state.next_action.sleep if state.next_action is not None else None
        log.warning(f"{self.component} reader failed, retrying",
                    extra={"error": repr(error), "failures": self.failures,
                           "retry_in_s": None if delay is None else round(delay, 2)})

    def _working(self) -> None:
        """The reader reads again: clear its failure streak and its /readyz reason."""
        if self.failures:
            self.failures = 0
            if self.readiness is not None:
                self.readiness.clear_failing(self.component)
            log.info(f"{self.component} reader works again")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to finish its clean-up."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
