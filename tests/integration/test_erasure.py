"""Erasure on the real broker, with a worker: the three ways erased data used to come back (a
redelivered event from before the erasure, a merge arriving after the erasure of the profile it
merges into, the alias at the start of a chain) leave nothing of the customer in the changelog
but deletions and digest-keyed tombstones, and every erasure is announced on
`<prefix>.erasures`."""

from __future__ import annotations

import asyncio
from typing import Any

from service.domain.erasure import key_digest
from service.stream.store import tombstone_key
from tests.events import keyed
from tests.integration.conftest import WorkerEnv, consume, produce, report_scores


async def _changelog(env: WorkerEnv) -> dict[bytes, bytes | None]:
    """The changelog as compaction would leave it: the last value of every key."""
    from aiokafka import AIOKafkaConsumer

    topic = f"{env.app_id}-{env.prefix}.profiles-changelog"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=env.broker.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None)
    await asyncio.wait_for(consumer.start(), 20)
    last: dict[bytes, bytes | None] = {}
    try:
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    last[record.key] = record.value
    finally:
        await consumer.stop()
    return last


async def _wait_decisions(env: WorkerEnv, predicate: Any, timeout: float = 60) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    records: list[Any] = []
    while asyncio.get_running_loop().time() < deadline:
        records = await consume(env.broker.bootstrap, env.topic("decisions"), count=10**9,
                                timeout=1.5)
        if predicate(records):
            return records
    raise AssertionError(f"decisions never matched: {records}\n{env.logs()[-3000:]}")


def _assert_erased(last: dict[bytes, bytes | None], keys: list[str], erased_ms: int) -> None:
    """No value held under an erased key; a tombstone per key; no live value names any."""
    for key in keys:
        assert last.get(key.encode()) is None, f"{key} still holds a profile"
        assert last.get(tombstone_key(key_digest(key))) == str(erased_ms).encode()
    live = b"".join(value for value in last.values() if value is not None)
    for key in keys:
        assert key.split(":", 1)[1].encode() not in live


async def test_erasure_paths_leave_nothing_to_bring_back(worker_env: WorkerEnv) -> None:
    """(1) pings, erasure, then a producer's retry of a ping and a late ping dated before it:
    both ignored (audited `ignored`, by digest), a later report counts one point only;
    (2) a login and the erasure sent together: the erasure reaches the customer before the link
    record reaches the cookie, the merge coming back is dropped and the cookie erased;
    (3) cookie -> loyalty card -> customer, then erasure of the customer: all three gone.
    The changelog, read as compaction would leave it, holds deletions and tombstones only for
    the erased keys, and each erasure is announced once on `<prefix>.erasures`."""
    worker_env.partitions = 4
    worker = worker_env.start_worker()
    worker_env.wait_ready(worker, timeout=90)
    bootstrap, events = worker_env.broker.bootstrap, worker_env.topic("events")

    # (1) a redelivered and a late event, both dated before the erasure
    await produce(bootstrap, events, [
        keyed(f"r-{n}", "ping", at=f"2026-03-02T09:0{n}:00Z", customer_id="c-redo")
        for n in range(3)] + [
        keyed("r-bye", "erasure_requested", at="2026-03-02T10:00:00Z", customer_id="c-redo")])
    await produce(bootstrap, events, [
        keyed("r-1", "ping", at="2026-03-02T09:01:00Z", customer_id="c-redo"),
        keyed("r-late", "ping", at="2026-03-02T09:30:00Z", customer_id="c-redo")])
    # (2) the erasure right behind the login, on the customer's partition
    await produce(bootstrap, events, [
        keyed("m-a", "ping", at="2026-03-02T09:00:00Z", anonymous_id="a-merge"),
        keyed("m-login", "identified", at="2026-03-02T09:01:00Z", customer_id="c-merge",
              anonymous_id="a-merge"),
        keyed("m-bye", "erasure_requested", at="2026-03-02T09:02:00Z", customer_id="c-merge")])
    # (3) a chain: cookie -> loyalty card -> customer
    await produce(bootstrap, events, [
        keyed("k-a", "ping", at="2026-03-02T09:00:00Z", anonymous_id="a-chain"),
        keyed("k-l", "identified", at="2026-03-02T09:01:00Z", loyalty_id="L-chain",
              anonymous_id="a-chain"),
        keyed("k-c", "identified", at="2026-03-02T09:02:00Z", customer_id="c-chain",
              loyalty_id="L-chain")])
    await _wait_decisions(worker_env, lambda rs: sum(
        1 for r in rs if r["kind"] == "merge" and r["customer_id"] == "c-chain") >= 1)
    await produce(bootstrap, events, [
        keyed("k-bye", "erasure_requested", at="2026-03-02T09:03:00Z", customer_id="c-chain")])

    decisions = await _wait_decisions(worker_env, lambda rs: sum(
        1 for r in rs if r["outcome"] == "ignored") >= 3 and sum(
        1 for r in rs if r["outcome"] == "erased") >= 3)
    ignored = [r for r in decisions if r["outcome"] == "ignored"]
    assert sorted(r["trigger_event_id"] for r in ignored) == ["m-login", "r-1", "r-late"]
    assert {r["customer_id"] for r in ignored} == {
        "erased:" + key_digest("customer_id:c-redo"),
        "erased:" + key_digest("customer_id:c-merge")}
    assert any("this merge" in r["reasons"][0] for r in ignored)
    assert await report_scores(worker_env, ["c-redo"], "after") == {"c-redo": 1.0}

    notices = await consume(bootstrap, worker_env.topic("erasures"), count=3, timeout=30,
                            settle=1.0)
    named = sorted(sorted(i["field"] + ":" + i["value"] for i in n["identifiers"])
                   for n in notices)
    assert named == [["anonymous_id:a-chain", "customer_id:c-chain", "loyalty_id:L-chain"],
                     ["customer_id:c-merge"], ["customer_id:c-redo"]]

    last = await _changelog(worker_env)
    _assert_erased(last, ["anonymous_id:a-merge", "customer_id:c-merge"],
                   1_772_442_120_000)
    _assert_erased(last, ["anonymous_id:a-chain", "loyalty_id:L-chain", "customer_id:c-chain"],
                   1_772_442_180_000)
    assert last.get(tombstone_key(key_digest("customer_id:c-redo"))) == b"1772445600000"
    assert worker_env.stop(worker) == 0
