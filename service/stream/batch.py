"""What the batch processor reads and keeps per batch: the consumed-record protocol, a
hand-built record, the statistics of one batch and a batch between its steps."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = ["BatchStats", "Message", "PendingBatch", "RawRecord", "Record"]


class RawRecord(Protocol):
    """What recovery reads of a changelog record (aiokafka's C `DefaultRecord` and
    `LegacyRecord`, read without a `ConsumerRecord`: service/stream/changelog_reader.py); a
    header's value may be null there."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


class Record(RawRecord, Protocol):
    """What the processor reads of a consumed Kafka record. aiokafka's `ConsumerRecord` fits
    as it is (the lean runtime hands its records over without a copy; docs/decisions.md,
    "Batches to the producer"), and so does `Message`."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def timestamp(self) -> int | None:
        """Milliseconds since the epoch (the record's Kafka timestamp)."""
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class Message(NamedTuple):
    """A consumed Kafka record built by hand (tests, benchmarks): a `Record`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # ms since the epoch
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True)
class BatchStats:
    """What one `process()` call did."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    late: int = 0  # dropped for lateness (service/domain/decide.py), audited
    ignored: int = 0  # dated before their customer's erasure
    forwarded: int = 0
    deadlettered: int = 0
    actions: int = 0
    decisions: int = 0
    profiles_written: int = 0
    seconds: float = 0.0
    sent_actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class PendingBatch:
    """A batch between `Processor.begin` and `Processor.complete`."""

    stats: BatchStats
    started: float
    event_counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    actions: list[dict[str, Any]] = field(default_factory=list)
    clocks: list[tuple[int, int | None]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # for the metrics
    stored: set[bytes] = field(default_factory=set)  # keys that held a profile before it
    source_offsets: dict[int, str] = field(default_factory=dict)
    encoded: dict[int, dict[bytes, bytes | None]] = field(default_factory=dict)
    last_sent: dict[int, Awaitable[int]] = field(default_factory=dict)
    acks: asyncio.Future[None] | None = None  # what must be acknowledged before the next step
    acked_at: float | None = None  # when the output was (the event-to-action clock)
