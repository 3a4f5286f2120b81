"""`touchflow worker`: start-up checks, the metrics/health server, and the runtime.

Start-up order: settings (already loaded by the CLI) -> rulebook -> data directory ->
metrics and health server (so /healthz answers and /readyz says "not ready" while we wait) ->
broker reachable and topics present, retried with backoff and one log line per attempt ->
the runtime (the lean loop, or a Faust worker), until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.ops.settings import Settings
from service.stream.sink import SinkFactory, kafka_sink
from service.stream.topics import TopicNames, ensure_topics

if TYPE_CHECKING:
    from service.domain.rules import Rulebook
    from service.stream.app import Touchflow
    from service.stream.signal_aggregator import SignalAggregator

__all__ = ["StartupError", "check_data_dir", "run_embedded", "run_worker", "wait_for_broker"]

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The worker cannot start; the message is one sentence saying what to fix."""


def check_data_dir(settings: Settings) -> None:
    """Fail early, readably, if the RocksDB data directory cannot be written."""
    if settings.store != "rocksdb://":
        return
    path = Path(settings.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".touchflow-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"TOUCHFLOW_DATA_DIR={str(path)!r} is not writable ({exc.strerror}); "
            "point it at a writable directory or use TOUCHFLOW_STORE=memory://."
        ) from None


class _DropLibraryErrors(logging.Filter):
    """While we wait for the broker, our one warning per attempt says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


async def _unresolvable_hosts(settings: Settings) -> list[str]:
    loop = asyncio.get_running_loop()
    bad = []
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            await loop.getaddrinfo(host, int(port))
        except OSError:
            bad.append(host)
    return bad


async def wait_for_broker(
    settings: Settings, topics: TopicNames, *, attempts: int | None = None,
    max_delay_s: float | None = None, dns_attempts: int = 3,
) -> dict[str, int]:
    """Create/verify the topics, retrying with jittered exponential backoff (1 s doubling up
    to `max_delay_s`, default `TOUCHFLOW_RETRY_MAX_S`, plus up to 1 s at random: workers
    restarted together spread out) while the broker is down.

    An unreachable broker is retried forever (or `attempts` times): brokers restart. A host
    name that does not resolve `dns_attempts` times in a row is a configuration error.
    """
    from tenacity import (
        AsyncRetrying,
        RetryCallState,
        retry_if_exception_type,
        stop_after_attempt,
        stop_never,
    )

    from service.ops.retry import backoff

    unresolved = 0

    async def attempt() -> dict[str, int]:
        nonlocal unresolved
        try:
            return await ensure_topics(settings, topics)
        except (TimeoutError, OSError) as exc:
            reason = type(exc).__name__
        except Exception as exc:
            if "KafkaConnectionError" not in type(exc).__name__ and "Unable" not in str(exc):
                raise
            reason = str(exc) or type(exc).__name__
        bad_hosts = await _unresolvable_hosts(settings)
        unresolved = unresolved + 1 if bad_hosts else 0
        if unresolved >= dns_attempts:
            raise StartupError(
                f"TOUCHFLOW_BROKER={settings.broker!r}: host {bad_hosts[0]!r} does not "
                "resolve; check the broker host name."
            )
        raise _Unreachable(reason)

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            f"broker {settings.broker} unreachable (attempt {state.attempt_number}), "
            f"retrying in {delay:.1f}s",
            extra={"attempt": state.attempt_number, "error": str(error)},
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(_Unreachable),
        stop=stop_after_attempt(attempts) if attempts is not None else stop_never,
        wait=backoff(1.0, max_delay_s if max_delay_s is not None else settings.retry_max_s),
        before_sleep=log_retry, reraise=True,
    )
    library = logging.getLogger("aiokafka")
    quiet = _DropLibraryErrors()
    library.addFilter(quiet)
    try:
        counts: dict[str, int] = await retrying(attempt)
        return counts
    except _Unreachable as exc:
        raise StartupError(
            f"cannot reach the Kafka broker at {settings.broker} after {attempts} "
            f"attempts ({exc}); check TOUCHFLOW_BROKER and that the broker is running."
        ) from None
    finally:
        library.removeFilter(quiet)


class _Unreachable(Exception):
    """One attempt found the broker unreachable (retried); the message is why."""


Task = Callable[[], Coroutine[object, object, None]]


def run_worker(settings: Settings, *, tasks: Sequence[Task] = (),
               broker_attempts: int | None = None,
               customize: Callable[[Touchflow], None] | None = None,
               sink_factory: SinkFactory = kafka_sink) -> int:
    """Run one worker until stopped; return the process exit code. `customize` (Faust
    runtime only) gets the `Touchflow` before its app starts, to add agents of one's own;
    `sink_factory` builds where the worker's records go (service/stream/sink.py)."""
    from service.domain.rules import load_rulebook

    rulebook = load_rulebook(settings.rules)
    check_data_dir(settings)
    if settings.runtime == "faust":
        return _run_faust(settings, rulebook, tasks, broker_attempts, customize, sink_factory)
    if customize is not None:
        raise StartupError("adding Faust agents to the worker needs TOUCHFLOW_RUNTIME=faust.")
    return asyncio.run(_run_kafka(settings, rulebook, tasks, broker_attempts, sink_factory))


