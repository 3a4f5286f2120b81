"""Failures in the lean runtime's pipeline: a refused shipment, a batch that fails to begin,
a failed offset commit, a rebalance in mid-stream. Nothing is lost, nothing is applied
twice, learned propensities are not counted twice, and offsets are committed in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.domain.rules import load_rulebook
from service.ops.metrics import Metrics
from service.stream.processor import Processor
from service.stream.runtime import KafkaRuntime
from service.stream.topics import TopicNames
from tests.component.pipeline_harness import (
    LEARNING,
    TP,
    Broker,
    Consumer,
    ends,
    fetches_of,
    flat,
    journey_lines,
    learning_lines,
    no_recovery,
    outcome,
    pipelined,
    profiles,
    sequential,
    settings_for,
    values,
)


@pytest.mark.parametrize("fail_at", [3, 8, 9, 20, 51])
async def test_a_refused_shipment_in_flight_is_processed_again_without_loss_or_double_count(
    tmp_path: Path, fail_at: int
) -> None:
    """The broker refuses one shipment (a batch's actions or its changelog; 51: the last
    batch's actions) while later batches are in flight: the runtime abandons them all and
    processes them again, so every action reaches the topic (some twice: at-least-once), the
    profiles end exactly as without the failure (no event lost, none applied twice) and every
    offset is committed, in order."""
    expected = await sequential(tmp_path, "rocksdb://", journey_lines)
    sink = Broker(fail_at=fail_at)
    run = await pipelined(tmp_path, "rocksdb://", sink, journey_lines)
    assert f"ack {fail_at}" in sink.log and sink.lost
    assert profiles(run.result) == profiles(expected)
    assert values(run.result, "actions") == values(expected, "actions")
    assert values(run.result, "changelog") >= values(expected, "changelog")
    assert run.consumer.committed == ends(run.consumer.fetches)


@pytest.mark.parametrize("fail_at", [5, 6, 11])
async def test_learned_propensities_are_not_counted_twice_after_a_refused_shipment(
    tmp_path: Path, fail_at: int
) -> None:
    """Batches processed again after a failure put the learned propensity tallies back to
    where the oldest abandoned batch began first (the last encoded tallies, as for profiles):
    the tallies equal a run without the failure (they outlive restarts in the changelog)."""
    rules = LEARNING / "rulebook.yaml"
    expected = await sequential(tmp_path, "memory://", learning_lines, rules)
    run = await pipelined(tmp_path, "memory://", Broker(fail_at=fail_at), learning_lines, rules)
    assert expected["tallies"], "this test would prove nothing"
    assert run.result["tallies"] == expected["tallies"]
    assert values(run.result, "actions") == values(expected, "actions")


@pytest.mark.parametrize("last", [False, True])
async def test_process_called_again_after_a_refused_shipment_applies_the_batch_once(
    tmp_path: Path, last: bool
) -> None:
    """`process()` that raised (its output refused) leaves no trace in the processor's
    memory: called again with the same messages, as the Faust agent and the runtime's retry
    do, it decides the batch's events again (before, the cache kept the failed batch's
    updates and the retry skipped them as duplicates), sends its actions and changelog, and
    the store ends as without the failure; also when the refused batch is the last, so no
    later batch rewrites its customers' profiles."""
    expected = await sequential(tmp_path, "memory://", journey_lines)
    settings = settings_for(tmp_path / "retry", "memory://")
    topics = TopicNames.from_settings(settings)
    probe = Processor(settings, topics, load_rulebook(settings.rules), Broker(),
                      recover=no_recovery)
    fetches = fetches_of(journey_lines(tmp_path), probe, topics)
    sink = Broker(fail_at=2 * len(fetches) - 1 if last else 5)  # a batch's actions
    processor = Processor(settings, topics, load_rulebook(settings.rules), sink,
                          recover=no_recovery)
    retried = None
    for fetched in fetches:
        try:
            await processor.process(flat(fetched))
        except OSError:
            retried = await processor.process(flat(fetched))
    assert retried is not None and retried.processed > 0
    got = outcome(processor, sink)
    assert profiles(got) == profiles(expected)
    assert values(got, "actions") == values(expected, "actions")


