"""Fixtures for integration tests: one embedded Tansu broker per session, workers as processes.

Every test uses its own uuid topic prefix and app id, so tests never share state.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.tools.embedded import EmbeddedBroker
from tests.events import log_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker on a free loopback port for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@dataclass
class WorkerEnv:
    """Settings of one test's worker(s): unique prefix and app id, temp data dir."""

    broker: EmbeddedBroker
    tmp: Path
    rules: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    app_id: str = field(default_factory=lambda: f"app{uuid.uuid4().hex[:8]}")
    partitions: int = 2
    store: str = "memory://"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_paths: dict[int, Path] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TOUCHFLOW_BROKER=self.broker.url,
            TOUCHFLOW_TOPIC_PREFIX=self.prefix,
            TOUCHFLOW_APP_ID=self.app_id,
            TOUCHFLOW_RULES=str(self.rules),
            TOUCHFLOW_STORE=self.store,
            TOUCHFLOW_DATA_DIR=str(self.tmp / "data"),
            TOUCHFLOW_METRICS_PORT="0",
            TOUCHFLOW_METRICS_HOST="127.0.0.1",
            TOUCHFLOW_PARTITIONS=str(self.partitions),
            TOUCHFLOW_SESSION_TIMEOUT_MS="6000",
            TOUCHFLOW_LOG_LEVEL="info",
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        return env

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def start_worker(self, name: str = "w", *, module: str = "service worker",
                     **extra: str) -> subprocess.Popen[bytes]:
        """`python -m <module>` (default: `touchflow worker`) with this test's settings."""
        path = self.tmp / f"worker-{name}-{len(self.processes)}.log"
        log = open(path, "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", *module.split()], cwd=ROOT, env=self.env(**extra),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        self.log_paths[process.pid] = path
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             timeout: float = 20.0) -> int:
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise AssertionError(f"worker did not stop within {timeout}s after {sig}") from None

    def metrics_url(self, process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
        """The worker's HTTP base URL, read from its start-up log line (it binds port 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_paths[process.pid].read_text(errors="replace")
            match = re.search(r"metrics and health on (http://[0-9.:]+)/metrics", text)
            if match:
                return match.group(1)
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{self.logs()}")
            time.sleep(0.1)
        raise AssertionError(f"worker never logged its metrics address:\n{self.logs()}")

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
        """Block until the worker's /readyz answers 200; return its HTTP base URL."""
        base = self.metrics_url(process)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return base
            except urllib.error.HTTPError as error:
                last = error.read().decode(errors="replace")
            except OSError as error:
                last = repr(error)
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s ({last}):\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)


@pytest.fixture
def worker_env(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[WorkerEnv]:
    """A fresh namespace on the shared broker; kills any worker the test left running."""
    env = WorkerEnv(broker, tmp_path, ROOT / "tests" / "data" / "rulebook.yaml")
    yield env
    env.close()


async def produce(bootstrap: str, topic: str, values: list[bytes],
                  keys: list[bytes | None] | None = None, *,
                  max_request_size: int = 1_048_576) -> None:
    """Send raw values to a topic and wait until all are acknowledged.

    Without `keys`, each value is keyed like a well-behaved upstream producer keys it (the
    event's profile key, `Event.key()`), so one customer's events keep their order; values
    that do not decode as events are sent without a key."""
    if keys is None:
        keys = [_event_key(value) for value in values]
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_request_size=max_request_size)
    await asyncio.wait_for(producer.start(), 20)
    try:
        for index, value in enumerate(values):
            key = keys[index] if keys else None
            await producer.send(topic, value, key=key)
        await asyncio.wait_for(producer.flush(), 20)
    finally:
        await producer.stop()


def _event_key(value: bytes) -> bytes | None:
    from schemas.event import EventError, decode_event

    try:
        return decode_event(value).key().encode()
    except EventError:
        return None


async def consume(bootstrap: str, topic: str, *, count: int, timeout: float = 60.0,
                  settle: float = 0.0) -> list[Any]:
    """Read `topic` from the beginning until `count` records arrived (then `settle` more
    seconds, to catch extras) or `timeout`; return the decoded JSON values in order."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None,
    )
    await asyncio.wait_for(consumer.start(), 20)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    reached: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(orjson.loads(r.value) if r.value is not None else None
                           for r in records)
            if len(out) >= count:
                reached = reached or time.monotonic()
                if time.monotonic() - reached >= settle:
                    break
    finally:
        await consumer.stop()
    return out


async def wait_for_records(env: WorkerEnv, topic: str, predicate: Any,
                           timeout: float = 60) -> list[Any]:
    """Re-read `<prefix>.<topic>` until `predicate(records)` holds; fail with the logs."""
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = await consume(env.broker.bootstrap, env.topic(topic), count=10**9, timeout=2)
        if predicate(records):
            return records
    raise AssertionError(f"timed out waiting on {topic}: {records}\n{env.logs()[-3000:]}")


async def processed_at_least(base: str, at_least: int, timeout: float = 60) -> None:
    """Wait until the worker at `base` (its metrics URL root) counts `at_least` events."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
            text = response.read().decode()
        done = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("touchflow_events_total{"))
        if done >= at_least:
            return
        assert time.monotonic() < deadline, f"only {done} events processed"
        await asyncio.sleep(0.01)


async def report_scores(env: WorkerEnv, customers: list[str], tag: str,
                        timeout: float = 60) -> dict[str, float]:
    """Send one `report` per customer (tests/data/rulebook.yaml); the score each
    `score_report` action carries, by customer."""
    bootstrap = env.broker.bootstrap
    await produce(bootstrap, env.topic("events"), [
        log_line(f"{c}-{tag}", c, "report", at="2026-03-03T00:00:00Z") for c in customers])
    wanted = {f"{c}-{tag}" for c in customers}
    deadline = time.monotonic() + timeout
    actions: list[Any] = []
    while time.monotonic() < deadline:
        actions = await consume(bootstrap, env.topic("actions"), count=10**9, timeout=1.5)
        if wanted <= {a["trigger_event_id"] for a in actions}:
            break
    return {a["customer_id"]: float(a["payload"]["pings"]) for a in actions
            if a["trigger_event_id"] in wanted}


def ping_backlog(customers: list[str], pings: int) -> list[bytes]:
    """`pings` pings per customer, one a second from 09:00 of 2026-03-02, round-robin over
    the customers (each customer's backlog spread across the whole log)."""
    return [log_line(f"{c}-p{n}", c, "ping", at=f"2026-03-02T09:{n // 60:02d}:{n % 60:02d}Z")
            for n in range(pings) for c in customers]


async def logged(env: WorkerEnv, process: subprocess.Popen[bytes], text: str,
                 timeout: float = 30) -> None:
    """Wait until the worker's log holds `text`."""
    deadline = time.monotonic() + timeout
    while text not in env.log_paths[process.pid].read_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{env.logs()[-3000:]}"
        await asyncio.sleep(0.1)
