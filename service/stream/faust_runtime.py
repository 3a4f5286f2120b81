"""The Faust runtime: the lean runtime's pipeline (service/stream/runtime.py) driven through Faust's
own consumer, producer and consumer group.

Faust delivers records one at a time: its fetcher awaits a per-message callback (four tasks
per message in `Service.wait_first`), the conductor builds an `Event` per message and queues it
per agent, and a stream acknowledges it after the agent's body moved on. That path caps a
worker near naive Faust's speed and acknowledges a `take_events` batch in a `finally`, so a
batch interrupted at shutdown could be committed unprocessed. Here Faust keeps what it is good
at (the worker's lifecycle, the consumer group and its co-partitioning assignor, the producer,
the user's own agents) and Touchflow's topics skip the per-message path:

* the consumer's drain loop is replaced by `FaustConsumer.getmany`, which fetches whole
  batches from Faust's consumer thread; records of Touchflow's topics go to the same
  `KafkaRuntime` loop as the default runtime's (begin, changelog, complete, then commit),
  records of any other topic (the user's agents) to Faust's per-message callback, as before;
* Touchflow's topics are subscribed without Faust acknowledgements: their offsets are
  committed by the runtime, only once a batch's effects are durable (the default runtime's
  guarantee, checkpoint order in service/stream/processor.py);
* partitions revoked: the pipeline is drained and committed while they are still ours (Faust's
  `on_partitions_revoked` signal); the worker stopping: the same, on `on_before_shutdown`,
  before Faust stops its consumer and producer;
* the group lease (service/stream/fencing.py) watches the heartbeats of Faust's aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service.ops.settings import Settings
from service.stream.batch import Record
from service.stream.consumer import Fetched, TopicPartition
from service.stream.processor import Processor
from service.stream.runtime import KafkaRuntime
from service.stream.sink import Sink, SinkFactory, kafka_sink
from service.stream.topics import TopicNames

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["FaustConsumer", "FaustRuntime"]

log = logging.getLogger(__name__)


class FaustConsumer:
    """The consumer `KafkaRuntime` drives, over a started Faust consumer: batches from its
    consumer thread, commits, positions and seeks there too. `owned` names Touchflow's topics;
    the others' records go to Faust's per-message callback (the user's agents)."""

    def __init__(self, faust_consumer: Any, owned: set[str],
                 stopping: Callable[[], bool]) -> None:
        self._faust = faust_consumer
        self._thread = faust_consumer._thread
        self._owned = owned
        self._stopping = stopping
        self._buffered: dict[TopicPartition, Sequence[Record]] = {}

    @property
    def client(self) -> Any:
        """Faust's aiokafka consumer (it lives in Faust's consumer thread)."""
        return self._thread._ensure_consumer()

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched:
        """Up to `max_records` records of Touchflow's topics, by partition; {} while Faust's
        flow is stopped (a rebalance) or nothing came within `timeout_ms`."""
        if self._buffered:
            return self._take(self._buffered, max_records)
        faust = self._faust
        active = faust._get_active_partitions()
        if self._stopping() or not faust.flow_active or not active:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        thread = self._thread
        records = await thread.call_thread(
            thread._fetch_records, thread._ensure_consumer(), active,
            timeout=timeout_ms / 1000, max_records=max_records,
        )
        if not records:
            return {}
        owned = self._owned
        ours: dict[TopicPartition, Sequence[Record]] = {}
        for tp, batch in records.items():
            if tp.topic in owned:
                ours[tp] = batch
            else:
                await self._deliver(tp, batch)
        return self._take(ours, max_records) if ours else {}

    def _take(self, records: Mapping[TopicPartition, Sequence[Record]],
              limit: int) -> Fetched:
        """At most `limit` records; the rest is kept for the next call."""
        taken: dict[TopicPartition, Sequence[Record]] = {}
        rest: dict[TopicPartition, Sequence[Record]] = {}
        room = limit
        for tp, batch in records.items():
            if room <= 0:
                rest[tp] = batch
            elif len(batch) <= room:
                taken[tp] = batch
                room -= len(batch)
            else:
                taken[tp], rest[tp] = batch[:room], batch[room:]
                room = 0
        self._buffered = rest
        return taken

    async def _deliver(self, tp: TopicPartition, batch: Sequence[Record]) -> None:
        """Another topic's records, one at a time to Faust's conductor, as its own fetch loop
        does (the user's agents acknowledge and commit them the Faust way)."""
        faust = self._faust
        callback = faust.callback
        to_message = faust._to_message
        read = faust._read_offset
        for record in batch:
            previous = read.get(tp)
            if previous is not None and record.offset < previous:
                continue  # (Faust's own loop drops what it read before a seek, too)
            await callback(to_message(tp, record))
            read[tp] = record.offset

    def highwater(self, tp: TopicPartition) -> int | None:
        high = self.client.highwater(_aiokafka_tp(tp))
        return int(high) if high is not None else None

    def assignment(self) -> set[TopicPartition]:
        """The assigned partitions of Touchflow's topics (Faust's own, such as its leader
        topic, and the user's are Faust's to watch, pause and seek)."""
        owned = self._owned
        return {tp for tp in self.client.assignment() if tp.topic in owned}

    async def position(self, tp: TopicPartition) -> int:
        return int(await self._thread.call_thread(self.client.position, _aiokafka_tp(tp)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        # (Faust's own seek is this synchronous call on the thread's consumer, too)
        self._buffered.pop(tp, None)
        self.client.seek(_aiokafka_tp(tp), offset)

    def pause(self, *partitions: TopicPartition) -> None:
        self._faust.pause_partitions(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._faust.resume_partitions(partitions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit in Faust's consumer thread; errors reach the caller (stream/commits.py)."""
        from aiokafka.structs import OffsetAndMetadata

        client = self.client
        await self._thread.call_thread(client.commit, {
            _aiokafka_tp(tp): OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})

    async def stop(self) -> None:
        """Faust stops its consumer itself."""


def _aiokafka_tp(tp: TopicPartition) -> Any:
    from aiokafka.structs import TopicPartition

    return tp if isinstance(tp, TopicPartition) else TopicPartition(tp.topic, tp.partition)


class FaustRuntime(KafkaRuntime):
    """`KafkaRuntime` over a Faust app's consumer and producer; `install` wires it in."""

    def __init__(self, settings: Settings, topics: TopicNames,
                 processor_factory: Callable[[Sink], Processor], app: Any,
                 *, metrics: Metrics | None = None, readiness: Readiness | None = None,
                 sink_factory: SinkFactory = kafka_sink) -> None:
        super().__init__(settings, topics, processor_factory, metrics=metrics,
                         readiness=readiness, sink_factory=sink_factory)
        self.app = app
        # Built now: Faust may assign partitions before the loop starts, and the processor
        # recovers them then; its producer is looked up at the first send.
        self.processor = processor_factory(sink_factory(_FaustProducer(app), settings))
        self.processor.fence = self.lease.check
        self._owned_topics = {topics.events, topics.responses, topics.repartition}
        self._running: asyncio.Future[None] | None = None

    async def _start_clients(self) -> None:
        consumer = FaustConsumer(self.app.consumer, self._owned_topics, self._stopping.is_set)
        self._consumer = consumer
        client = consumer.client
        # Faust fixes its consumer's fetch wait at 1.5 s, which an idle partition (responses,
        # repartition) then adds to the next events' latency; the default runtime's value.
        client._fetcher._fetch_max_wait_ms = max(5, min(100, self.settings.batch_max_wait_ms))
        self.lease.attach(client)
        if self._assigned:
            self.lease.assigned()  # (assigned before the loop started)

    def _follow_lease(self) -> None:
        # While Faust rebalances its flow is stopped and nothing is fetched; the join (half the
        # session timeout on Tansu) outlasts the lease without the membership being lost, and
        # pausing then would leave partitions that stay ours paused in Faust.
        if self.app.consumer.flow_active:
            super()._follow_lease()

    def install(self, before: Callable[[], Awaitable[None]] | None = None,
                after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Subscribe Faust's consumer to Touchflow's topics (no Faust acknowledgements), take
        over its drain loop, and run this runtime with the app: `before` (awaited first, e.g.
        the context table loaded), then the loop, drained on revocation and at shutdown, then
        `after`."""
        app = self.app
        channel = app.topic(self.topics.events, self.topics.responses, self.topics.repartition,
                            key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw", acks=False)
        app.topics.add(channel)
        new_consumer = app._new_consumer

        def consumer_without_drain() -> Any:
            consumer = new_consumer()
            consumer._drain_messages = _idle_until_stopped
            return consumer

        app._new_consumer = consumer_without_drain
        signals: Any = app

        async def on_assigned(sender: object, assigned: Iterable[TopicPartition],
                              **_: object) -> None:
            await self._on_assigned(set(assigned))

        async def on_revoked(sender: object, revoked: Iterable[TopicPartition],
                             **_: object) -> None:
            await self._on_revoked(set(revoked))

        async def on_before_shutdown(sender: object, **_: object) -> None:
            self.stop()
            if self._running is not None:
                await asyncio.shield(self._running)

        signals.on_partitions_assigned.connect(on_assigned)
        signals.on_partitions_revoked.connect(on_revoked)
        signals.on_before_shutdown.connect(on_before_shutdown)

        async def run() -> None:
            try:
                if before is not None:
                    await before()
                self._running = asyncio.ensure_future(self.run())
                await asyncio.shield(self._running)
            finally:
                if after is not None:
                    await after()

        app.task(run)


async def _idle_until_stopped(fetcher: Any) -> None:
    """Faust's fetcher drain loop, replaced: `FaustRuntime` fetches (see the module). Being
    cancelled ends it quietly: Faust's fetcher treats a cancellation during a rebalance as a
    crash to restart from, and has no supervisor to restart it at shutdown."""
    with contextlib.suppress(asyncio.CancelledError):
        await fetcher.wait_until_stopped()


class _FaustProducer:
    """Faust's aiokafka producer, looked up at each use (it exists once the app started)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app.producer._ensure_producer(), name)
