"""The lean runtime's loop with a scripted consumer: each batch's steps run in order (begin,
changelog, complete) while the next batch begins, offsets are committed only after their
batch completed, in batch order, with at most one commit in flight, and the last commit
completes before the worker stops."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from service.runtime import KafkaRuntime
from service.settings import load_settings
from service.topics import TopicNames

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "topic partition offset key value timestamp headers")


class _Consumer:
    """Hands out three one-record batches, then asks the runtime to stop."""

    def __init__(self, runtime: KafkaRuntime, log: list[str]) -> None:
        self.runtime, self.log = runtime, log
        self.batches = [{TP("t", 0): [Rec("t", 0, n, None, b"{}", 0, ())]} for n in range(3)]
        self.in_flight = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if not self.batches:
            self.runtime.stop()
            return {}
        return self.batches.pop(0)

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "two commits in flight"
        self.log.append(f"commit start {offsets[TP('t', 0)]}")
        await asyncio.sleep(0.05)  # the broker's round trip
        self.log.append(f"commit done {offsets[TP('t', 0)]}")
        self.in_flight -= 1

    def assignment(self) -> set[Any]:
        return set()


class _Processor:
    """The pipeline's three steps, logged; a batch is named by its record's offset."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def begin(self, messages: list[Any]) -> int:
        self.log.append(f"process {messages[-1].offset}")
        await asyncio.sleep(0.01)
        return int(messages[-1].offset)

    async def send_changelog(self, batch: int) -> None:
        self.log.append(f"changelog {batch}")

    async def complete(self, batch: int) -> None:
        self.log.append(f"complete {batch}")

    async def close(self) -> None:
        self.log.append("close")


async def test_commits_follow_their_batch_in_order_and_finish_before_stop() -> None:
    """Batch n+1 begins before batch n completes, but no commit starts before its batch
    completed or before the previous commit finished, and the last commit is done before the
    processor closes."""
    settings = load_settings(store="memory://", broker="kafka://127.0.0.1:1",
                             topic_prefix="rt")
    log: list[str] = []
    runtime = KafkaRuntime(settings, TopicNames.from_settings(settings), lambda sink: None)  # type: ignore
    consumer = _Consumer(runtime, log)

    async def start_clients() -> None:
        runtime._consumer = consumer
        runtime.processor = _Processor(log)  # type: ignore[assignment]

    runtime._start_clients = start_clients  # type: ignore[method-assign]
    await asyncio.wait_for(runtime.run(), 10)
    for n in (1, 2, 3):  # the commit of offset n follows the completion of record n - 1
        assert log.index(f"complete {n - 1}") > log.index(f"changelog {n - 1}") \
            > log.index(f"process {n - 1}")
        assert log.index(f"commit start {n}") > log.index(f"complete {n - 1}")
        if n > 1:
            assert log.index(f"commit start {n}") > log.index(f"commit done {n - 1}")
    assert log.index("commit done 3") < log.index("close")
    assert log.index("process 1") < log.index("complete 0")  # overlap: not one at a time
