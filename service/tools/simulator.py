"""`touchflow simulate`: send simulated customer journeys to the events topic at a steady rate.

The journeys come from the pure generator `service.tools.workload.journeys`. This module adds what
is live about them: pacing (a token bucket, `rate` events per second, 0 = as fast as the
broker takes them); the Kafka key (the customer's profile key, e.g. ``customer_id:c-000042``,
so one customer's events stay in order on the partition that owns the profile); and the
clock: with ``clock="wall"`` (the default) every event is stamped with the wall-clock time at
which it is sent, in the customer's own UTC offset, so event time tracks real time whatever
the rate, and its event id gets a per-run suffix (so a second run with the same seed is not
taken for redeliveries); ``clock="generated"`` keeps the generator's events exactly, times
from ``start`` (default now). Without a limit the simulation goes on forever: when the
customers' journeys end, the next ones begin (seed + 1, seed + 2, ...). ``--output
FILE.jsonl`` writes the generated events to a file instead.

Every await that talks to the broker has a timeout; a send that fails after the producer's own
retries ends the run with `SimulatorError`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from schemas.codec import dumps, dumps_line
from schemas.vocabulary import IDENTIFIER_FIELDS
from service.tools.workload import journeys

__all__ = ["SimulatorError", "customer_key", "register", "simulate", "write_log"]

START_TIMEOUT_S = 20.0
SEND_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 30.0
_ACK_CHECK_EVERY = 500


class SimulatorError(RuntimeError):
    """The simulation could not reach the broker or deliver its events."""


def customer_key(event: Mapping[str, Any]) -> bytes | None:
    """The Kafka key of an event: ``<field>:<value>`` of its first identifier in
    `IDENTIFIER_FIELDS` order, e.g. ``b"customer_id:c-000042"``.

    It is exactly the profile key the worker derives (`schemas.event.Event.key`), so with the
    default partitioner each event already sits in the partition that owns its profile and
    the worker processes it in place instead of forwarding it through the repartition topic.
    """
    identity = event.get("identity") or {}
    for name in IDENTIFIER_FIELDS:
        value = identity.get(name)
        if value:
            return f"{name}:{value}".encode()
    return None


def _endless(seed: int, customers: int, start: datetime) -> Iterator[dict[str, Any]]:
    """The journeys of seed, then seed + 1, ...: each epoch starts an hour after the last."""
    epoch = 0
    while True:
        last: str | None = None
        for event in journeys(seed + epoch, customers, start):
            last = event["occurred_at"]
            yield event
        if last is None:
            return
        start = datetime.fromisoformat(last) + timedelta(hours=1)
        epoch += 1


class _WallClock:
    """Restamps events with the current time in each event's own UTC offset, never backwards."""

    def __init__(self) -> None:
        self._base = time.time() - time.monotonic()
        #: Appended to event ids: a second live run with the same seed must not look like
        #: redeliveries of the first (the worker would drop them as duplicates).
        self.run_tag = f"-{int(time.time() * 1000):x}"
        self._zones: dict[str, timezone] = {}

    def stamp(self, occurred_at: str) -> str:
        suffix = "Z" if occurred_at.endswith("Z") else occurred_at[-6:]
        zone = self._zones.get(suffix)
        if zone is None:
            parsed = datetime.fromisoformat("2026-01-01T00:00:00" + suffix).tzinfo
            zone = parsed if isinstance(parsed, timezone) else UTC
            self._zones[suffix] = zone
        moment = datetime.fromtimestamp(self._base + time.monotonic(), zone)
        text = moment.isoformat(timespec="milliseconds")
        return text[:-6] + "Z" if suffix == "Z" else text


