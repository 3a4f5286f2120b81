"""What the lean runtime needs of a consumer, and of the topic partitions it hands out.

aiokafka's `AIOKafkaConsumer` (no type stubs) and `FaustConsumer` (service/stream/
faust_runtime.py, over Faust's consumer thread) both fit; the component tests' scripted
consumers implement the part they drive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from service.stream.batch import Record

__all__ = ["Consumer", "Fetched", "TopicPartition"]


class TopicPartition(Protocol):
    """A topic partition as aiokafka names it (its `TopicPartition` named tuple fits);
    hashable, so it keys offsets."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


# One `getmany`: records by topic partition.
Fetched = Mapping[TopicPartition, Sequence[Record]]


class Consumer(Protocol):
    """The calls the runtime makes on its consumer."""

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def assignment(self) -> set[TopicPartition]: ...

    async def position(self, tp: TopicPartition) -> int: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    async def stop(self) -> None: ...
