"""Events from a time range of Kafka topics, as a plain iterator for replay and publish.

A plain consumer (no group, nothing committed) is assigned every partition of the topics,
seeks each to the first offset at or after `since` (`offsets_for_times`, by record timestamp)
and reads until a record is later than `until`, or until the high watermark that the first
Fetch response reported (`consumer.highwater(tp)`; ListOffsets(latest) is not trusted: the
embedded Tansu broker answers it wrongly, see docs/decisions.md). So a topic that keeps
growing still gives a bounded run.

Partitions are merged into one stream by `(occurred_at, partition, offset)` of each
partition's next record, never reordering a partition: what has to match production is the
order of each customer's events, and production applies them in partition-offset order.
(Replay equals production when each customer's events sit in one partition, as they do when
producers key events by the profile key.)
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.event import Event, EventError, decode_event
from service.ops.settings import Settings
from service.replay.reader import BadRecord, OnBad, ReplayInputError
from service.stream.consumer import TopicPartition

__all__ = ["TopicSource", "assign_topics", "open_consumer", "parse_time"]

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Constants, not settings: they bound replay's own memory while merging partitions by event
# time (events handed on per chunk; a partition paused past `_PAUSE_AT` buffered events).
_CHUNK = 1000
_PAUSE_AT = 20_000
_RESUME_AT = 2_000
Item = tuple[Event, bytes]


def parse_time(text: str, now: datetime | None = None) -> int:
    """Epoch milliseconds of an ISO-8601 time (a date alone means 00:00 UTC, a time without
    offset means UTC), of epoch milliseconds, or of `-7d` / `-12h` / `-30m` (before now)."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        moment = (now or datetime.now(UTC)) - timedelta(
            seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
        return int(moment.timestamp() * 1000)
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2026-03-01T00:00:00+09:00), a date, "
            "epoch milliseconds or -7d/-12h/-30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# aiokafka's consumer, used beyond the runtime's `Consumer` calls (no type stubs)
AiokafkaConsumer = Any


