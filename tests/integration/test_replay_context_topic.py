"""`touchflow replay --context-from-topic` on the real (embedded) broker: the context topic is
read to its Fetch high watermark, every partition (empty ones too), with record timestamps
standing in for a missing valid_from (service/replay/context_topic.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from service.domain.context_table import BEGINNING
from service.ops.settings import load_settings
from service.replay.context_topic import load_context_topic
from service.replay.reader import BadRecord, ReplayInputError
from tests.integration.conftest import WorkerEnv
from tests.unit.replay.test_versioned_context import RULEBOOK  # the same stock rule

HOUR = 3_600_000
NINE = 1772409600000  # 2026-03-02T09:00:00+09:00, the replay test logs' first hour



async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await asyncio.wait_for(admin.start(), 20)
    try:
        await asyncio.wait_for(admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]), 20)
    finally:
        await admin.close()


async def _publish(bootstrap: str, topic: str,
                   records: list[tuple[bytes | None, bytes | None, int]]) -> None:
    """(key, value, record timestamp) to partition 0, in order; partitions 1-2 stay empty."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await asyncio.wait_for(producer.start(), 20)
    try:
        for key, value, timestamp in records:
            await producer.send_and_wait(topic, value, key=key, partition=0,
                                         timestamp_ms=timestamp)
    finally:
        await producer.stop()


def _record(**fields: object) -> bytes:
    return orjson.dumps(fields)


@pytest.fixture
def context_topic(worker_env: WorkerEnv) -> str:
    """`<prefix>.context` with three partitions holding, on partition 0: sku-1 at 3 units
    from 09:00 (Kafka-key form, record time), sold out from 10:00 (valid_from), restocked
    from 12:00 (record time), a malformed record, and sku-2 deleted at 11:00."""
    topic = worker_env.topic("context")
    bootstrap = worker_env.broker.bootstrap
    asyncio.run(_create(bootstrap, topic, 3))
    asyncio.run(_publish(bootstrap, topic, [
        (b"stock:sku-1", b"3", NINE),
        (None, _record(key="stock:sku-1", value=0, valid_from="2026-03-02T10:00:00+09:00"),
         NINE + 5 * HOUR),  # published late: valid_from wins over the record time
        (None, _record(key="stock:sku-1", value=8), NINE + 3 * HOUR),
        (None, b"{not json", NINE),
        (None, _record(key="stock:sku-2", value=5, valid_from=0), NINE),
        (b"stock:sku-2", None, NINE + 2 * HOUR),
    ]))
    return topic


def test_the_topic_is_read_with_record_timestamps(worker_env: WorkerEnv,
                                                  context_topic: str) -> None:
    """Each record lands at its valid_from, else at its record timestamp; tombstones delete
    from their timestamp; a malformed record is reported by topic/partition@offset."""
    settings = load_settings(broker=worker_env.broker.url, topic_prefix=worker_env.prefix)
    bad: list[BadRecord] = []
    table = load_context_topic(settings, context_topic, bad.append)
    assert table.versions("stock:sku-1") == [(NINE, 3), (NINE + HOUR, 0), (NINE + 3 * HOUR, 8)]
    assert table.versions("stock:sku-2") == [(0, 5), (NINE + 2 * HOUR, None)]
    assert [(b.where, b.reason) for b in bad] == [(f"{context_topic}/0@3", "bad_context")]
    assert BEGINNING not in {at for key in table.names() for at, _ in table.versions(key)}


def test_the_command_decides_with_the_topic_context(
        worker_env: WorkerEnv, context_topic: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow replay --context-from-topic` reads `<prefix>.context` of the configured
    prefix and decides each event with the stock in force at its time."""
    from service.cli import main
    from tests.events import log_line

    monkeypatch.setenv("TOUCHFLOW_TOPIC_PREFIX", worker_env.prefix)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULEBOOK)
    log = tmp_path / "log.jsonl"
    views = [("v-0930", 30), ("v-1030", 90), ("v-1230", 210)]
    log.write_bytes(b"\n".join(log_line(eid, f"c-{eid}", "product_viewed", minute=minute,
                                     sku="sku-1") for eid, minute in views) + b"\n")
    code = main(["replay", "--rules", str(rules), "--input", str(log), "--no-progress",
                 "--context-from-topic", "--broker", worker_env.broker.url])
    captured = capsys.readouterr()
    sent = [orjson.loads(line)["trigger_event_id"] for line in captured.out.splitlines()]
    assert code == 0, captured.err
    assert sent == ["v-0930", "v-1230"]
    assert f"context read from {context_topic}: 1 key present" in captured.err


def test_a_missing_context_topic_is_one_sentence(worker_env: WorkerEnv) -> None:
    """No context topic on the broker: a ReplayInputError naming it, no hang."""
    settings = load_settings(broker=worker_env.broker.url)
    with pytest.raises(ReplayInputError, match="does not exist"):
        load_context_topic(settings, worker_env.topic("nothing-here"))
