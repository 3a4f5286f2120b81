"""`touchflow simulate` against the embedded broker: valid events, keyed by customer, paced."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest

from schemas.codec import dumps, loads
from schemas.event import decode_event
from service.tools.embedded import EmbeddedBroker
from service.tools.simulator import customer_key, simulate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _read_all(bootstrap: str, topic: str, count: int,
                    timeout: float = 60.0) -> list[tuple[bytes | None, bytes, int]]:
    """(key, value, partition) of the first `count` records of `topic`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 20)
    out: list[tuple[bytes | None, bytes, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend((r.key, r.value, r.partition) for r in records)
    finally:
        await consumer.stop()
    return out


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await asyncio.wait_for(admin.start(), 20)
    try:
        await asyncio.wait_for(admin.create_topics([NewTopic(topic, partitions, 1)]), 20)
    finally:
        await admin.close()


async def _exists(bootstrap: str, topic: str) -> bool:
    """Whether `topic` exists (list_topics: naming it in a metadata request would create it)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await asyncio.wait_for(admin.start(), 20)
    try:
        return topic in await asyncio.wait_for(admin.list_topics(), 20)
    finally:
        await asyncio.wait_for(admin.close(), 10)


async def test_simulated_events_arrive_valid_and_keyed_by_customer(
        broker: EmbeddedBroker) -> None:
    """N simulated events land on the topic: all valid, keyed by the customer's identifier,
    one customer always on one partition, in per-customer time order, stamped near now in
    the customer's own (stable) UTC offset."""
    topic = f"sim{uuid.uuid4().hex[:8]}.events"
    await _create(broker.bootstrap, topic, 3)
    progress: list[int] = []
    before = datetime.now(UTC) - timedelta(seconds=1)
    sent = await simulate(broker.bootstrap, topic, rate=0, seed=5, customers=200, limit=1200,
                          on_sent=progress.append)
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert sent == 1200
    assert progress[-1] == 1200
    records = await _read_all(broker.bootstrap, topic, 1200)
    assert len(records) == 1200
    partition_of: dict[bytes, int] = {}
    last_seen: dict[bytes, int] = {}
    offset_of: dict[bytes, int] = {}
    for key, value, partition in records:
        event = decode_event(value)
        assert key is not None
        assert key.decode() == event.key()  # the worker's profile key: processed in place
        assert key.decode().split(":", 1)[1] in (event.identity.get("customer_id"),
                                                 event.identity.get("anonymous_id"))
        assert partition_of.setdefault(key, partition) == partition
        assert last_seen.get(key, 0) <= event.ts_ms
        last_seen[key] = event.ts_ms
        assert before <= datetime.fromisoformat(event.occurred_at) <= after
        assert offset_of.setdefault(key, event.utc_offset_min) == event.utc_offset_min
    assert len(set(offset_of.values())) >= 3
    assert len({k for k in partition_of if k.startswith(b"customer_id:c-")}) > 50


async def test_generated_clock_keeps_the_generated_times(broker: EmbeddedBroker) -> None:
    """With clock="generated" the events are exactly the pure generator's, from `start`."""
    from service.tools.workload import journeys

    topic = f"sim{uuid.uuid4().hex[:8]}.events"
    await _create(broker.bootstrap, topic, 1)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    sent = await simulate(broker.bootstrap, topic, rate=0, seed=9, customers=30, limit=100,
                          clock="generated", start=start)
    assert sent == 100
    records = await _read_all(broker.bootstrap, topic, 100)
    expected = [dumps(e) for e in islice(journeys(9, 30, start), 100)]
    assert [value for _, value, _ in records] == expected
    assert [key for key, _, _ in records] == [customer_key(loads(v)) for v in expected]


async def test_rate_paces_and_cancellation_stops_cleanly(broker: EmbeddedBroker) -> None:
    """At 200 events/s, ~1 s of simulation sends about 200 events; cancelling the task stops
    it without error, and every event counted as sent is on the topic."""
    topic = f"sim{uuid.uuid4().hex[:8]}.events"
    await _create(broker.bootstrap, topic, 1)
    counts: list[int] = []
    task = asyncio.create_task(simulate(broker.bootstrap, topic, rate=200, seed=1,
                                        customers=50, limit=None, on_sent=counts.append))
    await asyncio.sleep(2.5)  # includes producer start-up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sent = counts[-1]
    assert 100 <= sent <= 520
    records = await _read_all(broker.bootstrap, topic, sent, timeout=20)
    assert len(records) >= sent


async def test_unreachable_broker_fails_with_a_readable_error() -> None:
    """A broker that is not there ends the simulation with SimulatorError naming the address."""
    from service.tools.embedded import free_port
    from service.tools.simulator import SimulatorError

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(SimulatorError, match=address):
        await simulate(address, "x.events", rate=0, seed=1, customers=1, limit=1)




def test_cli_creates_the_topic_and_stops_cleanly_on_sigint(broker: EmbeddedBroker,
                                                           tmp_path: Path) -> None:
    """`touchflow simulate` creates <prefix>.events with TOUCHFLOW_PARTITIONS partitions when
    missing, sends at the asked rate, and on SIGINT (Ctrl-C) exits 0 with a summary line and
    no traceback; every event it reports is on the topic."""
    prefix = f"cli{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TOUCHFLOW_BROKER=broker.url, TOUCHFLOW_TOPIC_PREFIX=prefix,
               TOUCHFLOW_PARTITIONS="3", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "simulate", "--rate", "300", "--customers", "100"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not asyncio.run(_exists(broker.bootstrap,
                                                                  f"{prefix}.events")):
        time.sleep(0.2)
    time.sleep(1.5)  # it is sending now
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    text = err.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    match = re.search(r"sent (\d+) events to (\S+) ", text)
    assert match, text
    sent, topic = int(match.group(1)), match.group(2)
    assert topic == f"{prefix}.events"
    assert 1 <= sent <= 2000
    records = asyncio.run(_read_all(broker.bootstrap, topic, sent, timeout=20))
    assert len(records) >= sent
    assert {partition for _, _, partition in records} <= {0, 1, 2}
    assert len({partition for _, _, partition in records}) > 1


async def test_two_live_runs_with_one_seed_have_distinct_event_ids(
        broker: EmbeddedBroker) -> None:
    """Live (wall-clock) runs suffix event ids per run: running the same seed again sends new
    events, not redeliveries the worker would drop as duplicates."""
    topic = f"sim{uuid.uuid4().hex[:8]}.events"
    await _create(broker.bootstrap, topic, 1)
    for _ in range(2):
        await simulate(broker.bootstrap, topic, rate=0, seed=3, customers=20, limit=50)
        await asyncio.sleep(0.01)
    records = await _read_all(broker.bootstrap, topic, 100)
    ids = [decode_event(value).event_id for _, value, _ in records]
    assert len(ids) == 100
    assert len(set(ids)) == 100
    assert {i.rsplit("-", 1)[0] for i in ids[:50]} == {i.rsplit("-", 1)[0] for i in ids[50:]}


def test_output_writes_the_same_jsonl_log_every_time(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`touchflow simulate --output F --limit N --start T` writes N valid events, the pure
    generator's exactly, and the same bytes on every run (an input for replay); no broker."""
    from service.cli import main
    from service.tools.workload import journeys

    argv = ["simulate", "--limit", "300", "--customers", "40", "--seed", "2",
            "--start", "2026-03-02T00:00:00+00:00"]
    assert main([*argv, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main([*argv, "--output", str(tmp_path / "b.jsonl")]) == 0
    first = (tmp_path / "a.jsonl").read_bytes()
    assert first == (tmp_path / "b.jsonl").read_bytes()
    lines = first.splitlines()
    assert len(lines) == 300
    for line in lines:
        decode_event(line)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    assert lines == [dumps(e) for e in islice(journeys(2, 40, start), 300)]
    assert "wrote 300 events" in capsys.readouterr().err
    assert main(["simulate", "--output", str(tmp_path / "c.jsonl")]) == 2
