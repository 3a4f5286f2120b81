"""Signal aggregation on the real broker: complaint calls from several customers (on different
partitions) are counted together by the worker that owns the product's feed partition; the
`product_issue` message reaches the operations topic once, the pause reaches every worker's
context, and a restarted worker rebuilds its counts without publishing the message again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.stream.signal_aggregator import SignalAggregator
from service.stream.topics import TopicNames, ensure_topics
from service.tools.embedded import EmbeddedBroker
from tests.events import log_line
from tests.integration.conftest import ROOT, WorkerEnv, consume, produce, wait_for_records

EXAMPLE = ROOT / "examples" / "product_issue"
T0 = 1_777_900_000_000  # 2026-05-04 (event time of the example's complaints)


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_complaint_surge_pauses_the_promotion_across_workers(
        worker_env: WorkerEnv, runtime: str) -> None:
    """Replays examples/product_issue through two live workers: one `product_issue` message
    for phone-x, the promotion for phone-x suppressed while it is active and sent for
    phone-y; after a restart of both workers, another complaint in the same episode publishes
    nothing new for phone-x, while its rebuilt counts still complete a phone-z burst that
    straddles the restart. Under either runtime (the signal aggregator runs next to both)."""
    worker_env.partitions = 4
    worker_env.rules = EXAMPLE / "rulebook.yaml"
    bootstrap = worker_env.broker.bootstrap
    context = [line for line in (EXAMPLE / "context.jsonl").read_bytes().splitlines() if line]
    await produce(bootstrap, worker_env.topic("context"), context, keys=[None] * len(context))
    first, second = (worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime),
                     worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime))
    worker_env.wait_ready(first, timeout=90)
    worker_env.wait_ready(second, timeout=90)
    lines = (EXAMPLE / "events.jsonl").read_bytes().splitlines()
    await produce(bootstrap, worker_env.topic("events"), lines[:9])  # views and the calls
    operations = await wait_for_records(worker_env, "operations", lambda rs: len(rs) >= 1)
    await wait_for_records(worker_env, "context", lambda rs: any(
        isinstance(r, dict) and str(r.get("key", "")).startswith("signal:") for r in rs))
    await asyncio.sleep(3)  # the workers' context readers poll every 0.5 s
    await produce(bootstrap, worker_env.topic("events"), lines[9:11])  # phone-x, phone-y views
    decisions = await wait_for_records(worker_env, "decisions", lambda rs: len(rs) >= 4)
    outcome = {r["trigger_event_id"]: (r["outcome"], r["suppressed_by"]) for r in decisions}
    assert outcome == {"p-1": ("sent", None), "p-2": ("suppressed", "context"),
                       "p-10": ("suppressed", "context"), "p-11": ("sent", None)}
    assert [(m["signal"], m["key"], m["count"]) for m in operations] == [
        ("product_issue", "phone-x", 4)]

    def complaints(prefix: str, sku: str, minutes: range) -> list[bytes]:
        return [log_line(f"{prefix}-{m}", f"{prefix}-caller-{m}", "call_center_call",
                      channel="call_center", at=f"2026-05-04T12:{m:02d}:00+00:00",
                      reason="complaint", sku=sku) for m in minutes]

    # two phone-z complaints before the restart, two after: it fires only if the restarted
    # aggregator rebuilt its counts from the feed
    await produce(bootstrap, worker_env.topic("events"), complaints("z", "phone-z", range(0, 2)))
    await asyncio.sleep(4)
    for process in (first, second):
        assert worker_env.stop(process) == 0
    again = worker_env.start_worker("c", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(again, timeout=90)
    await produce(bootstrap, worker_env.topic("events"), lines[11:12])  # complaint at 12:00
    await produce(bootstrap, worker_env.topic("events"), complaints("z", "phone-z", range(5, 7)))
    await produce(bootstrap, worker_env.topic("events"), complaints("y", "phone-y", range(10, 14)))
    await wait_for_records(worker_env, "operations", lambda rs: len(rs) >= 3)
    await asyncio.sleep(2)
    operations = await consume(bootstrap, worker_env.topic("operations"), count=10**9,
                               timeout=2)
    assert sorted((m["signal"], m["key"]) for m in operations) == [
        ("product_issue", "phone-x"), ("product_issue", "phone-y"),
        ("product_issue", "phone-z")]


async def test_a_burst_straddling_the_aggregators_restart_fires(
        broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted signal aggregator counts the feed records before its group's committed
    offset (re-read silently) together with the ones after it: two complaints committed before
    the restart and two after it fire `product_issue` once. The committed-offset look-ups are
    slowed down, so the records after the committed offset are fetched while the rebuild is
    still under way (counted then, they were skipped as duplicates by the re-read and the
    signal never fired: the flaky restart case of the test above)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    original = AIOKafkaConsumer.committed

    async def slow_committed(self: Any, tp: Any) -> Any:
        await asyncio.sleep(0.3)
        return await original(self, tp)

    monkeypatch.setattr(AIOKafkaConsumer, "committed", slow_committed)
    settings = load_settings(broker=broker.url, topic_prefix=f"t{uuid.uuid4().hex[:10]}",
                             app_id=f"app{uuid.uuid4().hex[:8]}", partitions=4,
                             session_timeout_ms=6000)
    topics = TopicNames.from_settings(settings)
    await ensure_topics(settings, topics)
    key = b"product_issue\x1fphone-z"

    def feed(minute: int) -> bytes:
        return orjson.dumps({"signal": "product_issue", "group": "phone-z",
                             "event_id": f"z-{minute}", "ts_ms": T0 + minute * 60_000})

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topics.signal_feed, feed(m), key=key)
                for m in (0, 1, 5, 6)]
    finally:
        await producer.stop()
    tp = TopicPartition(topics.signal_feed, sent[0].partition)
    assert [m.offset for m in sent] == [0, 1, 2, 3]
    group = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             group_id=f"{settings.app_id}-signals")
    await group.start()
    try:  # the aggregator before the restart had counted and committed the first two
        group.assign([tp])
        await group.commit({tp: 2})
    finally:
        await group.stop()
    aggregator = SignalAggregator(settings, topics, load_rulebook(EXAMPLE / "rulebook.yaml"))
    await aggregator.start()
    try:
        operations = await consume(broker.bootstrap, topics.operations, count=1, timeout=30,
                                   settle=2)
    finally:
        await aggregator.stop()
    assert [(m["signal"], m["key"], m["count"], m["trigger_event_id"]) for m in operations] \
        == [("product_issue", "phone-z", 4, "z-6")]
