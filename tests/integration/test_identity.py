"""Identity on the real broker with two workers: the cookie's partition (1) and the customer's
(3) belong to different workers, so the link, the merge and the forwarded events cross
workers through the repartition topic."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import murmur2

from tests.integration.conftest import ROOT, WorkerEnv, consume, produce, wait_for_records

EXAMPLE = ROOT / "examples" / "known_after_login"


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_anonymous_history_merges_across_workers_and_conflicts_are_refused(
        worker_env: WorkerEnv, runtime: str) -> None:
    """Anonymous events on one worker, login and later events on the other: the history is
    merged once, the callback fires on the merged score (29), a redelivered anonymous event
    changes nothing, later cookie events reach the customer's profile, and a second customer
    claiming the cookie is refused and dead-lettered without leaking the identifier; under
    either runtime (the control records cross workers on the repartition topic)."""
    def partition(key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % 4

    assert partition(b"anonymous_id:a-7f3c") == 1 and partition(b"customer_id:acme-kim") == 3
    worker_env.partitions = 4
    worker_env.rules = EXAMPLE / "rulebook.yaml"
    first = worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime)
    second = worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(first, timeout=90)
    worker_env.wait_ready(second, timeout=90)
    lines = (EXAMPLE / "events.jsonl").read_bytes().splitlines()
    bootstrap = worker_env.broker.bootstrap
    await produce(bootstrap, worker_env.topic("events"), lines[:4])  # anonymous x3, login
    await wait_for_records(worker_env, "decisions",
                           lambda rs: any(r["kind"] == "merge" for r in rs))
    for line in lines[4:]:  # events hours apart arrive one by one
        await produce(bootstrap, worker_env.topic("events"), [line])
        await asyncio.sleep(0.3)
    actions = await wait_for_records(worker_env, "actions", lambda rs: len(rs) >= 1)
    assert [(a["customer_id"], a["action"], a["payload"]["lead_score"]) for a in actions] == [
        ("acme-kim", "sales_callback", 29.0)]
    decisions = await wait_for_records(
        worker_env, "decisions",
        lambda rs: any(r["kind"] == "identity_refused" for r in rs)
        and sum(1 for r in rs if r.get("suppressed_by") == "cooldown") >= 1)
    kinds = sorted((r["kind"], r["customer_id"]) for r in decisions if r["kind"] != "action")
    assert kinds == [("identity_refused", "acme-zed"), ("merge", "acme-kim")]
    cooldown = [r for r in decisions if r.get("suppressed_by") == "cooldown"]
    assert [r["trigger_event_id"] for r in cooldown] == ["k-7"]  # the cookie event, on Kim
    dead = await consume(bootstrap, worker_env.topic("deadletter"), count=1, timeout=30)
    assert [d["reason"] for d in dead] == ["identity_conflict"]
    assert "a-7f3c" not in dead[0]["error"]
    assert worker_env.stop(first) == 0 and worker_env.stop(second) == 0
