"""Where the processor's output goes: a Kafka producer, or a list in memory for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["KafkaSink", "MemorySink", "Sent", "Sink"]

Headers = Sequence[tuple[str, bytes]]


class Sink(Protocol):
    """Send records, then `flush()` to wait until every record sent so far is acknowledged.

    `send` returns an awaitable resolving to the offset the record got.
    """

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]: ...

    async def flush(self) -> None: ...


@dataclass(slots=True)
class Sent:
    """One record captured by `MemorySink`."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Headers | None
    offset: int


@dataclass
class MemorySink:
    """Keeps every record in `records`; offsets count per (topic, partition)."""

    records: list[Sent] = field(default_factory=list)
    flushes: int = 0
    _offsets: dict[tuple[str, int | None], int] = field(default_factory=dict)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        slot = (topic, partition)
        offset = self._offsets.get(slot, 0)
        self._offsets[slot] = offset + 1
        self.records.append(Sent(topic, key, value, partition, headers, offset))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(offset)
        return future

    async def flush(self) -> None:
        self.flushes += 1

    def on(self, topic: str) -> list[Sent]:
        """Records sent to one topic, in send order."""
        return [r for r in self.records if r.topic == topic]


class KafkaSink:
    """Wraps a producer with aiokafka's `send(topic, value, key, partition, headers)` API.

    Faust's producer (`app.producer`) is used in the worker so that Faust's own
    flush-before-commit covers our records too.
    """

    def __init__(self, producer: Any, *, flush_timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._flush_timeout_s = flush_timeout_s

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        partition: int | None = None, headers: Headers | None = None,
    ) -> Awaitable[int]:
        # Keywords: aiokafka orders (topic, value, key), Faust's producer (topic, key, value).
        fut = await self._producer.send(
            topic, key=key, value=value, partition=partition,
            headers=list(headers) if headers else None,
        )
        return _Offset(fut)

    async def flush(self) -> None:
        await asyncio.wait_for(self._producer.flush(), self._flush_timeout_s)


class _Offset:
    """Awaitable offset of a sent record; unlike a coroutine, fine to leave un-awaited."""

    __slots__ = ("_fut",)

    def __init__(self, fut: Awaitable[Any]) -> None:
        self._fut = fut

    def __await__(self) -> Generator[Any, None, int]:
        metadata = yield from self._fut.__await__()
        return int(metadata.offset)
