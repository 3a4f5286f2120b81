"""The worker end to end on the embedded broker: events in, actions out, bad input dead-lettered,
state recovered exactly after a restart."""

from __future__ import annotations

import signal

import orjson
import pytest

from tests.events import log_line
from tests.integration.conftest import WorkerEnv, consume, produce


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_events_in_actions_and_audit_out(worker_env: WorkerEnv, runtime: str) -> None:
    """Twelve pings give one `milestone_10` (once only), nine give none; a complaint call gives
    `apology_call`; every action carries its reasons and an audit record exists for each; the
    same with the Faust runtime (TOUCHFLOW_RUNTIME=faust) as with the default one."""
    worker = worker_env.start_worker(TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker)
    bootstrap = worker_env.broker.bootstrap
    values = [log_line(f"a{i}", "c-a", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(12)]
    values += [log_line(f"b{i}", "c-b", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(9)]
    values.append(log_line("c0", "c-c", "call", minute=30, channel="call_center",
                           reason="complaint"))
    await produce(bootstrap, worker_env.topic("events"), values)

    actions = await consume(bootstrap, worker_env.topic("actions"), count=2, settle=3.0)
    by_customer = {a["customer_id"]: a for a in actions}
    assert sorted(a["action"] for a in actions) == ["apology_call", "milestone_10"], \
        worker_env.logs()[-4000:]
    milestone = by_customer["c-a"]
    assert milestone["channel"] == "email"
    assert milestone["payload"]["pings"] in (10, "10", 10.0)
    assert milestone["trigger_event_id"] == "a9"
    assert milestone["reasons"], "an action must explain itself"
    assert by_customer["c-c"]["action"] == "apology_call"
    decisions = await consume(bootstrap, worker_env.topic("decisions"), count=2, settle=1.0)
    assert {d["action_id"] for d in decisions if d.get("outcome") == "sent"} >= {
        a["action_id"] for a in actions}
    per_channel = await consume(bootstrap, worker_env.topic("actions.email"), count=1)
    assert [a["action_id"] for a in per_channel] == [milestone["action_id"]]
    assert worker_env.stop(worker) == 0


async def test_malformed_events_are_dead_lettered_and_good_ones_still_processed(
        worker_env: WorkerEnv) -> None:
    """Bad JSON, a missing identity and an unknown channel each land on the dead-letter topic
    with a reason, their length and, for the JSON objects, the event with its identifiers
    replaced by salted digests (no byte of `c-m` kept); the good events still count."""
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker)
    bootstrap = worker_env.broker.bootstrap
    bad_json = b'{"event_id": "x1", "type": '
    no_identity = orjson.dumps({"event_id": "x2", "occurred_at": "2026-03-02T09:00:00Z",
                                "channel": "web", "type": "ping", "identity": {}})
    bad_channel = orjson.dumps({"event_id": "x3", "occurred_at": "2026-03-02T09:00:00Z",
                                "channel": "pigeon", "type": "ping",
                                "identity": {"customer_id": "c-m"}})
    good = [log_line(f"m{i}", "c-m", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(10)]
    values = [*good[:4], bad_json, *good[4:7], no_identity, bad_channel, *good[7:]]
    await produce(bootstrap, worker_env.topic("events"), values)

    dead = await consume(bootstrap, worker_env.topic("deadletter"), count=3, settle=2.0)
    assert len(dead) == 3
    assert sorted(d["value_bytes"] for d in dead) == sorted(
        map(len, (bad_json, no_identity, bad_channel)))
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason["invalid_json"]["value"] is None
    kept = by_reason["unknown_channel"]["value"]
    assert kept["channel"] == "pigeon" and kept["identity"]["customer_id"].startswith(
        "[redacted:id:")
    assert not any("c-m" in orjson.dumps(d).decode() for d in dead)
    assert all(d["reason"] and d["topic"] == worker_env.topic("events") for d in dead)
    assert all(isinstance(d["offset"], int) for d in dead)
    actions = await consume(bootstrap, worker_env.topic("actions"), count=1, settle=1.0)
    assert [(a["customer_id"], a["action"]) for a in actions] == [("c-m", "milestone_10")]
    assert worker.poll() is None, "the worker must never stop on bad input"
    assert worker_env.stop(worker) == 0


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_restart_recovers_state_from_changelog_exactly(worker_env: WorkerEnv,
                                                             runtime: str) -> None:
    """After a clean stop and a restart on an empty local store, every profile comes back from
    the changelog with its exact score, the newest changelog record included (the one a
    recovery bounded by Tansu's ListOffsets(latest) would cut off, as Faust's table recovery
    did), and redelivered events are not counted twice; under either runtime (the Faust one
    recovers with Touchflow's recovery, not Faust's)."""
    bootstrap = worker_env.broker.bootstrap
    worker = worker_env.start_worker(TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker)
    customers = [f"c-{n}" for n in range(6)]
    first = [log_line(f"{c}-{i}", c, "ping", at=f"2026-03-02T09:{i:02d}:00Z")
             for i in range(7) for c in customers]
    await produce(bootstrap, worker_env.topic("events"), first)
    # The report is the last event before the stop and it adds a point: losing its changelog
    # record on recovery would show up as a score one short.
    await produce(bootstrap, worker_env.topic("events"),
                  [log_line(f"{c}-r1", c, "report", at="2026-03-02T10:00:00Z") for c in customers])
    reports = await consume(bootstrap, worker_env.topic("actions"), count=6, timeout=60)
    assert sorted(float(r["payload"]["pings"]) for r in reports) == [8.0] * 6
    assert worker_env.stop(worker, signal.SIGTERM) == 0

    # Memory store: the restarted worker has nothing local and must read the whole changelog.
    worker = worker_env.start_worker(TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(worker)
    again = first[-len(customers) * 2:]  # redelivered: already applied, must change nothing
    more = [log_line(f"{c}-{i}", c, "ping", at=f"2026-03-02T11:{i:02d}:00Z")
            for i in range(7, 9) for c in customers]
    await produce(bootstrap, worker_env.topic("events"), again + more)
    await produce(bootstrap, worker_env.topic("events"),
                  [log_line(f"{c}-r2", c, "report", at="2026-03-02T12:00:00Z") for c in customers])
    actions = await consume(bootstrap, worker_env.topic("actions"), count=18, timeout=60,
                            settle=2.0)
    second = [a for a in actions if a["trigger_event_id"].endswith("-r2")]
    assert sorted(float(r["payload"]["pings"]) for r in second) == [11.0] * 6
    milestones = [a for a in actions if a["action"] == "milestone_10"]
    assert sorted(a["trigger_event_id"] for a in milestones) == sorted(f"{c}-8" for c in customers)
    assert len(actions) == 18
    assert worker_env.stop(worker, signal.SIGTERM) == 0
