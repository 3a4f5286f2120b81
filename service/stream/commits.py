"""The lean runtime's offset commits: in the background while the loop goes on, in batch
order, one at a time, and never while the worker may have lost its partitions.

A commit that fails is not retried: the next one covers its offsets too, and without one the
batch is replayed, its effects being idempotent (service/stream/runtime.py). But it shows: each is
counted in `touchflow_commit_failures_total{reason}`, and after `FAILING_AFTER` failures in a
row (error or fenced; a rebalance is expected) `/readyz` says commits are failing until one
succeeds. `committed` holds the last offsets the group took (without asking the coordinator,
which may be the one away), from which the runtime computes the consumer lag, so a worker
that cannot commit shows a growing lag too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from service.stream.consumer import Consumer, Fetched, TopicPartition

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["FAILING_AFTER", "OffsetCommits"]

log = logging.getLogger("service.stream.runtime")  # (the runtime's lines, as before the split)
FAILING_AFTER = 3  # consecutive failed commits before /readyz reports them


class OffsetCommits:
    """`schedule(offsets)` after each completed batch, `last()` before partitions move or the
    worker stops. `consumer` and `live` are read at each commit: the consumer is started
    after the runtime is built, and `live` is the group lease (service/stream/fencing.py)."""

    def __init__(self, consumer: Callable[[], Consumer], live: Callable[[], bool],
                 heartbeat_age: Callable[[], float | None], *, metrics: Metrics | None = None,
                 readiness: Readiness | None = None, timeout_s: float = 30.0) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s  # TOUCHFLOW_BROKER_TIMEOUT_S in the worker
        self._live = live
        self._heartbeat_age = heartbeat_age
        self._metrics = metrics
        self._readiness = readiness
        self._committing: asyncio.Task[None] | None = None
        self.failures = 0  # in a row (error or fenced)
        # partition -> last offset the group took
        self.committed: dict[TopicPartition, int] = {}

    def taken(self, batch: Fetched) -> None:
        """A batch was fetched: the first batch of a partition since its assignment starts
        at the group's committed offset (or where the group started reading), which stands
        for `committed` until this worker commits."""
        for tp, records in batch.items():
            if records and tp not in self.committed:
                self.committed[tp] = records[0].offset

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions moved: their committed offsets are no longer ours to report."""
        for tp in partitions:
            self.committed.pop(tp, None)

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """A new assignment (the group answers again): the failure streak starts over, so an
        idle worker, with nothing to commit, does not stay not ready."""
        self.forget(partitions)
        if self.failures:
            self.failures = 0
            if self._readiness is not None:
                self._readiness.clear_failing("commits")

    async def schedule(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit in the background; in order, one at a time (a crash before it completes
        replays the batch, whose effects are all durable already)."""
        previous, self._committing = self._committing, None
        if previous is not None:
            await previous  # (never raises: _commit logs its failures)
        self._committing = asyncio.ensure_future(self._commit(offsets))

    async def last(self) -> None:
        """Wait for the commit in flight, if any."""
        committing, self._committing = self._committing, None
        if committing is None:
            return
        try:
            await committing
        except Exception as exc:  # (_commit logs its own failures; this is a cancellation)
            log.warning("last commit failed", extra={"error": type(exc).__name__})

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError

        if not self._live():  # the partitions may be another worker's by now
            log.warning("commit skipped: group membership may be lost",
                        extra={"heartbeat_age_s": self._heartbeat_age()})
            self._failed("fenced", "group membership may be lost")
            return
        try:
            await asyncio.wait_for(self._consumer().commit(offsets), self._timeout_s)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions; the new owner re-reads the batch and, the
            # effects being idempotent, changes nothing twice.
            log.warning("commit skipped after a rebalance", extra={"error": type(exc).__name__})
            self._count("rebalance")
        except Exception as exc:
            # The coordinator did not answer: the next commit covers these offsets too, and
            # without one the batch is replayed, changing nothing twice.
            log.warning("offset commit failed", extra={"error": type(exc).__name__,
                                                       "failures": self.failures + 1})
            self._failed("error", type(exc).__name__)
        else:
            self.committed.update(offsets)
            if self.failures:
                self.failures = 0
                if self._readiness is not None:
                    self._readiness.clear_failing("commits")

    def _count(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.commit_failures.labels(reason).inc()

    def _failed(self, reason: str, error: str) -> None:
        self._count(reason)
        self.failures += 1
        if self.failures >= FAILING_AFTER and self._readiness is not None:
            self._readiness.mark_failing(
                "commits", f"{self.failures} offset commits failed in a row ({error})")
