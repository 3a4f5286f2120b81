"""bench/relay.py, the latency bench's transport floor: it forwards exactly the acting events'
ids, and `acting_ids` names exactly the events replay answers with an action."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

from bench.harness import create_topic
from bench.latency import acting_ids
from bench.paths import ROOT, RULES
from bench.run import _workload
from service.domain.rules import load_rulebook
from service.replay.runner import replay_file
from service.tools.embedded import EmbeddedBroker


def test_acting_ids_are_the_triggers_of_replays_actions(tmp_path: Path) -> None:
    """On 3,000 events of the bench workload, the ids are those in the actions `touchflow
    replay` writes (their trigger_event_id, in order), and there are some."""
    log, _ = _workload(3_000, 1_000, 7)
    source = tmp_path / "log.jsonl"
    source.write_bytes(b"".join(raw.rstrip(b"\n") + b"\n" for raw in log))
    with open(tmp_path / "actions.jsonl", "wb") as out:
        replay_file(source, load_rulebook(RULES), output=out, partitions=4)
    written = [orjson.loads(line)["trigger_event_id"]
               for line in (tmp_path / "actions.jsonl").read_bytes().splitlines()]
    assert written
    assert acting_ids(log, RULES, 4) == written


async def test_relay_forwards_the_wanted_events_only(tmp_path: Path) -> None:
    """40 events over 4 partitions, every third one wanted: the relay's output holds the
    wanted ids once each, as `{"trigger_event_id": id}` keyed like their event, and nothing
    else."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    wanted = {f"e-{n}" for n in range(0, 40, 3)}
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{event_id}\n" for event_id in sorted(wanted)), encoding="utf-8")
    with EmbeddedBroker() as broker:
        for topic in ("in", "out"):
            await create_topic(broker.bootstrap, topic, 4)
        env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "BENCH_BROKER": broker.bootstrap,
                                  "BENCH_TOPIC": "in", "BENCH_OUT_TOPIC": "out",
                                  "BENCH_IDS": str(ids)}
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.relay", env=env, stdout=subprocess.PIPE)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        consumer = AIOKafkaConsumer("out", bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        try:
            assert relay.stdout is not None
            assert await asyncio.wait_for(relay.stdout.readline(), 60) == b"ready\n"
            await producer.start()
            await consumer.start()
            for n in range(40):
                await producer.send("in", orjson.dumps({"event_id": f"e-{n}"}),
                                    key=f"c-{n % 7}".encode(), partition=n % 4)
            await producer.flush()
            got: dict[str, bytes | None] = {}
            for _ in range(100):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        event_id = orjson.loads(record.value)["trigger_event_id"]
                        assert event_id not in got
                        got[event_id] = record.key
                if len(got) >= len(wanted):
                    break
            await asyncio.sleep(0.5)
            assert not await consumer.getmany(timeout_ms=500)  # nothing else came
        finally:
            await producer.stop()
            await consumer.stop()
            relay.terminate()
            await relay.wait()
    assert set(got) == wanted
    assert all(key == f"c-{int(event_id[2:]) % 7}".encode() for event_id, key in got.items())
