"""The worker side of cross-customer signals (service/domain/signals.py).

Events are partitioned by customer, but a signal counts across customers (complaints about one
product). Each processor therefore sends, for every event that counts in a signal, a small
record to the internal `signal-feed` topic keyed by `<signal>\\x1f<group>`, so all records of
one group meet in one partition. This aggregator, one per worker, consumes that topic in its
own consumer group (`<app_id>-signals`), so each group is counted by exactly one worker; it
feeds the pure `SignalState` and, when a signal fires, publishes the message to
`<prefix>.operations` (keyed by the group) and the pause to `<prefix>.context` (which every
worker's context reader follows), flushes, and only then commits its offsets. The pause carries
`valid_from`, the time of the event that made the signal fire: decisions read it from that
event time on, not from the wall-clock time it was published at (the record's timestamp).

State is in memory and rebuilt on every assignment: the aggregator seeks its partitions to
the beginning and re-reads them silently up to the committed offset (nothing is published
twice for records already committed), then goes on live. The rebuild runs in the reading loop,
not in the rebalance callback: aiokafka hands out records fetched from the committed offset as
soon as the partitions are assigned, and counted before the older ones they would be skipped
as duplicates on the re-read (a burst straddling a restart then never fired). A record
redelivered after a crash carries the same event id and is counted once; a message published
just before a crash and published again has the same `signal_id`. Keep the feed topic's
retention a little above the longest `within` + `hold` in production; the re-read is then
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from schemas.codec import JSONDecodeError, dumps, loads
from service.domain.rules import Rulebook
from service.domain.signals import SignalState
from service.ops.settings import Settings
from service.stream.background import Background
from service.stream.consumer import Fetched, TopicPartition
from service.stream.topics import TopicNames

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics

__all__ = ["SignalAggregator"]

log = logging.getLogger(__name__)


class SignalAggregator(Background):
    """Counts the signal feed of the partitions this worker owns; publishes what fires."""

    task_name = "touchflow-signals"
    component = "signals"

    def __init__(self, settings: Settings, topics: TopicNames, rulebook: Rulebook,
                 metrics: Metrics | None = None, readiness: Readiness | None = None) -> None:
        self.settings = settings
        self.retry_max_s = settings.retry_max_s
        self.readiness = readiness
        self.topics = topics
        self.rulebook = rulebook
        self.metrics = metrics
        self.state = SignalState(rulebook.signals, rulebook.version)
        self._silent_until: dict[TopicPartition, int] = {}
        self._consumer: Any = None  # aiokafka's (no type stubs)
        self._assigned: set[TopicPartition] | None = None  # an assignment not yet rebuilt

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """A new assignment (the rebalance callback): the reading loop rebuilds from it before
        it counts another record."""
        self._assigned = assigned

    async def _rebuild(self) -> None:
        """Start over from the beginning of the assigned partitions, silently up to their
        committed offsets; again while a newer assignment came during the rebuild."""
        from aiokafka.errors import IllegalStateError

        consumer = self._consumer
        while self._assigned is not None:
            assigned, self._assigned = self._assigned, None
            self.state = SignalState(self.rulebook.signals, self.rulebook.version)
            self._silent_until = {}
            try:
                for tp in assigned:
                    committed = await consumer.committed(tp)
                    self._silent_until[tp] = committed or 0
                if assigned:
                    await consumer.seek_to_beginning(*assigned)
            except IllegalStateError:
                if self._assigned is None:
                    raise
                continue  # revoked meanwhile: rebuild from the newer assignment
            log.info("signal partitions assigned",
                     extra={"partitions": sorted(tp.partition for tp in assigned)})

    async def _attempt(self) -> None:
        """Connect and follow the feed until an error (retried by `Background`: a new
        consumer rebuilds the state on its assignment) or cancellation."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        settings = self.settings
        security = settings.kafka_security()
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                    acks="all", **security)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            **(settings.group_member() | {"group_id": f"{settings.app_id}-signals"}),
        )
        self._consumer = consumer
        self._assigned = None
        try:
            await asyncio.wait_for(producer.start(), settings.broker_timeout_s)
            await asyncio.wait_for(consumer.start(), settings.broker_timeout_s)
            consumer.subscribe([self.topics.signal_feed], listener=_listener(self))
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                if self._assigned is not None:
                    await self._rebuild()  # (`batch` is read again after the rebuild's seek)
                elif batch:
                    await self._handle(batch, producer)
                self._working()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _handle(self, batch: Fetched, producer: Any) -> None:
        """Count a fetch; publish what fired (`producer`: aiokafka's, no type stubs)."""
        offsets: dict[TopicPartition, int] = {}
        published = False
        for tp, records in batch.items():
            silent_until = self._silent_until.get(tp, 0)
            for record in records:
                try:
                    data = loads(record.value or b"")
                    fired = self.state.observe(str(data["signal"]), str(data["group"]),
                                               str(data["event_id"]), int(data["ts_ms"]))
                except (JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a record no worker wrote: skipped
                if fired is None or record.offset < silent_until:
                    continue
                group = fired.message["key"].encode()
                await producer.send(self.topics.operations, key=group,
                                    value=dumps(fired.message))
                await producer.send(self.topics.context, key=fired.context_key.encode(),
                                    value=dumps({"key": fired.context_key,
                                                 "value": fired.context_value,
                                                 "valid_from": fired.at_ms}))
                published = True
                if self.metrics is not None:
                    self.metrics.signals.labels(fired.message["signal"]).inc()
                log.info("signal fired", extra={"signal": fired.message["signal"],
                                                "count": fired.message["count"]})
            if records:
                offsets[tp] = records[-1].offset + 1
        if published:
            await producer.flush()
        if offsets:
            await self._consumer.commit(offsets)


def _listener(aggregator: SignalAggregator) -> object:
    """aiokafka rebalance callbacks (its ABC is imported lazily, like aiokafka itself)."""
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
            return None

        async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
            aggregator._on_assigned(set(assigned))

    return Listener()