class _TokenBucket:
    """Allows `rate` events per second on average, bursts of up to `burst`; rate 0 = no limit."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 20)
        self._tokens = self.burst
        self._last = time.monotonic()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            await asyncio.sleep((1.0 - self._tokens) / self.rate)
            now = time.monotonic()
            self._tokens += (now - self._last) * self.rate
            self._last = now
        self._tokens -= 1.0


class _Acks:
    """Counts acknowledged sends and remembers the first failure."""

    def __init__(self, on_sent: Callable[[int], None] | None) -> None:
        self.done = 0
        self.error: BaseException | None = None
        self._on_sent = on_sent

    def __call__(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.error = self.error or error
            return
        self.done += 1
        if self._on_sent is not None and self.done % _ACK_CHECK_EVERY == 0:
            self._on_sent(self.done)


async def simulate(
    bootstrap: str,
    topic: str,
    *,
    rate: float,
    seed: int,
    customers: int,
    limit: int | None,
    on_sent: Callable[[int], None] | None = None,
    clock: str = "wall",
    start: datetime | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Send simulated events to `topic` until `limit` (or forever); return how many were sent.

    `on_sent(total)` is called with the running count of acknowledged events (every 500, and
    once at the end). On cancellation the events already handed to the producer are flushed
    (bounded by a timeout), the producer is closed, and the cancellation propagates.
    """
    from aiokafka.errors import KafkaError

    _check_arguments(clock, rate, customers, limit)
    producer = await _start_producer(bootstrap, client_options)
    acks = _Acks(on_sent)
    wall = _WallClock() if clock == "wall" else None
    origin = start or datetime.now(UTC).replace(microsecond=0)
    try:
        events = _endless(seed, customers, origin)
        await _send_paced(producer, topic, events, limit, _TokenBucket(rate), wall, acks)
        await asyncio.wait_for(producer.flush(), FLUSH_TIMEOUT_S)
        if acks.error is not None:
            raise SimulatorError(f"sending to {topic} failed: {acks.error}")
    except TimeoutError:
        raise SimulatorError(
            f"the broker at {bootstrap} did not accept events for {SEND_TIMEOUT_S:.0f}s"
        ) from None
    except KafkaError as exc:
        raise SimulatorError(f"sending to {topic} failed: {type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.flush(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)
        if on_sent is not None:
            on_sent(acks.done)
    return acks.done


def _check_arguments(clock: str, rate: float, customers: int, limit: int | None) -> None:
    """Refuse an unknown clock or a negative rate or limit before anything connects."""
    if clock not in ("wall", "generated"):
        raise ValueError("clock must be 'wall' or 'generated'")
    if rate < 0 or customers < 1 or (limit is not None and limit < 0):
        raise ValueError("rate must be >= 0, customers >= 1 and limit >= 0")


async def _start_producer(bootstrap: str, client_options: Mapping[str, Any] | None) -> Any:
    """A started producer, or a SimulatorError saying the broker cannot be reached."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks=1, max_batch_size=65536,
        request_timeout_ms=int(SEND_TIMEOUT_S * 1000), **dict(client_options or {}),
    )
    try:
        await asyncio.wait_for(producer.start(), START_TIMEOUT_S)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5)
        raise SimulatorError(
            f"cannot connect to the Kafka broker at {bootstrap} ({type(exc).__name__}); "
            "check TOUCHFLOW_BROKER and that the broker is running."
        ) from None
    return producer


async def _send_paced(producer: Any, topic: str, events: Iterator[dict[str, Any]],
                      limit: int | None, bucket: _TokenBucket, wall: _WallClock | None,
                      acks: _Acks) -> None:
    """Hand `events` to the producer at the bucket's pace until `limit`, restamped to the
    wall clock when `wall` is set; stop at the first failed acknowledgement."""
    sent = 0
    loop = asyncio.get_running_loop()
    # One deadline, armed only while a send waits on the producer (never while pacing).
    async with asyncio.timeout(None) as deadline:
        for event in events:
            if limit is not None and sent >= limit:
                break
            await bucket.take()
            if wall is not None:
                event["occurred_at"] = wall.stamp(event["occurred_at"])
                event["event_id"] += wall.run_tag
            deadline.reschedule(loop.time() + SEND_TIMEOUT_S)
            future = await producer.send(topic, dumps(event), key=customer_key(event))
            deadline.reschedule(None)
            future.add_done_callback(acks)
            sent += 1
            if sent % _ACK_CHECK_EVERY == 0 and acks.error is not None:
                raise SimulatorError(f"sending to {topic} failed: {acks.error}")


async def _ensure_topic(bootstrap: str, topic: str, partitions: int, replication: int,
                        client_options: Mapping[str, Any]) -> None:
    """Create `topic` with `partitions` partitions unless it exists (the worker's count)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **dict(client_options))
    try:
        await asyncio.wait_for(admin.start(), START_TIMEOUT_S)
    except Exception as exc:
        raise SimulatorError(
            f"cannot connect to the Kafka broker at {bootstrap} ({type(exc).__name__}); "
            "check TOUCHFLOW_BROKER and that the broker is running."
        ) from None
    try:
        # list_topics, not describe_topics: a metadata request naming the topic may make the
        # broker auto-create it with its default partition count.
        if topic in await asyncio.wait_for(admin.list_topics(), 15):
            return
        with contextlib.suppress(TopicAlreadyExistsError):
            await asyncio.wait_for(
                admin.create_topics([NewTopic(topic, partitions, replication)]), 30)
    finally:
        await asyncio.wait_for(admin.close(), 10)


def write_log(path: Path, *, seed: int, customers: int, limit: int, start: datetime) -> int:
    """Write `limit` generated events (generated times, from `start`) as JSONL; return count.

    The same arguments always give the same file: an input for `touchflow replay`."""
    count = 0
    with open(path, "wb") as out:
        for event in _endless(seed, customers, start):
            if count >= limit:
                break
            out.write(dumps_line(event))
            count += 1
    return count


def _run(args: argparse.Namespace) -> int:
    from service.ops.settings import load_settings

    start: datetime | None = None
    if args.start:
        with contextlib.suppress(ValueError):
            start = datetime.fromisoformat(args.start)
        if start is None or start.tzinfo is None:
            print(f"touchflow: --start={args.start!r} is not valid: must be ISO-8601 with a UTC "
                  "offset, e.g. 2026-03-02T09:00:00+09:00.", file=sys.stderr)
            return 2
    if args.output:
        if args.limit is None:
            print("touchflow: --output needs --limit (how many events to write).",
                  file=sys.stderr)
            return 2
        origin = start or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            written = write_log(Path(args.output), seed=args.seed, customers=args.customers,
                                limit=args.limit, start=origin)
        except OSError as exc:
            print(f"touchflow: cannot write {args.output}: {exc.strerror}.", file=sys.stderr)
            return 2
        print(f"simulate: wrote {written} events to {args.output} (seed {args.seed}, "
              f"start {origin.isoformat()})", file=sys.stderr)
        return 0
    settings = load_settings()
    topic = args.topic or settings.topic("events")
    security = settings.kafka_security()
    progress = {"sent": 0, "shown": time.monotonic()}

    def on_sent(total: int) -> None:
        progress["sent"] = total
        now = time.monotonic()
        if not args.quiet and now - progress["shown"] >= 5.0:
            progress["shown"] = now
            print(f"simulate: {total} events sent to {topic}", file=sys.stderr, flush=True)

    async def main() -> int:
        await _ensure_topic(settings.bootstrap_servers, topic, settings.partitions,
                            settings.replication_factor, security)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        return await simulate(
            settings.bootstrap_servers, topic, rate=args.rate, seed=args.seed,
            customers=args.customers, limit=args.limit, on_sent=on_sent, clock=args.clock,
            start=start, client_options=security,
        )

    began = time.monotonic()
    try:
        sent = asyncio.run(main())
    except SimulatorError as error:
        print(f"touchflow: {error}", file=sys.stderr)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        sent = int(progress["sent"])
    seconds = time.monotonic() - began
    print(f"simulate: sent {sent} events to {topic} in {seconds:.1f}s "
          f"({sent / max(seconds, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0


def _at_least(minimum: float, kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate", help="send simulated customer journeys to the events topic",
        description="Send seeded, realistic multichannel customer journeys to "
        "<TOUCHFLOW_TOPIC_PREFIX>.events on TOUCHFLOW_BROKER. Ctrl-C stops cleanly.",
    )
    parser.add_argument("--rate", type=_at_least(0, float), default=50.0,
                        help="events per second (0 = as fast as possible; default 50)")
    parser.add_argument("--limit", type=_at_least(0, int), default=None,
                        help="stop after this many events (default: run until stopped)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--customers", type=_at_least(1, int), default=2000,
                        help="number of simulated customers (default 2000)")
    parser.add_argument("--topic", default=None,
                        help="target topic (default <TOUCHFLOW_TOPIC_PREFIX>.events)")
    parser.add_argument("--clock", choices=("wall", "generated"), default="wall",
                        help="wall: stamp events with the send time (default); "
                        "generated: keep the generated event times from --start")
    parser.add_argument("--start", default=None,
                        help="start of generated event time, ISO-8601 with offset "
                        "(with --clock generated; default now)")
    parser.add_argument("--output", default=None, metavar="FILE.jsonl",
                        help="write the events to a JSONL file instead of Kafka (generated "
                        "times from --start, default today 00:00 UTC; needs --limit)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=_run)