async def open_consumer(settings: Settings) -> AiokafkaConsumer:
    """A started plain consumer (no group, nothing committed) on the configured broker."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        client_id="touchflow-replay", **settings.kafka_security(),
    )
    try:
        await asyncio.wait_for(consumer.start(), settings.broker_timeout_s)
    except (TimeoutError, OSError, Exception) as exc:
        await consumer.stop()
        raise ReplayInputError(
            f"cannot reach the broker {settings.broker}: {exc!r}; "
            "set --broker or TOUCHFLOW_BROKER") from None
    return consumer


async def assign_topics(consumer: AiokafkaConsumer, topics: list[str],
                        settings: Settings) -> list[TopicPartition]:
    """Assign every partition of `topics` to `consumer`; one sentence if a topic is missing."""
    from aiokafka import TopicPartition

    existing = await asyncio.wait_for(consumer.topics(), settings.broker_timeout_s)
    tps: list[TopicPartition] = []
    for topic in topics:
        if topic not in existing:
            raise ReplayInputError(f"topic {topic!r} does not exist on {settings.broker}")
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    consumer.assign(tps)
    return tps


class TopicSource:
    """Iterate `(event, raw)` from `topics` between `since_ms` and `until_ms` (inclusive).

    The consumer runs on its own thread and event loop; iteration happens on the caller's.
    Bad records go to `on_bad` as `topic/partition@offset`.
    """

    def __init__(self, settings: Settings, topics: list[str], on_bad: OnBad, *,
                 since_ms: int | None = None, until_ms: int | None = None) -> None:
        self.settings = settings
        self.topics = topics
        self.on_bad = on_bad
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.label = ",".join(topics)
        self._queue: queue.Queue[list[Item] | BaseException | None] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._starts: dict[TopicPartition, int] = {}
        self._targets: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._finished = False

    def position(self) -> tuple[int, int | None]:
        """Records read so far and in all (known once every partition reported its end)."""
        done = sum(self._positions.get(tp, start) - start for tp, start in self._starts.items())
        if self._finished:
            return done, done
        if not self._starts or len(self._targets) < len(self._starts):
            return done, None
        total = sum(max(0, self._targets[tp] - start) for tp, start in self._starts.items())
        return done, total

    def __iter__(self) -> Iterator[Item]:
        thread = threading.Thread(target=self._thread, name="touchflow-replay-topic",
                                  daemon=True)
        thread.start()
        try:
            while True:
                chunk = self._queue.get()
                if chunk is None:
                    return
                if isinstance(chunk, BaseException):
                    raise chunk
                yield from chunk
        finally:
            self._stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def _put(self, item: list[Item] | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _thread(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # handed to the iterating thread
            self._put(exc if isinstance(exc, ReplayInputError) else ReplayInputError(
                f"reading {self.label} from {self.settings.broker} failed: {exc!r}"))
        else:
            self._put(None)

    async def _read(self) -> None:
        consumer = await open_consumer(self.settings)
        try:
            tps = await assign_topics(consumer, self.topics, self.settings)
            empty = await self._seek(consumer, tps)
            await self._merge(consumer, [tp for tp in tps if tp not in empty])
        finally:
            await consumer.stop()

    async def _seek(self, consumer: AiokafkaConsumer,
                    tps: list[TopicPartition]) -> set[TopicPartition]:
        """Seek every partition to `since`; return those with nothing at or after it."""
        empty: set[TopicPartition] = set()
        if self.since_ms is None:
            await consumer.seek_to_beginning(*tps)
        else:
            found = await asyncio.wait_for(
                consumer.offsets_for_times({tp: self.since_ms for tp in tps}),
                self.settings.broker_timeout_s)
            for tp in tps:
                hit = found.get(tp)
                if hit is None:
                    empty.add(tp)
                else:
                    consumer.seek(tp, hit.offset)
        for tp in tps:
            if tp not in empty:
                self._starts[tp] = await consumer.position(tp)
        return empty

    async def _merge(self, consumer: AiokafkaConsumer, tps: list[TopicPartition]) -> None:
        buffers: dict[TopicPartition, deque[tuple[tuple[int, int, int, str], Item]]] = {
            tp: deque() for tp in tps}
        live = set(tps)  # partitions that may still deliver records
        paused: set[TopicPartition] = set()
        since, until = self.since_ms, self.until_ms
        out: list[Item] = []
        while (live or any(buffers.values())) and not self._stop.is_set():
            if live - paused:
                batch = await consumer.getmany(timeout_ms=300, max_records=5000)
                for tp, records in batch.items():
                    if tp not in live:
                        continue
                    buffer = buffers[tp]
                    for record in records:
                        target = self._targets.get(tp)
                        if target is not None and record.offset >= target:
                            break
                        if until is not None and record.timestamp > until:
                            live.discard(tp)
                            self._positions[tp] = record.offset
                            break
                        if since is not None and record.timestamp < since:
                            continue
                        where = f"{tp.topic}/{tp.partition}@{record.offset}"
                        try:
                            event = decode_event(record.value)
                        except EventError as error:
                            self.on_bad(BadRecord(where, error.reason, error.message))
                            continue
                        buffer.append(((event.ts_ms, tp.partition, record.offset, tp.topic),
                                       (event, record.value)))
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is not None:
                        self._targets.setdefault(tp, high)
                for tp in list(live):
                    position = await consumer.position(tp)
                    self._positions[tp] = position
                    if tp in self._targets and position >= self._targets[tp]:
                        live.discard(tp)
            for tp in tps:
                size = len(buffers[tp])
                if tp not in live or size > _PAUSE_AT:
                    if tp not in paused:
                        consumer.pause(tp)
                        paused.add(tp)
                elif tp in paused and size < _RESUME_AT:
                    consumer.resume(tp)
                    paused.discard(tp)
            # Emit while every partition that may still deliver has a head to compare.
            while True:
                if any(not buffers[tp] for tp in live):
                    break
                heads = [tp for tp in tps if buffers[tp]]
                if not heads:
                    break
                first = min(heads, key=lambda tp: buffers[tp][0][0])
                out.append(buffers[first].popleft()[1])
                if len(out) >= _CHUNK:
                    if not self._put(out):
                        return
                    out = []
            if out and (not live or len(out) >= _CHUNK // 4):
                if not self._put(out):
                    return
                out = []
        if out:
            self._put(out)
        self._finished = not self._stop.is_set()
