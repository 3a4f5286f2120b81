"""Re-publish an event log to a topic at X times its original pace (staging, load tests).

Each record keeps its original bytes and is keyed by its profile key (`event.key()`), so every
customer's events land in one partition, in log order: one producer sends them in sequence and
aiokafka keeps one batch per partition in flight, so per-customer order survives. Pacing follows
event time: an event is sent `(occurred_at - first occurred_at) / speed` after the start; an
event older than the previous one (a log not sorted by time) goes out at once, never reordered.
`speed <= 0` sends as fast as the broker takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.event import Event
from service.ops.settings import Settings

__all__ = ["PublishResult", "publish_events"]



@dataclass(slots=True)
class PublishResult:
    """What `publish_events` sent."""

    sent: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    log_span_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def publish_events(
    events: Iterable[tuple[Event, bytes]],
    settings: Settings,
    topic: str,
    *,
    speed: float = 1.0,
    max_gap_s: float | None = None,
    tick: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> PublishResult:
    """Send every event to `topic`, paced by event time / `speed`; flush before returning.

    `max_gap_s` caps the wait between two consecutive events (skip idle nights in a week's log).
    Setting `stop` (e.g. from a SIGINT handler) ends the run cleanly: what was sent is flushed.
    """
    stop = stop if stop is not None else asyncio.Event()
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
        max_batch_size=512 * 1024, client_id="touchflow-publish", **settings.kafka_security(),
    )
    try:
        await asyncio.wait_for(producer.start(), settings.broker_timeout_s)
    except Exception as exc:
        await producer.stop()
        raise ConnectionError(f"cannot reach the broker {settings.broker}: {exc!r}; "
                              "set --broker or TOUCHFLOW_BROKER") from None
    result = PublishResult()
    started = time.monotonic()
    first_ms: int | None = None
    last_ms = 0
    skipped = 0.0  # seconds of event time cut out by max_gap_s
    try:
        for event, raw in events:
            ts = event.ts_ms
            if first_ms is None:
                first_ms = last_ms = ts
            if speed > 0:
                gap = (ts - last_ms) / 1000.0
                if max_gap_s is not None and gap > max_gap_s * speed:
                    skipped += gap - max_gap_s * speed
                due = started + ((ts - first_ms) / 1000.0 - skipped) / speed
                delay = due - time.monotonic()
                if delay > 0.001:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                result.interrupted = True
                break
            last_ms = max(last_ms, ts)
            await producer.send(topic, raw, key=event.key().encode())
            result.sent += 1
            if not result.sent & 0xFF:
                await asyncio.sleep(0)  # let the sender and a stop request run
                if tick is not None:
                    tick(result.sent)
        await asyncio.wait_for(producer.flush(), settings.broker_timeout_s)
    except (KeyboardInterrupt, asyncio.CancelledError):
        result.interrupted = True
        await asyncio.wait_for(producer.flush(), settings.broker_timeout_s)
    finally:
        result.seconds = time.monotonic() - started
        if first_ms is not None:
            result.log_span_s = (last_ms - first_ms) / 1000.0
        await producer.stop()
    return result