async def test_a_batch_that_fails_to_begin_is_processed_again(tmp_path: Path) -> None:
    """`begin` raising on the fifth batch (after two earlier batches are in flight): those and
    the failed one are processed again, the run goes on, and the outcome equals one batch at
    a time."""
    expected = await sequential(tmp_path, "memory://", journey_lines)

    def prepare(runtime: KafkaRuntime, processor: Processor, consumer: Consumer) -> None:
        begin, calls = processor.begin, [0]

        async def failing_begin(messages: Any) -> Any:
            calls[0] += 1
            if calls[0] == 5:
                await begin(messages[:10])  # half-done work, then the failure
                raise RuntimeError("a bug in the middle of a batch")
            return await begin(messages)

        processor.begin = failing_begin  # type: ignore[method-assign]

    run = await pipelined(tmp_path, "memory://", Broker(), journey_lines, prepare=prepare)
    assert profiles(run.result) == profiles(expected)
    assert values(run.result, "actions") == values(expected, "actions")
    assert run.consumer.committed == ends(run.consumer.fetches)


async def test_a_failed_offset_commit_is_logged_and_covered_by_the_next(
    tmp_path: Path,
) -> None:
    """The coordinator not answering one commit neither reprocesses anything nor stops the
    loop: the outputs are exactly those of one batch at a time and the later commits cover
    the offsets."""
    expected = await sequential(tmp_path, "memory://", journey_lines)

    def prepare(runtime: KafkaRuntime, processor: Processor, consumer: Consumer) -> None:
        consumer.fail_commit_at = 4

    run = await pipelined(tmp_path, "memory://", Broker(), journey_lines, prepare=prepare)
    assert run.result == expected
    assert run.consumer.committed == ends(run.consumer.fetches)


async def test_a_rebalance_drains_and_commits_the_batches_in_flight_first(
    tmp_path: Path,
) -> None:
    """When partitions are revoked mid-stream (the listener runs inside `getmany`), every
    batch fetched so far is completed and its offsets committed before the processor lets
    the partitions go; then, as the partitions are assigned again (the RocksDB stores
    reopened), the run ends with the outcome of one batch at a time."""
    expected = await sequential(tmp_path, "rocksdb://", journey_lines)
    seen: dict[str, Any] = {}

    def prepare(runtime: KafkaRuntime, processor: Processor, consumer: Consumer) -> None:
        revoke = processor.revoke
        partitions = {TP(runtime.topics.repartition, p) for p in range(4)}

        async def watched_revoke(owned: set[int]) -> None:
            seen["unwritten"] = len(processor._unwritten)
            seen["committed"] = dict(consumer.committed)
            seen["handed"] = consumer.handed
            await revoke(owned)

        async def rebalance() -> None:
            await runtime._on_revoked(partitions)
            await runtime._on_assigned(partitions)

        processor.revoke = watched_revoke  # type: ignore[method-assign]
        consumer.before_fetch[7] = rebalance

    run = await pipelined(tmp_path, "rocksdb://", Broker(), journey_lines, prepare=prepare)
    assert seen["unwritten"] == 0
    assert seen["committed"] == ends(run.consumer.fetches[:seen["handed"]])
    assert profiles(run.result) == profiles(expected)
    assert values(run.result, "actions") == values(expected, "actions")


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every touchflow counter sample of the worker's registry (no gauges or histograms:
    their values hold clocks; no python_gc_* counters: they count the collector's runs)."""
    out = {}
    for family in metrics.registry.collect():
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.startswith("touchflow_") and sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_a_batch_processed_again_once(tmp_path: Path) -> None:
    """Events, actions, dead letters and suppressed decisions are counted when a batch is
    complete, so a batch abandoned after a refused shipment and processed again counts once:
    the counters equal a run without the failure."""

    async def counted(fail_at: int | None) -> dict[Any, float]:
        settings = settings_for(tmp_path / f"m{fail_at}", "memory://")
        topics = TopicNames.from_settings(settings)
        metrics = Metrics()
        processor = Processor(settings, topics, load_rulebook(settings.rules),
                              Broker(fail_at=fail_at), recover=no_recovery, metrics=metrics)
        for fetched in fetches_of(journey_lines(tmp_path), processor, topics):
            try:
                await processor.process(flat(fetched))
            except OSError:
                await processor.process(flat(fetched))
        return _samples(metrics)

    expected = await counted(None)
    assert any("suppressed" in name for name, _ in expected), "this test would prove nothing"
    assert await counted(5) == expected
