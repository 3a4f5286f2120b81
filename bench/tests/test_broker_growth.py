"""bench/broker_growth.py counts what it put in the partition and fetches its tail (no
timing asserted: the figures are the output, not the test)."""

from __future__ import annotations

from bench.broker_growth import measure_growth
from service.tools.embedded import EmbeddedBroker


async def test_each_step_adds_its_batches_and_fetches_the_last_records() -> None:
    """Three steps of 20 batches of 2 records: rows at 20, 40 and 60 batches holding 40, 80
    and 120 records, each with a produce and a tail-fetch duration."""
    with EmbeddedBroker() as broker:
        rows = await measure_growth(broker.bootstrap, steps=3, step=20, per_batch=2)
    assert [(row["batches"], row["records"]) for row in rows] == [(20, 40), (40, 80), (60, 120)]
    assert all(row["produce_step_ms"] > 0 and row["tail_fetch_ms"] > 0 for row in rows)