async def _run_kafka(settings: Settings, rulebook: Rulebook, tasks: Sequence[Task],
                     broker_attempts: int | None, sink_factory: SinkFactory) -> int:
    from service.ops.health import Readiness, start_http
    from service.ops.metrics import Metrics
    from service.stream.context import ContextReader
    from service.stream.processor import Processor
    from service.stream.runtime import KafkaRuntime
    from service.stream.sink import Sink

    metrics = Metrics()
    readiness = Readiness()
    metrics.rulebook.info({"version": rulebook.version})
    topics = TopicNames.from_settings(settings)
    main = asyncio.current_task()
    runtime: KafkaRuntime | None = None

    def on_signal() -> None:
        if runtime is not None:
            runtime.stop()
        elif main is not None:
            main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    http = await start_http(settings.metrics_host, settings.metrics_port, metrics, readiness)
    log.info(f"metrics and health on http://{settings.metrics_host}:{http.port}/metrics")
    context = ContextReader(settings, topics.context, metrics=metrics, readiness=readiness)
    aggregator: SignalAggregator | None = None
    extra: list[asyncio.Task[None]] = []
    try:
        counts = await wait_for_broker(settings, topics, attempts=broker_attempts)
        in_place = counts.get(topics.events) == settings.partitions == counts.get(
            topics.responses)
        if not in_place:
            log.warning("events topic partitions differ from TOUCHFLOW_PARTITIONS: "
                        "every event is repartitioned (slower)")
        await context.start()
        await context.wait_loaded()
        if rulebook.signals:
            from service.stream.signal_aggregator import SignalAggregator

            aggregator = SignalAggregator(settings, topics, rulebook, metrics, readiness)
            await aggregator.start()

        def make_processor(sink: Sink) -> Processor:
            return Processor(settings, topics, rulebook, sink, context=context.table,
                             metrics=metrics, readiness=readiness, in_place=in_place)

        runtime = KafkaRuntime(settings, topics, make_processor, metrics=metrics,
                               readiness=readiness, sink_factory=sink_factory)
        readiness.mark_started()
        log.info("worker started", extra={"rulebook": rulebook.version,
                                          "group": settings.app_id})
        extra = [asyncio.create_task(task()) for task in tasks]
        await runtime.run()
        return 0
    except asyncio.CancelledError:
        log.info("stopped before the worker started")
        return 0
    finally:
        for task in extra:
            task.cancel()
        for task in extra:
            with contextlib.suppress(BaseException):
                await task
        if aggregator is not None:
            await aggregator.stop()
        await context.stop()
        await http.runner.cleanup()


def _run_faust(settings: Settings, rulebook: Rulebook, tasks: Sequence[Task],
               broker_attempts: int | None, customize: Callable[[Touchflow], None] | None,
               sink_factory: SinkFactory) -> int:
    import faust

    from service.ops.health import Readiness, start_http
    from service.ops.metrics import Metrics
    from service.stream.app import create_app

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    metrics = Metrics()
    readiness = Readiness()
    http = loop.run_until_complete(
        start_http(settings.metrics_host, settings.metrics_port, metrics, readiness)
    )
    log.info(f"metrics and health on http://{settings.metrics_host}:{http.port}/metrics")
    topics = TopicNames.from_settings(settings)
    try:
        counts = loop.run_until_complete(
            wait_for_broker(settings, topics, attempts=broker_attempts)
        )
    except BaseException:
        loop.run_until_complete(http.runner.cleanup())
        raise
    in_place = counts.get(topics.events) == settings.partitions == counts.get(topics.responses)
    touchflow = create_app(
        settings, rulebook=rulebook, metrics=metrics, readiness=readiness, in_place=in_place,
        sink_factory=sink_factory,
    )
    for task in tasks:
        touchflow.app.task(task)
    if customize is not None:
        customize(touchflow)
    worker = faust.Worker(
        touchflow.app, loop=loop, loglevel=settings.log_level.upper(),
        override_logging=False, redirect_stdouts=False, quiet=True,
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        with contextlib.suppress(Exception):
            if loop.is_closed():
                loop = asyncio.new_event_loop()
            loop.run_until_complete(touchflow.processor.close())
            loop.run_until_complete(http.runner.cleanup())
    return code


def run_embedded(program: str, *, runtime: str | None = None,
                 customize: Callable[[Touchflow], None] | None = None,
                 sink_factory: SinkFactory = kafka_sink) -> int:
    """`main()` of a program that runs the worker with its own parts (examples/): settings
    from `TOUCHFLOW_*` (`runtime` fixed when given), logging configured, then `run_worker`;
    a bad setting or a failed start is one line `<program>: <why>` on stderr and exit 2."""
    import sys

    from service.ops.logs import configure_logging
    from service.ops.settings import SettingsError, load_settings

    try:
        settings = load_settings() if runtime is None else load_settings(runtime=runtime)
        configure_logging(settings.log_level, settings.log_format)
        return run_worker(settings, customize=customize, sink_factory=sink_factory)
    except (SettingsError, StartupError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 2
