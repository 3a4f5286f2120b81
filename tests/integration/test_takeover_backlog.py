"""Exactly-once effects across a takeover in a long per-customer backlog: worker A is killed
(SIGKILL) while working through 300 pings for each of 16 customers, B takes over, recovers
A's changelog and consumes from the committed offsets, so the events between the two are
redelivered, far more of them per customer than a profile remembers event ids of (64).
Every customer's score must count each ping once: the "too late to be sure" floor catches
what the id ring forgot (it used to let the floor's own millisecond through, and each
re-applied event evicted the next: 65 pings counted twice in a partition)."""

from __future__ import annotations

import signal

from tests.integration.conftest import (
    WorkerEnv,
    logged,
    ping_backlog,
    processed_at_least,
    produce,
    report_scores,
)

CUSTOMERS = [f"s-{n:03d}" for n in range(16)]
PINGS = 300


async def test_a_takeover_in_a_long_backlog_counts_every_event_once(
        worker_env: WorkerEnv) -> None:
    """SIGKILL in the backlog, a second worker takes over: every customer's score is its
    pings plus the report, exactly."""
    bootstrap = worker_env.broker.bootstrap
    first = worker_env.start_worker("a")
    await logged(worker_env, first, "worker started")
    await produce(bootstrap, worker_env.topic("events"), ping_backlog(CUSTOMERS, PINGS))
    base = worker_env.wait_ready(first)
    await processed_at_least(base, at_least=1500)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = worker_env.start_worker("b")
    worker_env.wait_ready(second)
    final = await report_scores(worker_env, CUSTOMERS, "end")
    assert final == dict.fromkeys(CUSTOMERS, float(PINGS + 1)), worker_env.logs()[-3000:]
