"""Actions handed to the producer while their batch is still being decided
(`TOUCHFLOW_HAND_OVER_MS`): the same records go out, only earlier."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.inprocess import NullSink, as_messages, partitions_of
from bench.paths import RULES
from service.tools.simulator import customer_key
from service.tools.workload import event_log


class _Recorder(NullSink):
    """Every record in send order, and the records sent before each hand-over."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.handed_at: list[int] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[int]:
        self.records.append((topic, key, value))
        return await super().send(topic, key, value, partition=partition, headers=headers)

    async def hand_over(self) -> None:
        self.handed_at.append(len(self.records))


async def _run(hand_over_ms: int, tmp: Path) -> _Recorder:
    from service.domain.rules import load_rulebook
    from service.ops.settings import load_settings
    from service.stream.processor import Processor
    from service.stream.topics import TopicNames

    log = event_log(5, 2_000, 500, datetime(2026, 3, 2, tzinfo=UTC))
    keys = [customer_key(orjson.loads(raw)) for raw in log]
    settings = load_settings(rules=RULES, store="memory://", data_dir=tmp, partitions=2,
                             broker="kafka://127.0.0.1:1", topic_prefix="hand",
                             hand_over_ms=hand_over_ms)
    topics = TopicNames.from_settings(settings)
    sink = _Recorder()

    async def no_recovery(stores: Any) -> None:
        return None

    processor = Processor(settings, topics, load_rulebook(settings.rules), sink,
                          recover=no_recovery)
    messages = as_messages(log, keys, topics.events, partitions_of(keys, 2))
    for start in range(0, len(messages), 500):
        await processor.process(messages[start:start + 500])
    await processor.close()
    return sink


def test_handing_over_within_a_batch_sends_the_same_records(tmp_path: Path) -> None:
    """With a hand-over every millisecond, batches of 500 events (several ms of decisions
    each) hand their actions over part-way, after an action was sent; the records sent are
    byte for byte and in order those of a worker that hands over only at the end (0: never
    within a batch)."""
    early = asyncio.run(_run(1, tmp_path / "early"))
    late = asyncio.run(_run(0, tmp_path / "late"))
    assert late.handed_at == []
    assert len(early.handed_at) >= 4  # 4 batches of several ms of decisions each
    kinds = [topic.split(".")[-1] for topic, _, _ in early.records]
    assert all(kinds[n - 1] in ("actions", "decisions", "web", "email", "sms", "mobile",
                                "call_center", "in_app") for n in early.handed_at)
    assert early.records == late.records
