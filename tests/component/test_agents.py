"""Component tests: the Faust app's agents driven through Faust's test context, with the
processor's output captured in a `MemorySink` (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from service.app import Touchflow, create_app
from service.settings import load_settings
from service.sink import MemorySink
from service.store import PartitionStore
from tests.integration.conftest import event

RULES = Path(__file__).resolve().parents[1] / "data" / "rulebook.yaml"


async def _no_recovery(stores: Mapping[int, PartitionStore]) -> None:
    return None


def _app(partitions: int = 1) -> tuple[Touchflow, MemorySink]:
    settings = load_settings(rules=RULES, store="memory://", partitions=partitions,
                             broker="kafka://127.0.0.1:1", topic_prefix="comp")
    sink = MemorySink()
    return create_app(settings, sink=sink, recover=_no_recovery), sink


async def _feed(touchflow: Touchflow, agent: str, values: list[bytes],
                key: bytes = b"customer_id:c1") -> None:
    async with touchflow.app.agents[agent].test_context() as running:
        for value in values:
            await running.put(value, key=key)
        await asyncio.sleep(0.3)  # let the last take_events batch close


def _values(sink: MemorySink, topic: str) -> list[Any]:
    return [orjson.loads(r.value) for r in sink.on(topic) if r.value is not None]


async def test_ingest_agent_turns_events_into_actions_audit_and_changelog() -> None:
    """Twelve pings through the ingest agent: one `milestone_10` action on the actions topic and
    on its channel topic, an audit record for it, and the profile written to the changelog."""
    touchflow, sink = _app()
    await _feed(touchflow, "touchflow.ingest",
                [event(f"e{i}", "c1", "ping", at=f"2026-03-02T09:{i:02d}:00Z")
                 for i in range(12)])
    topics = touchflow.topics
    actions = _values(sink, topics.actions)
    assert [(a["action"], a["customer_id"], a["trigger_event_id"]) for a in actions] == [
        ("milestone_10", "c1", "e9")]
    assert _values(sink, topics.channel_actions("email")) == actions
    sent = [d for d in _values(sink, topics.decisions) if d["outcome"] == "sent"]
    assert [d["action_id"] for d in sent] == [actions[0]["action_id"]]
    changelog = sink.on(topics.changelog)
    assert changelog and all(r.key == b"customer_id:c1" for r in changelog)
    assert all(r.headers and r.headers[0][0] == "src" for r in changelog)


async def test_ingest_agent_dead_letters_bad_messages_and_keeps_going() -> None:
    """A truncated JSON message between good events goes to the dead-letter topic with its
    reason and length (not JSON: its bytes are not kept); the good events still reach the
    milestone."""
    touchflow, sink = _app()
    good = [event(f"e{i}", "c1", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(10)]
    bad = b'{"event_id": "oops", '
    await _feed(touchflow, "touchflow.ingest", [*good[:5], bad, *good[5:]])
    dead = _values(sink, touchflow.topics.deadletter)
    assert len(dead) == 1
    assert dead[0]["reason"] == "invalid_json" and dead[0]["value"] is None
    assert dead[0]["value_bytes"] == len(bad)
    assert [a["action"] for a in _values(sink, touchflow.topics.actions)] == ["milestone_10"]


async def test_redelivered_events_change_nothing() -> None:
    """Every event delivered twice (at-least-once transport) counts once: the report after
    five pings, each sent twice, carries a score of 6 (five pings plus the report)."""
    touchflow, sink = _app()
    pings = [event(f"e{i}", "c1", "ping", at=f"2026-03-02T09:{i:02d}:00Z") for i in range(5)]
    report = event("r", "c1", "report", at="2026-03-02T10:00:00Z")
    await _feed(touchflow, "touchflow.ingest", [p for p in pings for _ in (0, 1)] + [report])
    actions = _values(sink, touchflow.topics.actions)
    assert [(a["action"], float(a["payload"]["pings"])) for a in actions] == [
        ("score_report", 6.0)]


async def test_events_for_another_partition_are_forwarded_then_decided() -> None:
    """With several partitions, an event read from a partition that does not own its profile
    is forwarded to the repartition topic, on the owner partition, with its original bytes;
    the decide agent then applies it."""
    touchflow, sink = _app(partitions=8)
    value = event("e1", "c-forward", "call", channel="call_center", reason="complaint")
    key = b"customer_id:c-forward"
    owner = touchflow.processor.partition_for(key)
    assert owner != 0, "pick a customer whose profile is not on partition 0"
    await _feed(touchflow, "touchflow.ingest", [value], key=key)
    forwarded = sink.on(touchflow.topics.repartition)
    assert [(r.key, r.value, r.partition) for r in forwarded] == [(key, value, owner)]
    assert _values(sink, touchflow.topics.actions) == []

    await _feed(touchflow, "touchflow.decide", [value], key=key)
    actions = _values(sink, touchflow.topics.actions)
    assert [(a["action"], a["customer_id"]) for a in actions] == [("apology_call", "c-forward")]


async def test_faust_retry_makes_the_worker_ready_again_once_the_batch_succeeds() -> None:
    """A batch that fails (the broker refused its output) marks the agent crashed, so /readyz
    says 503; the retry that succeeds clears it (it stayed 503 for good before)."""
    from service.app import _process_with_retry
    from service.health import Readiness
    from service.metrics import Metrics

    class Flaky:
        calls = 0

        async def process(self, batch: Any) -> None:
            self.calls += 1
            if self.calls == 1:
                raise OSError("broker refused the batch")

    readiness = Readiness()
    readiness.mark_started()
    readiness.mark_assigned({0})
    flaky = Flaky()
    await _process_with_retry(flaky, [], "ingest", Metrics(), readiness)  # type: ignore[arg-type]
    assert flaky.calls == 2
    assert readiness.crashed == {} and readiness.is_ready()
