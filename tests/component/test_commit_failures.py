"""Offset commits that fail show (service/stream/commits.py): the lean runtime's loop over a
scripted consumer whose commits fail counts each failure by reason, puts "commits failing" in
/readyz after `FAILING_AFTER` failures in a row and clears it once a commit succeeds; the lag
gauge counts from the last committed offset, not from the fetch position, so a worker that reads
on without committing shows a growing lag."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError

from service.ops.health import Readiness
from service.ops.metrics import Metrics
from service.ops.settings import load_settings
from service.stream.commits import FAILING_AFTER, OffsetCommits
from service.stream.runtime import KafkaRuntime
from service.stream.topics import TopicNames
from tests.component.test_runtime_commits import TP, _Consumer, _Processor


class _FailingCommits(_Consumer):
    """The scripted consumer, whose first `failing` commits time out at the coordinator;
    it records the worker's readiness reasons as each commit is asked for."""

    def __init__(self, runtime: KafkaRuntime, log: list[str], count: int, failing: int,
                 readiness: Readiness) -> None:
        super().__init__(runtime, log, count=count)
        self.failing = failing
        self.readiness = readiness
        self.seen: list[list[str]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import KafkaTimeoutError

        self.seen.append(self.readiness.reasons())
        if self.failing:
            self.failing -= 1
            raise KafkaTimeoutError()
        await super().commit(offsets)


async def _run(count: int, failing: int) -> tuple[_FailingCommits, Metrics, Readiness]:
    settings = load_settings(store="memory://", broker="kafka://127.0.0.1:1", topic_prefix="cf")
    metrics = Metrics()
    readiness = Readiness(metrics)
    runtime = KafkaRuntime(settings, TopicNames.from_settings(settings),
                           lambda sink: None,  # type: ignore[arg-type,return-value]
                           metrics=metrics, readiness=readiness)
    readiness.mark_started()
    readiness.mark_assigned({0})
    log: list[str] = []
    consumer = _FailingCommits(runtime, log, count, failing, readiness)

    async def start_clients() -> None:
        runtime._consumer = consumer
        runtime.processor = _Processor(log)  # type: ignore[assignment]

    runtime._start_clients = start_clients  # type: ignore[method-assign]
    await asyncio.wait_for(runtime.run(), 10)
    return consumer, metrics, readiness


def _failures(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("touchflow_commit_failures_total",
                                             {"reason": reason})


async def test_failed_commits_are_counted_and_make_the_worker_not_ready() -> None:
    """Five batches whose commits all fail: each failure is counted (reason=error); /readyz
    has no commit reason through the first `FAILING_AFTER` - 1 failures, then says how many
    failed in a row and why."""
    consumer, metrics, readiness = await _run(count=5, failing=5)
    assert _failures(metrics, "error") == 5
    assert _failures(metrics, "rebalance") == 0
    failing = [[r for r in reasons if r.startswith("commits")] for reasons in consumer.seen]
    # (seen[n]: the reasons when commit n+1 is asked, after n failures)
    assert failing[:FAILING_AFTER] == [[]] * FAILING_AFTER
    assert failing[FAILING_AFTER] == [f"commits failing: {FAILING_AFTER} offset commits "
                                      "failed in a row (KafkaTimeoutError)"]
    assert readiness.reasons() == ["stopping", "commits failing: 5 offset commits failed in "
                                   "a row (KafkaTimeoutError)"]


async def test_a_commit_that_succeeds_clears_the_streak() -> None:
    """Three failures in a row make the worker not ready; the next commit that succeeds makes
    it ready again, and the counter keeps the three."""
    consumer, metrics, readiness = await _run(count=5, failing=FAILING_AFTER)
    assert any(any(r.startswith("commits failing") for r in reasons)
               for reasons in consumer.seen)
    assert _failures(metrics, "error") == FAILING_AFTER
    assert readiness.reasons() == ["stopping"]


async def test_rebalances_and_fencing_are_counted_apart() -> None:
    """A commit refused by a rebalance is counted as reason=rebalance and does not count
    toward the streak; one skipped because group membership may be lost is reason=fenced
    and does; a new assignment starts the streak over (an idle worker has nothing to
    commit that would clear it)."""
    from aiokafka.errors import CommitFailedError

    metrics = Metrics()
    readiness = Readiness(metrics)
    live = [True]

    class Refusing:
        async def commit(self, offsets: dict[Any, int]) -> None:
            raise CommitFailedError("rebalanced")

    commits = OffsetCommits(lambda: Refusing(), lambda: live[0], lambda: 1.0,
                            metrics=metrics, readiness=readiness)
    for offset in range(FAILING_AFTER + 1):
        await commits.schedule({TP("t", 0): offset})
    await commits.last()
    assert _failures(metrics, "rebalance") == FAILING_AFTER + 1
    assert commits.failures == 0 and not readiness.failing
    live[0] = False
    for offset in range(FAILING_AFTER):
        await commits.schedule({TP("t", 0): offset})
    await commits.last()
    assert _failures(metrics, "fenced") == FAILING_AFTER
    assert readiness.failing["commits"].startswith(f"{FAILING_AFTER} offset commits failed")
    commits.assigned({TP("t", 0)})  # a new assignment: the group answers again
    assert commits.failures == 0 and not readiness.failing


class _Lagging:
    """A consumer that fetched up to `position` of a partition whose high watermark is
    `high` (it never asks the coordinator: that may be what is away)."""

    def __init__(self, high: int, position: int) -> None:
        self.tp = TP("cf.events", 0)
        self.high, self.position_ = high, position

    def assignment(self) -> set[Any]:
        return {self.tp}

    def highwater(self, tp: Any) -> int:
        return self.high

    async def position(self, tp: Any) -> int:
        return self.position_


async def test_lag_counts_from_the_committed_offset() -> None:
    """The lag gauge is the high watermark less the committed offset, not less the fetch
    position: before any batch the position is the committed offset; once batches are
    taken from offset 100 and their commits fail, the lag grows with what is read; a commit
    that goes through brings it down; a new assignment starts over from the position."""
    settings = load_settings(store="memory://", broker="kafka://127.0.0.1:1", topic_prefix="cf")
    metrics = Metrics()
    runtime = KafkaRuntime(settings, TopicNames.from_settings(settings),
                           lambda sink: None,  # type: ignore[arg-type,return-value]
                           metrics=metrics)
    consumer = _Lagging(high=120, position=100)
    runtime._consumer = consumer

    async def lag() -> float | None:
        runtime._lag_at = 0.0  # (the gauge is refreshed at most once a second)
        await runtime._observe_lag()
        return metrics.registry.get_sample_value("touchflow_consumer_lag_messages",
                                                 {"topic": "cf.events", "partition": "0"})

    assert await lag() == 20
    record = namedtuple("record", "offset")
    runtime._commits.taken({consumer.tp: [record(100), record(101)]})
    runtime._commits.taken({consumer.tp: [record(102)]})
    consumer.high, consumer.position_ = 220, 200  # read on; the commits fail
    assert await lag() == 120
    runtime._commits.committed[consumer.tp] = 200  # a commit went through
    assert await lag() == 20
    runtime._commits.forget({consumer.tp})
    consumer.position_ = 210
    assert await lag() == 10


class _Revoking(_Lagging):
    """A consumer whose second partition is revoked between `assignment()` and the reads of
    it, as aiokafka reports that: an assertion (highwater) or IllegalStateError (position)."""

    def __init__(self, high: int, position: int, error: Exception) -> None:
        super().__init__(high, position)
        self.gone = TP("cf.events", 1)
        self.error = error

    def assignment(self) -> set[Any]:
        return {self.tp, self.gone}

    def highwater(self, tp: Any) -> int:
        if tp == self.gone and isinstance(self.error, AssertionError):
            raise self.error
        return self.high

    async def position(self, tp: Any) -> int:
        if tp == self.gone:
            raise self.error
        return self.position_


@pytest.mark.parametrize("error", [AssertionError("Partition is not assigned"),
                                   IllegalStateError("Partition is not assigned")])
async def test_a_partition_revoked_while_lag_is_read_is_skipped(error: Exception) -> None:
    """A partition revoked between the assignment and the reads of its lag (a rebalance, or
    the Faust consumer's thread stopping) is skipped: the gauge of the others is still set
    and the processing loop does not stop (it once ended the Faust worker on shutdown)."""
    settings = load_settings(store="memory://", broker="kafka://127.0.0.1:1", topic_prefix="cf")
    metrics = Metrics()
    runtime = KafkaRuntime(settings, TopicNames.from_settings(settings),
                           lambda sink: None,  # type: ignore[arg-type,return-value]
                           metrics=metrics)
    runtime._consumer = _Revoking(high=120, position=100, error=error)
    await runtime._observe_lag()
    assert metrics.registry.get_sample_value(
        "touchflow_consumer_lag_messages", {"topic": "cf.events", "partition": "0"}) == 20
    assert metrics.registry.get_sample_value(
        "touchflow_consumer_lag_messages", {"topic": "cf.events", "partition": "1"}) is None
