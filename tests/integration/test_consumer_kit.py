"""The consuming side on the embedded broker: an event's W3C trace context reaches
its action and audit records, and the example consumer (examples/consumer/) receives actions
from a real worker and handles each `action_id` once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson

from service.domain.partitioning import partition_for_key
from tests.events import log_line
from tests.integration.conftest import ROOT, WorkerEnv, consume, produce

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


async def _produce_with_headers(bootstrap: str, topic: str, key: bytes, value: bytes,
                                headers: list[tuple[str, bytes]],
                                partition: int | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await asyncio.wait_for(producer.start(), 20)
    try:
        await asyncio.wait_for(producer.send_and_wait(
            topic, value, key=key, headers=headers, partition=partition), 20)
    finally:
        await producer.stop()


async def _records(bootstrap: str, topic: str, count: int,
                   timeout: float = 60) -> list[Any]:
    """Raw records of `topic` from the beginning, until `count` arrived or `timeout`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 20)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_traceparent_reaches_actions_and_audit_records(worker_env: WorkerEnv) -> None:
    """An event sent with `traceparent` and `tracestate` headers gives an action (on the
    actions topic and its channel topic) and an audit record that carry the same trace
    context, also when it arrives on a partition that does not own its profile (forwarded
    through the repartition topic), and a malformed one's dead letter; an event without one
    gives records without one (none is invented)."""
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker)
    bootstrap = worker_env.broker.bootstrap
    await produce(bootstrap, worker_env.topic("events"), [
        log_line("u0", "c-untraced", "call", minute=30, channel="call_center", reason="complaint")])
    await _produce_with_headers(
        bootstrap, worker_env.topic("events"), b"customer_id:c-traced",
        log_line("t0", "c-traced", "call", minute=30, channel="call_center", reason="complaint"),
        [("traceparent", PARENT), ("tracestate", b"vendor=1")])
    key = b"customer_id:c-moved"
    wrong = 1 - partition_for_key(key, worker_env.partitions)  # not the owner: forwarded
    await _produce_with_headers(
        bootstrap, worker_env.topic("events"), key,
        log_line("m0", "c-moved", "call", minute=30, channel="call_center", reason="complaint"),
        [("traceparent", PARENT), ("tracestate", b"vendor=1")], partition=wrong)

    for topic in ("actions", "actions.call_center", "decisions"):
        records = await _records(bootstrap, worker_env.topic(topic), count=3)
        by_event = {orjson.loads(r.value)["trigger_event_id"]: r for r in records}
        assert set(by_event) == {"u0", "t0", "m0"}, (topic, worker_env.logs()[-3000:])
        for traced_id in ("t0", "m0"):
            traced = dict(by_event[traced_id].headers)
            assert traced.get("traceparent", b"")[3:35].decode() == TRACE_ID, topic
            assert traced.get("tracestate") == b"vendor=1", topic
        assert "traceparent" not in dict(by_event["u0"].headers), topic
    await _produce_with_headers(bootstrap, worker_env.topic("events"), b"k", b'{"bad": ',
                                [("traceparent", PARENT)])
    dead = await _records(bootstrap, worker_env.topic("deadletter"), count=1)
    assert [dict(r.headers).get("traceparent") for r in dead] == [PARENT]
    assert worker_env.stop(worker) == 0


async def test_example_consumer_receives_and_deduplicates(worker_env: WorkerEnv) -> None:
    """examples/consumer/consumer.py, run as its own process on `<prefix>.actions`, handles
    each action a real worker sends once, with the trace id of its event; a second delivery
    of an action (re-published as a worker recovering from a crash would send it again)
    is counted as a duplicate and not handled."""
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker)
    bootstrap = worker_env.broker.bootstrap
    values = [log_line(f"k{i}", f"c-k{i}", "call", minute=30, channel="call_center",
                       reason="complaint") for i in range(3)]
    await produce(bootstrap, worker_env.topic("events"), values[:2])
    await _produce_with_headers(bootstrap, worker_env.topic("events"), b"customer_id:c-k2",
                                values[2], [("traceparent", PARENT)])
    sent = await _records(bootstrap, worker_env.topic("actions"), count=3)
    assert len(sent) == 3, worker_env.logs()[-3000:]
    again = sent[0]
    await produce(bootstrap, worker_env.topic("actions"), [again.value], [again.key])

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "examples" / "consumer" / "consumer.py"),
         "--bootstrap", bootstrap, "--topic", worker_env.topic("actions"),
         "--group", f"{worker_env.app_id}-example", "--keep-expired",
         "--max-messages", "4", "--timeout-s", "60"],
        cwd=ROOT, env=worker_env.env(), capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    handled = [line for line in lines if "handled" in line]
    assert sorted(h["handled"] for h in handled) == sorted(
        orjson.loads(r.value)["action_id"] for r in sent)
    traces = {h["handled"]: h["trace_id"] for h in handled}
    third = next(orjson.loads(r.value)["action_id"] for r in sent
                 if orjson.loads(r.value)["trigger_event_id"] == "k2")
    assert traces[third] == TRACE_ID
    assert sum(1 for t in traces.values() if t is None) == 2
    assert lines[-1] == {"summary": {"received": 4, "handled": 3, "duplicates": 1,
                                     "expired": 0, "invalid": 0}}
    decided = await consume(bootstrap, worker_env.topic("actions"), count=4, timeout=5)
    assert len(decided) == 4  # the re-published copy really is on the topic
    assert worker_env.stop(worker) == 0
