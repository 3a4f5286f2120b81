"""Stale writers fenced: a worker paused past its session timeout (SIGSTOP here; a long GC or a
frozen VM alike) must not land changelog records after its successor's when it resumes, or a
later recovery rolls the successor's state back.

The story: worker A owns every partition and is stopped while it works through a backlog,
with batches in flight. Worker B starts, takes the partitions once A's session expires,
processes the rest of the backlog and a report per customer (which writes every customer's
profile). A is resumed: its batches from before the pause must not reach the changelog. Then
B stops, A takes every partition back and recovers them from the changelog: the score of each
customer must count every ping and both reports, nothing rolled back.

Verified against the bug: with both layers of service/stream/fencing.py switched off, this test
failed 3 runs of 3 (scores of 4, 17 or 41 instead of 42: A's stale records landed after B's);
with either layer alone the scores were right.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.integration.conftest import (
    WorkerEnv,
    logged,
    ping_backlog,
    processed_at_least,
    produce,
    report_scores,
)

# A backlog of 16,000 pings the worker takes a second or more to work through, 40 a customer
# (longer per-customer backlogs: test_takeover_backlog.py).
CUSTOMERS = [f"s-{n:03d}" for n in range(400)]
PINGS = 40


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_a_worker_paused_past_its_session_timeout_rolls_nothing_back(
        worker_env: WorkerEnv, runtime: str) -> None:
    """A worker stopped in a backlog for longer than its session timeout, while a second one
    takes over and writes newer state for the same customers, writes none of its stale
    batches when resumed (it logs that it abandoned them); the state recovered from the
    changelog afterwards counts every event once. Under either runtime (under Faust the
    lease watches the heartbeats of Faust's own consumer)."""
    bootstrap = worker_env.broker.bootstrap
    first = worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime)
    await logged(worker_env, first, "worker started")  # its topics exist
    backlog = ping_backlog(CUSTOMERS, PINGS)
    await produce(bootstrap, worker_env.topic("events"), backlog)  # while A joins the group
    base = worker_env.wait_ready(first)
    await processed_at_least(base, at_least=len(CUSTOMERS) * 5)
    first.send_signal(signal.SIGSTOP)  # in the backlog: batches in flight
    paused = time.monotonic()
    try:
        second = worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime)
        worker_env.wait_ready(second)
        middle = await report_scores(worker_env, CUSTOMERS, "mid")  # B owns every partition by now
        assert middle == dict.fromkeys(CUSTOMERS, float(PINGS + 1)), worker_env.logs()[-3000:]
        assert time.monotonic() - paused > 6.0, "paused for less than the session timeout"
    finally:
        first.send_signal(signal.SIGCONT)
    first_log = worker_env.log_paths[first.pid]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until A noticed, abandoned its batches, rejoined
        _, noticed, after = first_log.read_text().partition("no heartbeat answered")
        if noticed and "partitions assigned" in after:
            break
        await asyncio.sleep(0.2)
    assert worker_env.stop(second) == 0  # A takes every partition, recovered from the changelog
    final = await report_scores(worker_env, CUSTOMERS, "end")
    assert final == dict.fromkeys(CUSTOMERS, float(PINGS + 2)), worker_env.logs()[-4000:]
    text = first_log.read_text()
    assert "batches in flight abandoned" in text, "A had batches in flight; it must say so"
    assert worker_env.stop(first) == 0
