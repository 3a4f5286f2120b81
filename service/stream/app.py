"""`create_app(settings)`: a Faust app that runs Touchflow's worker, around one `Processor`.

Nothing here runs at import time and there is no global app: every call builds a fresh,
independent `Touchflow` (tests and embedding apps build their own).

Touchflow's topics do not go through Faust agents: `FaustRuntime` (service/stream/faust_runtime.py)
drives the same pipeline as the default runtime through Faust's consumer, with the same
delivery guarantee (offsets committed only once a batch's effects are durable). A Faust user
adds agents of their own to `touchflow.app` (examples/faust_embedding/).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from service.domain.profile import Profile
from service.domain.rules import Rulebook, load_rulebook
from service.ops.health import Readiness
from service.ops.metrics import Metrics
from service.ops.settings import Settings
from service.stream.context import ContextReader
from service.stream.faust_runtime import FaustRuntime
from service.stream.processor import Processor
from service.stream.sink import Sink, SinkFactory, kafka_sink
from service.stream.store import PartitionStore
from service.stream.topics import TopicNames

if TYPE_CHECKING:
    from service.stream.signal_aggregator import SignalAggregator

__all__ = ["Touchflow", "create_app"]

log = logging.getLogger(__name__)


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
    runtime: FaustRuntime

    def profile(self, key: str) -> Profile | None:
        """The durable profile `key` (e.g. "customer_id:c-1"; a merged alias reads as its
        redirect) when this worker owns its partition, else None: what an agent or a web
        view of an embedding app reads instead of a Faust table (README, "Runtimes")."""
        raw_key = key.encode()
        store = self.processor.store(self.processor.partition_for(raw_key))
        raw = store.get(raw_key) if store is not None else None
        return Profile.from_bytes(raw) if raw is not None else None


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from Touchflow's settings (broker, security, group timing); an
    embedding app may be built here and given agents of its own before `create_app`."""
    credentials: Any = None  # Faust's credential classes (no type stubs)
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
        consumer_max_fetch_size=settings.partition_fetch_max_bytes,
        producer_linger=0.002,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        producer_acks=-1,
        logging_config=None,
    )


def create_app(
    settings: Settings,
    *,
    rulebook: Rulebook | None = None,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    in_place: bool = True,
    recover: Callable[[Mapping[int, PartitionStore]], Awaitable[object]] | None = None,
    app: faust.App | None = None,
    sink_factory: SinkFactory = kafka_sink,
) -> Touchflow:
    """Build the worker inside `app` (default: a Faust app configured from `settings`); it
    starts with the app, once the context topic is loaded (and the signal aggregator started,
    when the rulebook has signals). `sink_factory` builds where its records go (default:
    Faust's producer; service/stream/sink.py)."""
    rulebook = rulebook if rulebook is not None else load_rulebook(settings.rules)
    metrics = metrics if metrics is not None else Metrics()
    readiness = readiness if readiness is not None else Readiness()
    topics = TopicNames.from_settings(settings)
    app = app if app is not None else faust_app(settings)
    context = ContextReader(settings, topics.context, metrics=metrics, readiness=readiness)
    metrics.rulebook.info({"version": rulebook.version})

    def make_processor(sink: Sink) -> Processor:
        return Processor(settings, topics, rulebook, sink, context=context.table,
                         metrics=metrics, readiness=readiness, in_place=in_place,
                         recover=recover)

    runtime = FaustRuntime(settings, topics, make_processor, app, metrics=metrics,
                           readiness=readiness, sink_factory=sink_factory)
    aggregator: SignalAggregator | None = None

    async def before() -> None:
        nonlocal aggregator
        await context.start()
        await context.wait_loaded()
        if rulebook.signals:
            from service.stream.signal_aggregator import SignalAggregator

            aggregator = SignalAggregator(settings, topics, rulebook, metrics, readiness)
            await aggregator.start()
        readiness.mark_started()  # (as the default runtime: once the context is loaded)
        log.info("worker started", extra={"rulebook": rulebook.version,
                                          "group": settings.app_id, "runtime": "faust"})

    async def after() -> None:
        if aggregator is not None:
            await aggregator.stop()
        await context.stop()

    runtime.install(before, after)
    assert runtime.processor is not None
    return Touchflow(settings, app, topics, rulebook, runtime.processor, context, metrics,
                     readiness, runtime)


