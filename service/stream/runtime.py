"""The lean runtime: one aiokafka consumer-group loop feeding the batch processor.

Not Faust agents: their per-event stream machinery caps a worker's throughput, and
`take_events` can commit a batch interrupted at shutdown unprocessed (docs/decisions.md, "The
lean aiokafka runtime is the default"). This loop reads batches with `getmany`, hands them to
the `Processor`, and commits exactly the offsets it processed, after the processor's flushes:
the checkpoint order of the module docstring in service/stream/processor.py. The Faust runtime
runs this same loop over Faust's consumer (service/stream/faust_runtime.py).

Partitions of the events, responses and repartition topics are assigned co-partitioned (range
assignor over topics with equal partition counts), so partition p of each lands on the worker
that owns profile partition p.

A worker that may have been evicted from the group (no heartbeat answered for half the
session timeout: paused, frozen) writes no changelog and commits nothing: its processor's
fence raises, the batches in flight are abandoned and their partitions rewound, and the loop
takes no new batch until the group answers again (service/stream/fencing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

from service.ops.logs import error_summary
from service.ops.settings import Settings
from service.stream.commits import OffsetCommits
from service.stream.consumer import Consumer, TopicPartition
from service.stream.fencing import AssignmentLost, GroupLease, rewind
from service.stream.processor import PendingBatch, Processor, Record
from service.stream.sink import Sink, SinkFactory, kafka_sink
from service.stream.topics import TopicNames

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["KafkaRuntime"]

log = logging.getLogger(__name__)
# Event-loop turns given to aiokafka's fetcher after each batch is taken, before deciding it,
# so the next Fetch goes out now rather than after the decision (docs/decisions.md, "Fetch
# early and briefly").
_FETCH_YIELDS = 3
# Catching up: when the worker is more than `_CATCH_UP_LAG` batches behind its partitions'
# high watermarks (from the Fetch responses, right on Tansu too), batches may be
# `_CATCH_UP_FACTOR` times `TOUCHFLOW_BATCH_MAX_EVENTS`: fewer fetches, produce requests,
# commits and acknowledgement waits per event while the lag, not the batch, sets latency;
# near real time the set cap keeps a hiccup's backlog out of one long batch
# (docs/decisions.md, "Batch caps").
_CATCH_UP_LAG = 8
_CATCH_UP_FACTOR = 4


class KafkaRuntime:
    """Consume -> process -> commit, until `stop()` (the worker calls it on SIGTERM/SIGINT)."""

    def __init__(
        self, settings: Settings, topics: TopicNames, processor_factory: Callable[[Sink],
                                                                                  Processor],
        *, metrics: Metrics | None = None, readiness: Readiness | None = None,
        sink_factory: SinkFactory = kafka_sink,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._processor_factory = processor_factory
        self._sink_factory = sink_factory  # the processor's output (service/stream/sink.py)
        self.metrics = metrics
        self.readiness = readiness
        self.processor: Processor | None = None
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None
        self._producer: Any = None  # aiokafka's (no type stubs)
        self._assigned: set[TopicPartition] = set()
        # per partition, past the last batch taken
        self._next_offsets: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._pipe = asyncio.Lock()
        self._inflight: deque[_InFlight] = deque()
        self.lease = GroupLease(settings.session_timeout_ms)
        self._commits = OffsetCommits(lambda: self.consumer, lambda: self.lease.live(),
                                      lambda: self.lease.age(), metrics=metrics,
                                      readiness=readiness,
                                      timeout_s=settings.broker_timeout_s)
        self._lapsed = False  # the lease expired: fetching paused until it is renewed

    @property
    def consumer(self) -> Consumer:
        """The started consumer (aiokafka's, or Faust's through `FaustConsumer`)."""
        if self._consumer is None:
            raise RuntimeError("the worker's consumer is not started")
        return self._consumer

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit, and leave the group."""
        self._stopping.set()
        if self.readiness is not None:
            self.readiness.mark_stopping()

    async def _start_clients(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        settings = self.settings
        security = settings.kafka_security()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=2,
            max_batch_size=settings.producer_max_batch_bytes,
            request_timeout_ms=int(settings.broker_timeout_s * 1000), **security,
        )
        await asyncio.wait_for(self._producer.start(), settings.broker_timeout_s)
        self.processor = self._processor_factory(self._sink_factory(self._producer, settings))
        if self.processor.fence is None:  # the factory (service/stream/worker.py) does not know it
            self.processor.fence = self.lease.check
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.app_id}-worker",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=settings.partition_fetch_max_bytes,
            # how long the broker may hold a fetch with no data: short, or an idle partition's
            # fetch (responses, repartition) delays the next events (docs/decisions.md,
            # "Fetch early and briefly").
            fetch_max_wait_ms=max(5, min(100, settings.batch_max_wait_ms)),
            fetch_max_bytes=settings.fetch_max_bytes,
            **settings.group_member(),
        )
        await asyncio.wait_for(consumer.start(), settings.broker_timeout_s)
        self.lease.attach(consumer)
        consumer.subscribe(
            [self.topics.events, self.topics.responses, self.topics.repartition],
            listener=_listener(self),
        )
        self._consumer = consumer

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.lease.assigned()
        self._lapsed = False  # (a new assignment is not paused)
        self._assigned = set(assigned)
        self._next_offsets = {}
        self._commits.assigned(assigned)
        # Profile partitions are those of the repartition topic; the input topics' partitions
        # are co-partitioned with them when their counts match (else all events are forwarded).
        partitions = self._owned(assigned)
        if self.readiness is not None:
            self.readiness.mark_assigned(partitions)
        if self.metrics is not None:
            self.metrics.partitions_assigned.set(len(partitions))
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})
        if self.processor is not None:
            await self.processor.assign(partitions)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish and commit the batches in flight while the partitions are still ours; if a
        # step fails, they are left to the next owner (their offsets are not committed).
        try:
            async with self._pipe:
                await self._advance(keep=0, retry=False)
            await self._commits.last()
        finally:
            partitions = self._owned(revoked)
            self._commits.forget(revoked)
            if self.readiness is not None:
                self.readiness.mark_revoked(partitions)
            if self.processor is not None:
                await self.processor.revoke(partitions)
            log.info("partitions revoked", extra={"partitions": sorted(partitions)})

    def _owned(self, tps: Iterable[TopicPartition]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.topics.repartition}

    async def run(self) -> None:
        """The loop; returns after `stop()` once the last batch is committed."""
        from service.ops.gcpolicy import GcPolicy

        collector = GcPolicy()
        await self._start_clients()
        assert self.processor is not None
        settings = self.settings
        consumer = self.consumer
        wait_ms = max(1, settings.batch_max_wait_ms)
        cap = settings.batch_max_events
        try:
            while not self._stopping.is_set():
                self._follow_lease()
                batch = await consumer.getmany(timeout_ms=wait_ms, max_records=cap)
                if not batch:
                    async with self._pipe:
                        await self._advance(keep=0)  # idle: finish what is in flight
                    await self._observe_lag()
                    continue
                messages = list(chain.from_iterable(batch.values()))  # ConsumerRecords
                self._commits.taken(batch)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                cap = self._next_cap(offsets)
                async with self._pipe:  # (a rebalance waits: these partitions are still ours)
                    await _let_the_fetcher_send()
                    await self._begin(messages, offsets)
                    await self._advance(keep=1)
                await self._observe_lag()
                collector.after_batch()
        finally:
            try:
                async with self._pipe:  # a failure now leaves the batches to the restart
                    await self._advance(keep=0, retry=False)
            finally:
                await self._commits.last()
                collector.close()
                await self._shutdown()

    def _next_cap(self, offsets: Mapping[TopicPartition, int]) -> int:
        """The next batch's size cap: larger while the worker is far behind on its partitions
        (`_CATCH_UP_LAG`), counted over every partition it has taken a batch from."""
        positions = self._next_offsets
        positions.update(offsets)
        cap = self.settings.batch_max_events
        behind = 0
        consumer = self.consumer
        for tp, next_offset in positions.items():
            high = consumer.highwater(tp)
            if high is not None:
                behind += high - next_offset
        return cap * _CATCH_UP_FACTOR if behind > cap * _CATCH_UP_LAG else cap

    # -- the pipeline ------------------------------------------------------------------------
    #
    # A batch is begun (decided, its output shipped), then its changelog is sent once the
    # output is acknowledged, then it is completed (store written) once the changelog is, and
    # its offsets are committed. Each new batch advances the older ones by one step, so the
    # broker's acknowledgements of batch n arrive while batch n+1 is decided instead of being
    # waited for; the waits batch the next events (docs/decisions.md, "The pipelined
    # runtime"). At most three batches are in flight; steps run in batch order, under
    # `_pipe`, which the rebalance listener also takes to drain the pipeline before partitions move.

    async def _begin(self, messages: list[Record],
                     offsets: dict[TopicPartition, int]) -> None:
        assert self.processor is not None
        entry = _InFlight(messages, offsets)
        self._inflight.append(entry)
        try:
            entry.batch = await self.processor.begin(messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._recover(exc)

    async def _advance(self, keep: int, *, retry: bool = True) -> None:
        """Move every batch but the newest `keep` one step on (all the way when `keep` is 0);
        complete batches have their offsets committed. A failed step: with `retry`, process
        the batches in flight again; without (rebalance, shutdown), abandon them."""
        assert self.processor is not None
        processor = self.processor
        try:
            while len(self._inflight) > keep:
                for entry in list(self._inflight)[:len(self._inflight) - keep]:
                    if entry.batch is None:  # its begin was cancelled
                        raise RuntimeError("a batch in flight was never begun")
                    if entry.changelog_sent:
                        await processor.complete(entry.batch)
                        self._inflight.popleft()
                        await self._commits.schedule(entry.offsets)
                    else:
                        await processor.send_changelog(entry.batch)
                        entry.changelog_sent = True
                if keep:
                    break
        except asyncio.CancelledError:
            raise
        except AssignmentLost as exc:
            self._fenced(exc)
        except Exception as exc:
            if retry:
                await self._recover(exc)
            else:
                self._abandon(exc)
        else:
            if self.readiness is not None:
                self.readiness.clear_crashed("worker")

    async def _recover(self, exc: Exception) -> None:
        """A step failed: abandon every batch in flight, then process them again, one at a
        time, from their messages (retrying until the broker takes their output, or until
        the worker is asked to stop: then the restart replays what is left)."""
        assert self.processor is not None
        self._crashed(exc, sum(len(entry.messages) for entry in self._inflight))
        entries, self._inflight = list(self._inflight), deque()
        self.processor.abandon()
        for number, entry in enumerate(entries):
            try:
                processed = await self._process_with_retry(entry.messages)
            except AssignmentLost as lost:
                self._inflight = deque(entries[number:])
                self._fenced(lost)
                return
            if not processed:
                log.warning("stopping with batches not processed; the restart replays them",
                            extra={"batches": len(entries) - number})
                return
            await self._commits.schedule(entry.offsets)

    def _fenced(self, exc: AssignmentLost) -> None:
        """The lease expired: abandon the batches in flight, and rewind their partitions to
        their first messages, so that they are processed again if they stay ours (else
        their next owner processes them from the committed offsets)."""
        assert self.processor is not None
        log.warning("group membership may be lost: batches in flight abandoned, no changelog "
                    "written", extra={"error": str(exc), "batches": len(self._inflight)})
        self._next_offsets.update(rewind(self.consumer,
                                         (entry.messages for entry in self._inflight)))
        self._inflight.clear()
        self.processor.abandon()

    def _follow_lease(self) -> None:
        """While no heartbeat was answered lately, fetch nothing (a new batch's actions would
        be sent again once it is abandoned; the batches in flight stop at their changelog);
        `getmany` goes on, as aiokafka needs it to, and returns nothing."""
        lapsed = bool(self._assigned) and not self.lease.live()
        if lapsed == self._lapsed:
            return
        self._lapsed = lapsed
        consumer = self.consumer
        partitions = consumer.assignment()
        if lapsed:
            log.warning("no heartbeat answered lately: fetching paused until the group answers",
                        extra={"heartbeat_age_s": round(self.lease.age() or 0.0, 1)})
            consumer.pause(*partitions)
        else:
            consumer.resume(*partitions)

    def _abandon(self, exc: Exception) -> None:
        assert self.processor is not None
        log.error("batches in flight abandoned; they are replayed from the committed offsets",
                  extra={"error": error_summary(exc), "batches": len(self._inflight)})
        self._inflight.clear()
        self.processor.abandon()

    def _crashed(self, exc: Exception, events: int, delay: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.agent_crashes.labels("worker").inc()
        if self.readiness is not None:
            self.readiness.mark_crashed("worker", type(exc).__name__)
        log.error("batch failed; retrying (effects are idempotent)",
                  extra={"error": error_summary(exc), "retry_in_s": delay, "events": events})

    async def _process_with_retry(self, messages: Sequence[Record]) -> bool:
        """Process a batch, retrying with jittered backoff (0.5 s doubling up to
        `TOUCHFLOW_BATCH_RETRY_MAX_S`, plus up to 0.5 s at random); False if the worker was
        asked to stop before it succeeded."""
        from tenacity import (
            AsyncRetrying,
            RetryCallState,
            retry_if_exception_type,
            retry_if_not_exception_type,
        )

        from service.ops.retry import backoff

        assert self.processor is not None

        def crashed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else None
            self._crashed(error if isinstance(error, Exception) else RuntimeError(),
                          len(messages), delay)

        retrying = AsyncRetrying(
            # (CancelledError is no Exception, and a lost assignment is the fence's to handle)
            retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(
                AssignmentLost),
            stop=lambda _: self._stopping.is_set(),
            wait=backoff(0.5, self.settings.batch_retry_max_s), before_sleep=crashed,
            retry_error_callback=lambda _: False,
        )
        if await retrying(self.processor.process, messages) is False:
            return False
        if self.readiness is not None:
            self.readiness.clear_crashed("worker")
        return True

    async def _observe_lag(self) -> None:
        """Per-partition lag, the Fetch responses' high watermark less the last committed
        offset (so a worker that reads on but cannot commit shows a growing lag), at most
        once a second (service/stream/commits.py says where the committed offsets come from)."""
        now = time.monotonic()
        if self.metrics is None or now - self._lag_at < 1.0:
            return
        self._lag_at = now
        from aiokafka.errors import IllegalStateError

        consumer = self.consumer
        committed = self._commits.committed
        for tp in consumer.assignment():
            try:
                high = consumer.highwater(tp)
                if high is None:
                    continue
                base = committed.get(tp)
                if base is None:  # nothing taken since the assignment: still at the committed
                    base = await consumer.position(tp)
            except (AssertionError, IllegalStateError):
                # revoked meanwhile (a rebalance, or the Faust consumer's thread stopping):
                # aiokafka asserts the partition is assigned; a gauge must not stop the loop
                continue
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, high - base))

    async def _shutdown(self) -> None:
        started = time.monotonic()
        with contextlib.suppress(Exception):
            if self.processor is not None:
                await self.processor.close()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), 10)
        log.info("worker stopped", extra={"seconds": round(time.monotonic() - started, 3)})


async def _let_the_fetcher_send() -> None:
    """Yield `_FETCH_YIELDS` turns of the event loop (see there), so that the next Fetch
    request is on its way while this batch is decided."""
    for _ in range(_FETCH_YIELDS):
        await asyncio.sleep(0)


class _InFlight:
    """A batch in the pipeline: its messages (to process again after a failure), the offsets
    to commit once it is complete, and how far it got."""

    __slots__ = ("batch", "changelog_sent", "messages", "offsets")

    def __init__(self, messages: list[Record], offsets: dict[TopicPartition, int]) -> None:
        self.messages = messages
        self.offsets = offsets
        self.batch: PendingBatch | None = None
        self.changelog_sent = False


def _listener(runtime: KafkaRuntime) -> object:
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(_Listener, ConsumerRebalanceListener):  # type: ignore[misc]
        """aiokafka needs an instance of its ABC."""

    return Listener(runtime)


class _Listener:
    """aiokafka rebalance listener forwarding to the runtime."""

    def __init__(self, runtime: KafkaRuntime) -> None:
        self._runtime = runtime

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> Awaitable[None]:
        return self._runtime._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> Awaitable[None]:
        return self._runtime._on_assigned(set(assigned))
