"""Fault injection on the real embedded broker. Crashes, rebalances, SIGTERM, broker
outages: every event's effect lands in the state exactly once, no action is lost, and a
re-sent action keeps its `action_id`.

The invariant check is the same everywhere: after the faults, one `report` event per customer
makes the worker send `score_report` with the customer's current score, which must equal the
number of distinct pings sent plus the report itself; and `milestone_10` (a once-only action)
exists exactly once per customer, counting re-sends with the same `action_id` as one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

import pytest

from service.tools.embedded import EmbeddedBroker
from service.tools.embedded.broker import free_port
from tests.events import log_line
from tests.integration.conftest import WorkerEnv, consume, produce

CUSTOMERS = [f"f-{n:03d}" for n in range(24)]
# The tests whose outcome depends on the runtime's own consumer loop, commits and shutdown run
# under both runtimes (TOUCHFLOW_RUNTIME).
RUNTIMES = pytest.mark.parametrize("runtime", ["kafka", "faust"])


def _pings(start: int, stop: int) -> list[bytes]:
    return [log_line(f"{c}-p{i}", c, "ping", at=f"2026-03-02T{9 + i // 60:02d}:{i % 60:02d}:00Z")
            for i in range(start, stop) for c in CUSTOMERS]


def _reports(tag: str) -> list[bytes]:
    return [log_line(f"{c}-{tag}", c, "report", at="2026-03-03T00:00:00Z") for c in CUSTOMERS]


async def _check_invariants(env: WorkerEnv, bootstrap: str, pings: int, tag: str) -> None:
    await produce(bootstrap, env.topic("events"), _reports(tag))
    wanted = {f"{c}-{tag}" for c in CUSTOMERS}
    deadline = time.monotonic() + 90
    actions: list[Any] = []
    while time.monotonic() < deadline:
        actions = await consume(bootstrap, env.topic("actions"), count=10**9, timeout=3)
        if wanted <= {a["trigger_event_id"] for a in actions}:
            break
    reports = {a["customer_id"]: float(a["payload"]["pings"]) for a in actions
               if a["trigger_event_id"] in wanted}
    assert reports == dict.fromkeys(CUSTOMERS, float(pings + 1)), env.logs()[-4000:]
    ids: dict[str, set[str]] = defaultdict(set)
    for action in actions:
        if action["action"] == "milestone_10":
            ids[action["customer_id"]].add(action["action_id"])
    assert {c: len(v) for c, v in ids.items()} == dict.fromkeys(CUSTOMERS, 1), (
        "milestone_10 must exist once per customer; a re-send must keep its action_id")
    by_id: dict[str, Any] = {}
    for action in actions:
        previous = by_id.setdefault(action["action_id"], action)
        assert previous == action, "a re-sent action must be identical"


async def _await_decisions(env: WorkerEnv, bootstrap: str, at_least: int,
                           timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = await consume(bootstrap, env.topic("decisions"), count=at_least, timeout=2)
        if len(seen) >= at_least:
            return
    raise AssertionError(f"fewer than {at_least} decisions within {timeout}s:\n{env.logs()}")


@RUNTIMES
async def test_kill_9_mid_stream_then_restart_applies_every_event_once(
        worker_env: WorkerEnv, runtime: str) -> None:
    """A worker killed with SIGKILL in the middle of a stream (RocksDB store, so the restart
    starts from the local checkpoint plus the changelog tail) loses no event, counts none
    twice, loses no action, and re-sends only identical actions; under either runtime."""
    worker_env.store = "rocksdb://"
    bootstrap = worker_env.broker.bootstrap
    worker = worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker)
    await produce(bootstrap, worker_env.topic("events"), _pings(0, 12))
    await _await_decisions(worker_env, bootstrap, 1)
    await produce(bootstrap, worker_env.topic("events"), _pings(12, 40))
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    await produce(bootstrap, worker_env.topic("events"), _pings(40, 50))
    worker = worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker, timeout=90)
    await _check_invariants(worker_env, bootstrap, pings=50, tag="r")
    assert worker_env.stop(worker) == 0


@RUNTIMES
async def test_rebalance_survivor_takes_over_and_partitions_move_back(
        worker_env: WorkerEnv, runtime: str) -> None:
    """Two workers share four partitions; one is killed, the survivor takes its partitions
    (recovering their profiles from the changelog) and finishes the stream; a new worker joins
    and partitions move back (the survivor drains and commits what it had in flight before
    they go). Same exactly-once-effect invariants, under either runtime."""
    worker_env.partitions = 4
    bootstrap = worker_env.broker.bootstrap
    first = worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime)
    second = worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(first, timeout=90)
    worker_env.wait_ready(second, timeout=90)
    await produce(bootstrap, worker_env.topic("events"), _pings(0, 15))
    await _await_decisions(worker_env, bootstrap, 1)
    second.send_signal(signal.SIGKILL)
    second.wait(10)
    await produce(bootstrap, worker_env.topic("events"), _pings(15, 30))
    third = worker_env.start_worker("c", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(third, timeout=90)
    await produce(bootstrap, worker_env.topic("events"), _pings(30, 40))
    await _check_invariants(worker_env, bootstrap, pings=40, tag="r")
    logs = worker_env.logs()
    assert logs.count("partitions assigned") >= 4, "expected assignments to move"
    assert worker_env.stop(first) == 0
    assert worker_env.stop(third) == 0


@RUNTIMES
async def test_sigterm_drains_commits_and_exits_within_10s(worker_env: WorkerEnv,
                                                          runtime: str) -> None:
    """SIGTERM under a steady stream: the worker finishes its batch, commits, leaves the
    group and exits 0 within 10 s; its successor continues without loss or double counting;
    under either runtime."""
    bootstrap = worker_env.broker.bootstrap
    worker = worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker)
    await produce(bootstrap, worker_env.topic("events"), _pings(0, 10))
    sender = asyncio.create_task(produce(bootstrap, worker_env.topic("events"), _pings(10, 30)))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 15)
    assert code == 0
    assert time.monotonic() - started < 10.0
    await sender
    worker = worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker, timeout=90)
    await _check_invariants(worker_env, bootstrap, pings=30, tag="r")
    assert worker_env.stop(worker) == 0


def _readyz(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_broker_down_at_start_up_then_up(worker_env: WorkerEnv) -> None:
    """With no broker at start-up the worker stays up, reports not ready, logs one line per
    attempt with growing, jittered delays (no crash loop), and becomes ready once a broker
    appears."""
    port = free_port()
    worker = worker_env.start_worker("a", TOUCHFLOW_BROKER=f"kafka://127.0.0.1:{port}")
    base = worker_env.metrics_url(worker)
    await asyncio.sleep(4)
    assert worker.poll() is None, "the worker must not exit while the broker is down"
    assert _readyz(base) == 503
    lines = [line for line in worker_env.logs().splitlines() if "unreachable (attempt" in line]
    assert len(lines) >= 2
    delays = [float(re.search(r"retrying in ([0-9.]+)s", line)[1]) for line in lines[:2]]
    assert 1.0 <= delays[0] <= 2.0 <= delays[1] <= 3.0, delays  # doubling, plus jitter
    assert "Unable connect" not in worker_env.logs(), "one line per attempt, ours"
    with EmbeddedBroker(port=port) as late:
        worker_env.wait_ready(worker, timeout=90)
        await produce(late.bootstrap, worker_env.topic("events"), _pings(0, 3))
        reports = _reports("r")
        await produce(late.bootstrap, worker_env.topic("events"), reports)
        actions = await consume(late.bootstrap, worker_env.topic("actions"),
                                count=len(CUSTOMERS), timeout=60)
        assert sorted(float(a["payload"]["pings"]) for a in actions) == [4.0] * len(CUSTOMERS)
        assert worker_env.stop(worker) == 0


async def test_broker_paused_mid_stream_worker_resumes_and_loses_nothing(
        worker_env: WorkerEnv, tmp_path: Any) -> None:
    """The broker frozen (SIGSTOP) for several seconds mid-stream, then resumed (SIGCONT):
    the worker retries, resumes, and every event counts exactly once."""
    with EmbeddedBroker(log_path=tmp_path / "paused-broker.log") as own:
        worker_env.broker = own
        worker = worker_env.start_worker("a")
        worker_env.wait_ready(worker, timeout=90)
        await produce(own.bootstrap, worker_env.topic("events"), _pings(0, 10))
        await _await_decisions(worker_env, own.bootstrap, 1)
        own.pause()
        await asyncio.sleep(5)
        own.resume()
        await produce(own.bootstrap, worker_env.topic("events"), _pings(10, 20))
        await _check_invariants(worker_env, own.bootstrap, pings=20, tag="r")
        assert worker.poll() is None
        assert worker_env.stop(worker) == 0


def _run_cli(env: dict[str, str], timeout: float = 40) -> subprocess.CompletedProcess[str]:
    import sys

    from tests.integration.conftest import ROOT

    return subprocess.run([sys.executable, "-m", "service", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _one_sentence(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("touchflow:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_bad_configuration_stops_start_up_with_one_sentence(worker_env: WorkerEnv) -> None:
    """A broker host that does not resolve, a rulebook that cannot be read, and a data
    directory that cannot be written, and a partition count that is not a number each stop the
    worker with one `touchflow:` sentence that names the setting, and no traceback."""
    base = worker_env.env(TOUCHFLOW_STORE="rocksdb://")
    _one_sentence(_run_cli({**base, "TOUCHFLOW_BROKER": "kafka://no-such-host.invalid:9092"}),
                  "TOUCHFLOW_BROKER", "does not resolve")
    _one_sentence(_run_cli({**base, "TOUCHFLOW_RULES": str(worker_env.tmp)}), "rulebook")
    _one_sentence(_run_cli({**base, "TOUCHFLOW_DATA_DIR": "/proc/touchflow"}),
                  "TOUCHFLOW_DATA_DIR")
    _one_sentence(_run_cli({**base, "TOUCHFLOW_PARTITIONS": "many"}), "TOUCHFLOW_PARTITIONS")


def _hostile_corpus() -> dict[str, bytes]:
    """One message per kind of hostile input, by the dead-letter reason family expected."""
    import orjson

    good = orjson.loads(log_line("h-template", "h-0", "ping", minute=30))

    def variant(**changes: Any) -> bytes:
        return orjson.dumps({**good, **changes})

    return {
        "truncated json": b'{"event_id": "h1", "type": "ping", ',
        "not an object": b"[1, 2, 3]",
        "wrong type": variant(event_id="h2", occurred_at=1234567890),
        "properties not an object": variant(event_id="h3", properties=[1, 2]),
        "missing identity": variant(event_id="h4", identity={}),
        "unknown channel": variant(event_id="h5", channel="carrier_pigeon"),
        "oversized": variant(event_id="h6", properties={"blob": "x" * (1_100_000)}),
        "deep nesting": b'{"event_id": "h7", "properties": '
        + b"[" * 5000 + b"]" * 5000 + b"}",
        "invalid utf-8": b'{"event_id": "h8", "type": "\xff\xfe"}',
        "timestamp centuries off": variant(event_id="h9", occurred_at="1850-01-01T00:00:00Z"),
        "raw e-mail": variant(event_id="h10", identity={"email": "someone@example.com"}),
        "empty": b"",
    }


async def test_hostile_input_is_dead_lettered_and_good_events_all_count(
        worker_env: WorkerEnv) -> None:
    """Every malformed message of a hostile corpus (bad JSON, wrong types, missing identity,
    unknown channel, > 1 MiB, deep nesting, invalid UTF-8, absurd timestamps, raw personal
    data, empty) interleaved with good events and duplicates lands on the dead-letter topic
    with a reason; every good event counts exactly once; the worker never stops; and no
    dead letter repeats a personal value (an oversized message keeps only its length)."""
    bootstrap = worker_env.broker.bootstrap
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker)
    corpus = _hostile_corpus()
    good = _pings(0, 12)
    values: list[bytes] = []
    bad = list(corpus.values())
    for index, value in enumerate(good):
        values.append(value)
        if index % 20 == 0 and bad:
            values.append(bad.pop())
        if index % 7 == 0:
            values.append(value)  # duplicate delivery
    values.extend(bad)
    await produce(bootstrap, worker_env.topic("events"), values, max_request_size=4_000_000)
    dead = await consume(bootstrap, worker_env.topic("deadletter"), count=len(corpus),
                         timeout=60, settle=2.0)
    assert len(dead) == len(corpus), [d["reason"] for d in dead]
    assert all(d["reason"] and d["error"] for d in dead)
    assert not any("someone@example.com" in str(d) for d in dead)
    oversized = [d for d in dead if d["reason"] == "oversized"]
    assert oversized and oversized[0]["value"] is None
    assert oversized[0]["value_bytes"] > 1_000_000
    assert worker.poll() is None
    await _check_invariants(worker_env, bootstrap, pings=12, tag="r")
    assert worker_env.stop(worker) == 0
