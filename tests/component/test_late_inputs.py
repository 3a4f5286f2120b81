"""The two ways a live decision can differ from replay are counted: a context record valid
from before events the worker already decided, split by kind (reference data, which should
be published ahead; a fired signal's pause, late by nature)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from service.domain.context_table import ContextTable
from service.domain.rules import load_rulebook
from service.ops.metrics import Metrics
from service.ops.settings import load_settings
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.store import PartitionStore
from service.stream.topics import TopicNames
from tests.events import keyed

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"
NINE = 1772442000000  # 2026-03-02T09:00:00Z


async def _no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


def _ping(event_id: str, minute: int) -> bytes:
    return keyed(event_id, "ping", minute, customer_id="c-1")


async def test_late_context_records_are_counted_by_kind() -> None:
    """After a ping at 09:10 is decided, a stock record valid from 09:05 counts as one late
    reference record and a signal pause valid from 09:05 as one late signal record; a record
    valid from 09:20 is not late."""
    settings = load_settings(rules=RULES, store="memory://", partitions=1,
                             broker="kafka://127.0.0.1:1", topic_prefix="late")
    metrics = Metrics()
    table = ContextTable()
    processor = Processor(settings, TopicNames.from_settings(settings), load_rulebook(RULES),
                          MemorySink(), context=table, metrics=metrics, recover=_no_recovery)
    topic = settings.topic("events")
    await processor.process([Message(topic, 0, 0, None, _ping("p1", 10))])
    table.put("stock:sku-1", 3, NINE + 5 * 60_000)
    table.put("signal:product_issue:sku-1", {"until_ms": NINE + 3_600_000}, NINE + 5 * 60_000)
    table.put("stock:sku-2", 3, NINE + 20 * 60_000)
    await processor.process([Message(topic, 0, 1, None, _ping("p2", 11))])
    late = metrics.context_late
    assert late.labels("reference")._value.get() == 1
    assert late.labels("signal")._value.get() == 1
