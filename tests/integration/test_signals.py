"""Signal aggregation on the real broker: complaint calls from several customers (on different
partitions) are counted together by the worker that owns the product's feed partition; the
`product_issue` message reaches the operations topic once, the pause reaches every worker's
context, and a restarted worker rebuilds its counts without publishing the message again."""

from __future__ import annotations

import asyncio

import pytest

from tests.events import log_line
from tests.integration.conftest import ROOT, WorkerEnv, consume, produce, wait_for_records

EXAMPLE = ROOT / "examples" / "product_issue"


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_complaint_surge_pauses_the_promotion_across_workers(
        worker_env: WorkerEnv, runtime: str) -> None:
    """Replays examples/product_issue through two live workers: one `product_issue` message
    for phone-x, the promotion for phone-x suppressed while it is active and sent for
    phone-y; after a restart of both workers, another complaint in the same episode publishes
    nothing new for phone-x, while its rebuilt counts still complete a phone-z burst that
    straddles the restart. Under either runtime (the signal aggregator runs next to both)."""
    worker_env.partitions = 4
    worker_env.rules = EXAMPLE / "rulebook.yaml"
    bootstrap = worker_env.broker.bootstrap
    context = [line for line in (EXAMPLE / "context.jsonl").read_bytes().splitlines() if line]
    await produce(bootstrap, worker_env.topic("context"), context, keys=[None] * len(context))
    first, second = (worker_env.start_worker("a", TOUCHFLOW_RUNTIME=runtime),
                     worker_env.start_worker("b", TOUCHFLOW_RUNTIME=runtime))
    worker_env.wait_ready(first, timeout=90)
    worker_env.wait_ready(second, timeout=90)
    lines = (EXAMPLE / "events.jsonl").read_bytes().splitlines()
    await produce(bootstrap, worker_env.topic("events"), lines[:9])  # views and the calls
    operations = await wait_for_records(worker_env, "operations", lambda rs: len(rs) >= 1)
    await wait_for_records(worker_env, "context", lambda rs: any(
        isinstance(r, dict) and str(r.get("key", "")).startswith("signal:") for r in rs))
    await asyncio.sleep(3)  # the workers' context readers poll every 0.5 s
    await produce(bootstrap, worker_env.topic("events"), lines[9:11])  # phone-x, phone-y views
    decisions = await wait_for_records(worker_env, "decisions", lambda rs: len(rs) >= 4)
    outcome = {r["trigger_event_id"]: (r["outcome"], r["suppressed_by"]) for r in decisions}
    assert outcome == {"p-1": ("sent", None), "p-2": ("suppressed", "context"),
                       "p-10": ("suppressed", "context"), "p-11": ("sent", None)}
    assert [(m["signal"], m["key"], m["count"]) for m in operations] == [
        ("product_issue", "phone-x", 4)]

    def complaints(prefix: str, sku: str, minutes: range) -> list[bytes]:
        return [log_line(f"{prefix}-{m}", f"{prefix}-caller-{m}", "call_center_call",
                      channel="call_center", at=f"2026-05-04T12:{m:02d}:00+00:00",
                      reason="complaint", sku=sku) for m in minutes]

    # two phone-z complaints before the restart, two after: it fires only if the restarted
    # aggregator rebuilt its counts from the feed
    await produce(bootstrap, worker_env.topic("events"), complaints("z", "phone-z", range(0, 2)))
    await asyncio.sleep(4)
    for process in (first, second):
        assert worker_env.stop(process) == 0
    again = worker_env.start_worker("c", TOUCHFLOW_RUNTIME=runtime)
    worker_env.wait_ready(again, timeout=90)
    await produce(bootstrap, worker_env.topic("events"), lines[11:12])  # complaint at 12:00
    await produce(bootstrap, worker_env.topic("events"), complaints("z", "phone-z", range(5, 7)))
    await produce(bootstrap, worker_env.topic("events"), complaints("y", "phone-y", range(10, 14)))
    await wait_for_records(worker_env, "operations", lambda rs: len(rs) >= 3)
    await asyncio.sleep(2)
    operations = await consume(bootstrap, worker_env.topic("operations"), count=10**9,
                               timeout=2)
    assert sorted((m["signal"], m["key"]) for m in operations) == [
        ("product_issue", "phone-x"), ("product_issue", "phone-y"),
        ("product_issue", "phone-z")]
