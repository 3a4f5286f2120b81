"""Replay against a real broker: publish, --from-topic, and replay == production.

The equivalence test is the promise of `touchflow replay`: one log fed to a live worker on the
embedded broker and to replay gives the same actions (same action_id, payload and reasons).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.event import decode_event
from service.ops.settings import load_settings
from service.replay.publish import publish_events
from service.replay.reader import BadRecord, LogFile, decode_lines
from service.replay.topic import TopicSource
from service.tools.embedded import EmbeddedBroker
from tests.events import at_ms, log_line
from tests.integration.conftest import WorkerEnv, consume, produce
from tests.unit.replay.journeys import scenarios

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, name: str, partitions: int,
                        *more: str, compact: str | None = None) -> None:
    """Create topics explicitly. (Tansu auto-creates an unknown topic with 4 partitions as
    soon as its metadata is asked for, so create before anything describes it.)"""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await asyncio.wait_for(admin.start(), 20)
    try:
        await asyncio.wait_for(admin.create_topics([
            NewTopic(topic, num_partitions=partitions, replication_factor=1,
                     topic_configs={"cleanup.policy": "compact"} if topic == compact else {})
            for topic in (name, *more)]), 20)
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Every record of `topic` as (key, value, partition), once `count` arrived."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 20)
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in sorted(batch.items(), key=lambda kv: kv[0].partition):
                out.extend((r.key, orjson.loads(r.value), tp.partition) for r in records)
    finally:
        await consumer.stop()
    return out


async def test_publish_keeps_per_customer_order_and_paces_by_event_time(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`--publish TOPIC --speed X`: every customer's events arrive keyed by the profile key,
    in log order, spread over several partitions, and X=10 plays 3 s of log in about 0.3 s."""
    topic = f"pub-{time.monotonic_ns()}"
    await _create_topic(broker.bootstrap, topic, 3)
    start = 1_772_411_400_000
    lines = [log_line(f"e-{i}", f"c-{i % 7}", at=at_ms(start + i * 10)) for i in range(300)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    bad: list[BadRecord] = []
    settings = load_settings(broker=broker.url)
    result = await publish_events(decode_lines(LogFile(log), bad.append), settings, topic,
                                  speed=10)
    assert result.sent == 300 and not bad
    assert result.seconds >= 0.8 * 2.99 / 10
    records = await _read_all(broker.bootstrap, topic, 300)
    assert len(records) == 300
    by_customer: dict[bytes, list[str]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, value, partition in records:
        by_customer[key].append(value["event_id"])
        partitions[key].add(partition)
    for c in range(7):
        key = f"customer_id:c-{c}".encode()
        assert by_customer[key] == [f"e-{i}" for i in range(300) if i % 7 == c]
        assert len(partitions[key]) == 1
    assert len({p for ps in partitions.values() for p in ps}) > 1


async def test_from_topic_selects_the_time_range_and_merges_partitions_by_event_time(
    broker: EmbeddedBroker,
) -> None:
    """`--from-topic --since --until`: only records whose timestamps lie in the range come
    out, each partition in offset order, partitions merged by occurred_at; the read stops at
    the end of the topic even though nothing marks it."""
    from aiokafka import AIOKafkaProducer

    topic = f"src-{time.monotonic_ns()}"
    await _create_topic(broker.bootstrap, topic, 3)
    base = 1_772_411_400_000
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await asyncio.wait_for(producer.start(), 20)
    try:
        for i in range(90):  # three hours of events, one record timestamp per hour
            hour = i // 30
            raw = log_line(f"e-{i}", f"c-{i % 5}", at=at_ms(base + i * 1000))
            await producer.send(topic, raw, key=f"customer_id:c-{i % 5}".encode(),
                                timestamp_ms=base + hour * 3_600_000 + i)
            if i == 45:
                await producer.send(topic, b"{broken", key=f"customer_id:c-{i % 5}".encode(),
                                    timestamp_ms=base + hour * 3_600_000 + i)
        await asyncio.wait_for(producer.flush(), 20)
    finally:
        await producer.stop()
    bad: list[BadRecord] = []
    source = TopicSource(load_settings(broker=broker.url), [topic], bad.append,
                         since_ms=base + 3_600_000, until_ms=base + 2 * 3_600_000 - 1)
    got = await asyncio.to_thread(lambda: [event.event_id for event, _ in source])
    assert got == [f"e-{i}" for i in range(30, 60)]  # merged back into event-time order
    assert [b.reason for b in bad] == ["invalid_json"]
    assert bad[0].where.startswith(f"{topic}/")
    done, total = source.position()
    assert total is not None and done >= total > 0


def _wait_for_log(env: WorkerEnv, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in env.logs():
            return
        for process in env.processes:
            if process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{env.logs()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"worker never logged {text!r}:\n{env.logs()[-3000:]}")


def _lines(path: Path) -> Iterator[bytes]:
    for line in path.read_bytes().splitlines():
        if line.strip():
            yield line


@pytest.mark.parametrize(("scenario", "runtime"), [
    ("lead_scoring", "kafka"), ("grocery_store", "kafka"), ("stock_restock", "kafka"),
    ("default-journeys", "kafka"), ("stock_restock", "faust"), ("default-journeys", "faust")])
def test_replay_gives_the_same_actions_as_a_live_worker(
    worker_env: WorkerEnv, scenario: str, runtime: str
) -> None:
    """The equivalence promise: one log through a live worker on the real broker and
    through `touchflow replay` yields the same actions - same action_id, payload, reasons
    and every other field - with no action missing or extra on either side; and replaying
    the worker's input topic (`--from-topic`) gives them again. Scenarios: the lead-scoring
    example, the grocery example (reference data on the context topic), a stock-out and a
    restock in one log (three versions of one context key, each decision reading the one in
    force at its event time), and 3,000 generated events over the default rulebook with
    redeliveries, bad lines and an erasure. The last two also under the Faust runtime (its
    worker waits for the context topic before deciding, as the default one does)."""
    from service.domain.rules import load_rulebook
    from service.replay.reader import load_context
    from service.replay.runner import ReplayResult, RunStats, replay_file, replay_stream
    from service.stream.topics import TopicNames, ensure_topics

    missing = [m for m in ("service.ops.logs", "service.ops.health", "service.ops.metrics")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the worker cannot start yet: {', '.join(missing)} missing")
    found = scenarios(worker_env.tmp)
    if scenario not in found:
        pytest.skip(f"examples/{scenario} is not there")
    rules, events_path, context_path = found[scenario]
    worker_env.rules = rules
    settings = load_settings(broker=worker_env.broker.url, topic_prefix=worker_env.prefix,
                             app_id=worker_env.app_id, partitions=worker_env.partitions)
    topics = TopicNames.from_settings(settings)

    # Replay first: it tells us how many actions production must produce.
    rulebook = load_rulebook(rules)
    context = load_context(context_path) if context_path else {}
    out = worker_env.tmp / "replay-actions.jsonl"
    with open(out, "wb") as handle:
        result = replay_file(events_path, rulebook, context=context, output=handle)
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert replayed, "the example produces no action: the test would prove nothing"

    # Production: topics and reference data first, then the worker, then the events.
    asyncio.run(_create_topic(worker_env.broker.bootstrap, topics.repartition,
                              worker_env.partitions, *topics.all_public(), topics.changelog,
                              compact=topics.changelog))
    asyncio.run(ensure_topics(settings, topics))
    if context_path:
        asyncio.run(produce(worker_env.broker.bootstrap, topics.context,
                            list(_lines(context_path))))
    worker = worker_env.start_worker(TOUCHFLOW_RUNTIME=runtime)
    _wait_for_log(worker_env, "worker started")
    if context_path:
        _wait_for_log(worker_env, "context table loaded")
    raw = list(_lines(events_path))
    keys: list[bytes | None] = []
    for line in raw:
        try:
            keys.append(decode_event(line).key().encode())  # per-customer order, as in prod
        except ValueError:
            keys.append(None)
    asyncio.run(produce(worker_env.broker.bootstrap, topics.events, raw, keys))
    produced = asyncio.run(consume(worker_env.broker.bootstrap, topics.actions,
                                   count=len(replayed), timeout=90, settle=3.0))
    worker_env.stop(worker)

    live = {a["action_id"]: a for a in produced}  # at-least-once: dedupe on action_id
    offline = {a["action_id"]: a for a in replayed}
    assert len(offline) == len(replayed) == result.stats.actions
    assert sorted(live) == sorted(offline), "action ids differ between worker and replay"
    for action_id, action in offline.items():
        other = live[action_id]
        assert (other["payload"], other["reasons"]) == (action["payload"], action["reasons"])
        assert other == action

    # The same events read back from the topic: merged partitions keep per-customer order.
    source = TopicSource(settings, [topics.events], lambda bad: None)
    again = io.BytesIO()
    replay_stream(source, rulebook, context=context, output=again,
                  result=ReplayResult(RunStats()))
    from_topic = {a["action_id"]: a for a in map(orjson.loads, again.getvalue().splitlines())}
    assert from_topic == offline
