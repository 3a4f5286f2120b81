"""An in-memory model of the broker, the consumer group and the changelog recovery, for the
live == replay state machine: partitioned logs with offsets, producer shipments that fail
(their records lost, or landed with the acknowledgement lost), committed offsets, and a
recovery that replays a partition's changelog after its store's checkpoint as
service/stream/recovery.py does (last record per key, checkpoint = last offset read)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.stream.batch import Message
from service.stream.store import PartitionStore

Headers = Sequence[tuple[str, bytes]]


@dataclass
class Pending:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    headers: tuple[tuple[str, bytes], ...]
    offset: asyncio.Future[int]


@dataclass
class BrokerModel:
    """Topic-partition logs, and a `Sink` for the processors that write into them.

    `fail_next` makes the next shipment fail: "lost" (none of its records land) or "landed"
    (all land, the acknowledgement is lost, as after a timeout). Records a failed shipment
    landed are also kept in `uncertain`: a batch that is never retried (its worker crashed)
    leaves them behind, as any at-least-once system without transactions does."""

    logs: dict[tuple[str, int], list[Message]] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    fail_next: str | None = None
    fail_plan: dict[int, str] = field(default_factory=dict)  # shipment number -> failure
    uncertain: set[tuple[str, bytes | None]] = field(default_factory=set)
    shipments: int = 0
    landed: list[Message] = field(default_factory=list)  # every record, in landing order

    def log(self, topic: str, partition: int) -> list[Message]:
        return self.logs.setdefault((topic, partition), [])

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: Headers = ()) -> Message:
        records = self.log(topic, partition)
        message = Message(topic, partition, len(records), key, value, 0, tuple(headers))
        records.append(message)
        self.landed.append(message)
        return message

    def records(self, topic: str) -> list[Message]:
        return [m for (name, _), log in sorted(self.logs.items()) if name == topic for m in log]

    def records_in_order(self, topic: str) -> list[Message]:
        """A topic's records in the order they landed, across partitions."""
        return [m for m in self.landed if m.topic == topic]

    # -- the Sink protocol ---------------------------------------------------------------

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *,
                   partition: int | None = None, headers: Headers | None = None
                   ) -> Awaitable[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(Pending(topic, key, value, partition or 0, tuple(headers or ()),
                                    future))
        return future

    async def ship(self) -> asyncio.Future[Any]:
        self.shipments += 1
        shipped, self.pending = self.pending, []
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failure, self.fail_next = self.fail_next, None
        failure = self.fail_plan.pop(self.shipments, failure)
        if failure != "lost":
            for record in shipped:
                message = self.append(record.topic, record.partition, record.key,
                                      record.value, record.headers)
                if failure is None:
                    record.offset.set_result(message.offset)
                else:
                    self.uncertain.add((record.topic, record.value))
        if failure is None:
            result.set_result(None)
        else:
            result.set_exception(OSError(f"shipment {self.shipments} failed ({failure})"))
            result.add_done_callback(lambda f: f.exception())
        return result

    async def flush(self) -> None:
        await (await self.ship())

    def discard(self) -> None:
        self.pending.clear()

    # -- recovery ------------------------------------------------------------------------

    def recovery(self, changelog: str) -> Any:
        """A `recover` callable for `Processor`: each store catches up with its changelog."""

        async def recover(stores: Mapping[int, PartitionStore]) -> None:
            for partition, store in stores.items():
                log = self.log(changelog, partition)
                start = store.checkpoint() + 1
                values: dict[bytes, bytes | None] = {}
                for message in log[start:]:
                    if message.key is not None:
                        values[message.key] = message.value
                if log[start:]:
                    store.write(values, len(log) - 1)

        return recover
