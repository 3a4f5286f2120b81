"""What the worker's signal aggregator publishes when a signal fires
(service/stream/signal_aggregator.py), driven with fake consumer and producer objects."""

from __future__ import annotations

from textwrap import dedent
from types import SimpleNamespace
from typing import Any

import orjson

from service.domain import parse_rulebook
from service.domain.context_table import ContextTable
from service.ops.settings import load_settings
from service.stream.context import apply_context_record
from service.stream.signal_aggregator import SignalAggregator
from service.stream.topics import TopicNames

BOOK = dedent("""\
    version: "sig-1"
    signals:
      surge:
        when: {type: call_center_call}
        by: properties.sku
        within: 1h
        at_least: 2
        hold: 2h
    actions:
      promo:
        channel: web
        consent: exempt
        when: [{event: {type: product_viewed}}]
    """)
MIN = 60_000
T0 = 1_777_000_000_000  # event time, far from any wall-clock record timestamp


class FakeProducer:
    """Keeps what was sent, per topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None


class FakeConsumer:
    async def commit(self, offsets: dict[Any, int]) -> None:
        self.committed = offsets


def _feed(offset: int, event_id: str, ts_ms: int) -> Any:
    value = orjson.dumps({"signal": "surge", "group": "sku-1", "event_id": event_id,
                          "ts_ms": ts_ms})
    return SimpleNamespace(offset=offset, value=value)


async def test_the_pause_record_is_valid_from_the_firing_event_time() -> None:
    """The context record published when a signal fires carries valid_from = the time of the
    event that made it fire, so decisions read the pause from that event time on whatever
    the record's (wall-clock) timestamp."""
    settings = load_settings(topic_prefix="tp", app_id="agg")
    topics = TopicNames.from_settings(settings)
    aggregator = SignalAggregator(settings, topics, parse_rulebook(BOOK, "sig.yaml"))
    aggregator._consumer = FakeConsumer()
    producer = FakeProducer()
    await aggregator._handle({"tp0": [_feed(0, "e1", T0), _feed(1, "e2", T0 + 5 * MIN)]},
                             producer)
    context = [(key, value) for topic, key, value in producer.sent if topic == topics.context]
    assert len(context) == 1
    key, value = context[0]
    record = orjson.loads(value)
    assert key == b"signal:surge:sku-1" and record["valid_from"] == T0 + 5 * MIN
    table = ContextTable()
    assert apply_context_record(table, key, value, T0 + 10**9)  # published much later
    assert table.get_at("signal:surge:sku-1", T0 + 5 * MIN)["until_ms"] == T0 + 125 * MIN
    assert table.versions("signal:surge:sku-1")[0][0] == T0 + 5 * MIN
