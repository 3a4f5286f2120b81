"""A worker given a sink that is not only Kafka (examples/file_output/): its actions land in
JSON-lines files, its audit records on Kafka, on the real embedded broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.events import log_line
from tests.integration.conftest import WorkerEnv, consume, produce, wait_for_records


async def _file_lines(path: Path, count: int, env: WorkerEnv, timeout: float = 60) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting on {path}\n{env.logs()[-3000:]}")


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_actions_go_to_files_and_audit_records_to_kafka(worker_env: WorkerEnv,
                                                              runtime: str) -> None:
    """`python -m examples.file_output`: twelve pings give one `milestone_10` and a complaint
    call an `apology_call`, written once each to `<data dir>/outputs/<prefix>.actions.jsonl`
    (and the call to the call-center channel's file); the Kafka actions topic stays empty,
    the audit records of both actions are on Kafka; SIGTERM stops it with exit code 0. Both
    runtimes take the sink factory."""
    worker = worker_env.start_worker("files", module="examples.file_output",
                                     TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker, timeout=90)
    values = [log_line(f"a{i}", "c-a", "ping", at=f"2026-03-02T09:{i:02d}:00Z")
              for i in range(12)]
    values.append(log_line("c0", "c-c", "call", minute=30, channel="call_center",
                           reason="complaint"))
    await produce(worker_env.broker.bootstrap, worker_env.topic("events"), values)

    outputs = worker_env.tmp / "data" / "outputs"
    lines = await _file_lines(outputs / f"{worker_env.topic('actions')}.jsonl", 2, worker_env)
    actions = [orjson.loads(line) for line in lines]
    assert sorted(a["action"] for a in actions) == ["apology_call", "milestone_10"]
    calls = (outputs / f"{worker_env.topic('actions.call_center')}.jsonl").read_bytes()
    assert [orjson.loads(line)["action"] for line in calls.splitlines()] == ["apology_call"]
    decisions = await wait_for_records(
        worker_env, "decisions", lambda rs: {d["action_id"] for d in rs if d.get(
            "outcome") == "sent"} >= {a["action_id"] for a in actions})
    assert decisions
    assert await consume(worker_env.broker.bootstrap, worker_env.topic("actions"), count=1,
                         timeout=2) == []
    assert worker_env.stop(worker) == 0
