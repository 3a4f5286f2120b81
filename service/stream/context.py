"""Reference data from `<prefix>.context`, read by every worker in full (a global table).

Messages are JSON objects ``{"key": "stock:sku-1:store-7", "value": 4, "valid_from": ...}``
(the Kafka key may carry the key instead, the message then being the value alone); a null
value deletes the key from `valid_from` on. `valid_from` is epoch milliseconds or an ISO-8601
time with offset; when absent the record holds from the Kafka record's timestamp, and from the
beginning of time when there is none (a context file). The table is a `ContextTable`: decisions
read the value in force at their event's time (service/domain/context_table.py).

Each worker reads every partition from the beginning and keeps following it, so all workers
see the same reference data. Readiness waits until the reader has caught up to the high
watermark once (Fetch-response high watermark, not ListOffsets, for the same reason as in
recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from schemas.codec import JSONDecodeError, loads
from service.domain.context_table import BEGINNING, ContextTable
from service.stream.background import Background

if TYPE_CHECKING:
    from service.ops.health import Readiness
    from service.ops.metrics import Metrics
    from service.ops.settings import Settings

__all__ = ["Apply", "ContextReader", "apply_context_record", "parse_valid_from",
           "record_time"]

log = logging.getLogger(__name__)

_LATEST = 2**62  # valid_from beyond this (or before BEGINNING) is not a time: malformed
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def record_time(timestamp: int | None) -> int | None:
    """A Kafka record's timestamp in ms, or None when it has none (Kafka writes -1)."""
    return timestamp if timestamp is not None and timestamp >= 0 else None


def parse_valid_from(raw: object, default_ms: int) -> int | None:
    """Epoch ms of a record's `valid_from` (absent or null: `default_ms`); None if malformed.

    Accepted: an integer of epoch milliseconds, or an ISO-8601 time with a UTC offset (`Z`
    allowed). A time without offset is rejected: it would mean a different instant per host.
    """
    if raw is None:
        return default_ms
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if BEGINNING <= raw <= _LATEST else None
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())  # Python 3.11 reads a trailing Z too
    except ValueError:
        return None
    if moment.utcoffset() is None:
        return None
    return (moment - _EPOCH) // _MS  # exact integer ms, floored (also before 1970)


def apply_context_record(table: ContextTable, key: bytes | None, value: bytes | None,
                         timestamp_ms: int | None) -> bool:
    """Apply one context message to `table`; return False (and change nothing) if malformed.

    `timestamp_ms` is the Kafka record's timestamp (None for a file line): the record holds
    from its `valid_from`, else from that timestamp, else from the beginning of time.
    """
    default_ms = BEGINNING if timestamp_ms is None else timestamp_ms
    if value is None:  # a tombstone: the Kafka key is deleted from the record's time on
        if key:
            table.put(key.decode("utf-8", "replace"), None, default_ms)
            return True
        return False
    try:
        data = loads(value)
    except JSONDecodeError:
        return False
    if isinstance(data, dict) and isinstance(data.get("key"), str):
        valid_from = parse_valid_from(data.get("valid_from"), default_ms)
        if valid_from is None:
            return False
        table.put(data["key"], data.get("value"), valid_from)
        return True
    if key:  # the Kafka key names the entry and the message is its value
        table.put(key.decode("utf-8", "replace"), data, default_ms)
        return True
    return False


Apply = Callable[[ContextTable, bytes | None, bytes | None, int | None], bool]


class ContextReader(Background):
    """Follows a topic from its beginning into `table` until stopped (the context topic by
    default; `apply` says how a record changes the table)."""

    task_name = "touchflow-context"

    def __init__(self, settings: Settings, topic: str, apply: Apply = apply_context_record,
                 label: str = "context", *, metrics: Metrics | None = None,
                 readiness: Readiness | None = None) -> None:
        self.settings = settings
        self.retry_max_s = settings.retry_max_s
        self.component = label
        self.metrics = metrics  # failures: counted, and a /readyz reason (background.py)
        self.readiness = readiness
        self.topic = topic
        self.label = label
        self.apply = apply
        self.table = ContextTable()
        self.caught_up = asyncio.Event()
        self._next: dict[int, int] = {}  # partition -> next offset, so a retry resumes there

    async def wait_loaded(self, warn_every_s: float = 30.0) -> None:
        """Return once the topic was read to its high watermark (a worker must not decide
        before its reference data is there); log a warning every `warn_every_s` meanwhile."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self.caught_up.wait()), warn_every_s)
                return
            except TimeoutError:
                log.warning(f"still loading the {self.label} table before deciding")

    async def _attempt(self) -> None:
        """Connect and follow the topic until an error (retried by `Background`, resuming
        where this attempt left off) or cancellation."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.kafka_security(),
        )
        try:
            await asyncio.wait_for(consumer.start(), self.settings.broker_timeout_s)
            partitions = consumer.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp.partition not in self._next]
            if fresh:
                await consumer.seek_to_beginning(*fresh)
            for tp in tps:  # a retry resumes: re-applied records would count as late
                if tp.partition in self._next:
                    consumer.seek(tp, self._next[tp.partition])
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                self._working()
                for tp, records in batch.items():
                    for record in records:
                        self.apply(self.table, record.key, record.value,
                                   record_time(record.timestamp))
                    if records:
                        self._next[tp.partition] = records[-1].offset + 1
                if not self.caught_up.is_set():
                    done = True
                    for tp in tps:
                        high = consumer.highwater(tp)
                        if high is None or await consumer.position(tp) < high:
                            done = False
                    if done:
                        self.caught_up.set()
                        log.info(f"{self.label} table loaded",
                                 extra={"keys": len(self.table)})
        finally:
            await consumer.stop()
