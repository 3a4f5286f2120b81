"""Capacity across customers on the real broker with two workers: a call-center limit far
below demand is spent exactly, across partitions owned by different workers, through quota
records on the repartition topic."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
from collections import Counter

from tests.events import log_line
from tests.integration.conftest import ROOT, WorkerEnv, produce, wait_for_records

RULES = ROOT / "tests" / "data" / "capacity_rulebook.yaml"
LEADS = [f"lead-{n}" for n in range(64)]


def _two_ready_workers(env: WorkerEnv) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Workers a and b on 4 partitions under the capacity rulebook, both ready."""
    env.partitions = 4
    env.rules = RULES
    first, second = env.start_worker("a"), env.start_worker("b")
    env.wait_ready(first, timeout=90)
    env.wait_ready(second, timeout=90)
    return first, second


def _wave(wave: int) -> list[bytes]:
    """The `wave`-th eight of the 64 leads qualified, at 09:<wave> on 2026-03-02."""
    return [log_line(f"q-{lead}", lead, "lead_qualified", at=f"2026-03-02T09:{wave:02d}:00Z")
            for lead in LEADS[wave * 8:(wave + 1) * 8]]


async def test_two_workers_send_exactly_the_limit_of_calls(worker_env: WorkerEnv) -> None:
    """64 qualified leads over 4 partitions and 2 workers, in waves, against a limit of 5
    calls in total: exactly 5 calls are sent, every other lead gets the e-mail, each lead
    gets exactly one action, and the workers' `touchflow_capacity_spent` add up to 5."""
    first, second = _two_ready_workers(worker_env)
    bootstrap = worker_env.broker.bootstrap
    for wave in range(8):  # quota records travel between the waves
        await produce(bootstrap, worker_env.topic("events"), _wave(wave))
        await asyncio.sleep(0.5)
    actions = await wait_for_records(worker_env, "actions", lambda rs: len(rs) >= 64,
                                     timeout=90)
    counts = Counter(a["action"] for a in actions)
    assert counts == {"call": 5, "mail": 59}
    assert sorted(a["customer_id"] for a in actions) == sorted(LEADS)
    spent = 0.0
    for worker in (first, second):  # the metrics add up to the limit too
        with urllib.request.urlopen(f"{worker_env.metrics_url(worker)}/metrics") as response:
            text = response.read().decode()
        spent += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith('touchflow_capacity_spent{constraint="call_center"'))
    assert spent == 5
    assert worker_env.stop(first) == 0 and worker_env.stop(second) == 0


async def test_a_worker_killed_mid_stream_spends_no_more_than_the_limit(
        worker_env: WorkerEnv) -> None:
    """Two workers, one killed with SIGKILL after three waves of leads and replaced: its
    partitions' pools and holdings come back from the changelog, so over 64 leads the calls
    sent (distinct action ids: the actions topic is at-least-once) are exactly the limit of
    5, and every lead gets an action."""
    first, second = _two_ready_workers(worker_env)
    bootstrap = worker_env.broker.bootstrap
    third = None
    for wave in range(8):
        if wave == 3:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            third = worker_env.start_worker("c")
        await produce(bootstrap, worker_env.topic("events"), _wave(wave))
        await asyncio.sleep(0.5 if wave != 3 else 8)
    actions = await wait_for_records(
        worker_env, "actions", lambda rs: {a["customer_id"] for a in rs} == set(LEADS),
        timeout=120)
    calls = {a["action_id"] for a in actions if a["action"] == "call"}
    assert len(calls) == 5
    assert third is not None
    assert worker_env.stop(second) == 0 and worker_env.stop(third) == 0
