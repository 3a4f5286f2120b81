"""`create_app(settings)`: the Faust app, its topics and agents, around one `Processor`.

Nothing here runs at import time and there is no global app: every call builds a fresh,
independent `Touchflow` (tests build many in one process).

The agents take raw bytes (no Faust codec: a value that fails to decode must reach the
dead-letter topic, not crash the agent), read batches with `take_events`, and hand each batch
to the processor. A batch that fails for an unexpected reason (broker unreachable during
flush) is retried with backoff until it succeeds or the worker stops: Faust acknowledges a
batch's events as soon as the agent moves on, so giving up on a batch would lose it. Retrying
is safe because every effect is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust

from service.context import ContextReader
from service.domain.rules import Rulebook, load_rulebook
from service.health import Readiness
from service.metrics import Metrics
from service.processor import Message, Processor
from service.settings import Settings
from service.sink import KafkaSink, Sink
from service.store import PartitionStore
from service.topics import TopicNames

__all__ = ["Touchflow", "create_app"]

log = logging.getLogger(__name__)
_RETRY_MAX_S = 10.0


@dataclass
class Touchflow:
    """Everything one worker is made of."""

    settings: Settings
    app: faust.App
    topics: TopicNames
    rulebook: Rulebook
    processor: Processor
    context: ContextReader
    metrics: Metrics
    readiness: Readiness


def _faust_app(settings: Settings) -> faust.App:
    credentials: Any = None
    if settings.security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else "",
            mechanism=settings.sasl_mechanism,
            ssl_context=settings.kafka_security().get("ssl_context"),
        )
    elif settings.security_protocol == "SSL":
        credentials = faust.SSLCredentials(settings.kafka_security()["ssl_context"])
    session_s = settings.session_timeout_ms / 1000
    return faust.App(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=credentials,
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 5),
        broker_rebalance_timeout=max(session_s * 2, 20.0),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, settings.batch_max_events * 4),
        producer_linger=0.002,
        producer_max_batch_size=512 * 1024,
        producer_acks=-1,
        stream_wait_empty=False,
        logging_config=None,
    )


def _raw_topic(app: faust.App, name: str, partitions: int | None = None,
               internal: bool = False) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=partitions, internal=internal,
    )


def create_app(
    settings: Settings,
    *,
    rulebook: Rulebook | None = None,
    sink: Sink | None = None,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    in_place: bool = True,
    recover: Callable[[Mapping[int, PartitionStore]], Awaitable[Any]] | None = None,
) -> Touchflow:
    """Build the app; `sink` defaults to Faust's own producer (tests pass a `MemorySink`, and
    a `recover` that does not need a broker)."""
    rulebook = rulebook if rulebook is not None else load_rulebook(settings.rules)
    metrics = metrics if metrics is not None else Metrics()
    readiness = readiness if readiness is not None else Readiness()
    topics = TopicNames.from_settings(settings)
    app = _faust_app(settings)
    context = ContextReader(settings, topics.context, metrics=metrics, readiness=readiness)
    processor = Processor(
        settings, topics, rulebook, sink if sink is not None else _LazyFaustSink(app),
        context=context.table, metrics=metrics, readiness=readiness, in_place=in_place,
        recover=recover,
    )
    metrics.rulebook.info({"version": rulebook.version})
    source = _raw_topic(app, topics.events)
    responses = _raw_topic(app, topics.responses)
    repartition = _raw_topic(app, topics.repartition, settings.partitions, internal=True)
    owned = {topics.events, topics.responses, topics.repartition}
    pending: set[asyncio.Future[None]] = set()

    async def run_batches(stream: Any, agent: str) -> None:
        async for events in stream.take_events(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000
        ):
            batch = [
                Message(
                    e.message.topic, e.message.partition, e.message.offset, e.message.key,
                    e.message.value,
                    int(e.message.timestamp * 1000) if e.message.timestamp else None,
                    _headers(e.message.headers),
                )
                for e in events
            ]
            await _process_with_retry(processor, batch, agent, metrics, readiness)

    async def ingest(stream: Any) -> None:
        """Touchpoints and responses: validate, process in place or forward by profile key."""
        await run_batches(stream, "ingest")

    async def decide(stream: Any) -> None:
        """Events forwarded to the partition that owns their profile."""
        await run_batches(stream, "decide")

    app.agent(app.topic(topics.events, topics.responses, key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw"),
              name="touchflow.ingest")(ingest)
    app.agent(repartition, name="touchflow.decide")(decide)
    del source, responses

    def partitions_of(tps: Iterable[Any]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in owned}

    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        partitions = partitions_of(assigned)
        readiness.mark_assigned(partitions)
        metrics.partitions_assigned.set(len(partitions))
        pending.add(asyncio.ensure_future(processor.assign(partitions)))
        pending.difference_update({t for t in pending if t.done()})

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        partitions = partitions_of(revoked)
        readiness.mark_revoked(partitions)
        await processor.revoke(partitions)

    signals: Any = app
    signals.on_partitions_assigned.connect(on_assigned)
    signals.on_partitions_revoked.connect(on_revoked)

    async def follow_context() -> None:
        await context.start()
        try:
            await asyncio.Event().wait()
        finally:
            await context.stop()

    signals.task(follow_context)
    return Touchflow(settings, app, topics, rulebook, processor, context, metrics, readiness)


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), bytes(v)) for k, v in items)


async def _process_with_retry(
    processor: Processor, batch: list[Message], agent: str, metrics: Metrics,
    readiness: Readiness,
) -> None:
    delay = 0.5
    while True:
        try:
            await processor.process(batch)
            readiness.clear_crashed(agent)  # a retried batch that succeeds: ready again
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.agent_crashes.labels(agent).inc()
            readiness.mark_crashed(agent, type(exc).__name__)
            log.error(
                "batch failed, retrying",
                extra={"agent": agent, "error": repr(exc), "retry_in_s": delay,
                       "events": len(batch)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)


class _LazyFaustSink(KafkaSink):
    """A `KafkaSink` over Faust's producer, which exists only once the app runs."""

    def __init__(self, app: faust.App) -> None:
        super().__init__(None)
        self._app = app

    def producer(self) -> Any:
        """Faust's producer, looked up at each use: a batch that sent nothing still ships
        (and flushes) before its offsets commit, so `ship` must not see the unset one."""
        return self._app.producer

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                       partition: int | None, headers: list[tuple[str, bytes]] | None) -> Any:
        # Faust's Producer.send(topic, key, value, partition, timestamp, headers): timestamp
        # has no default there (None: the producer's clock).
        return await self.producer().send(topic, key, value, partition, None, headers)
