"""Replay == the worker's processor, without a broker (service/stream/processor.py vs replay).

The integration test proves the same over a live worker; this one runs in a second and also
covers the restart path: profiles read back from the store (RocksDB bytes), not kept objects.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.event import EventError, decode_event
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.replay.reader import load_context
from service.replay.runner import replay_file
from service.stream.processor import Message, Processor
from service.stream.sink import MemorySink
from service.stream.topics import TopicNames
from tests.unit.replay.journeys import SCENARIO_NAMES, scenarios


async def _no_recovery(stores: Any) -> None:
    return None


async def _through_processor(rules: Path, log: Path, context: dict[str, Any], store: str,
                             data_dir: Path, restart_every: int | None
                             ) -> tuple[list[Any], int]:
    settings = load_settings(partitions=4, store=store, data_dir=data_dir,
                             channel_topics=False, broker="kafka://127.0.0.1:1")
    topics = TopicNames.from_settings(settings)
    sink = MemorySink()
    processor = Processor(settings, topics, load_rulebook(rules), sink, context=context,
                          recover=_no_recovery)
    offsets = [0] * settings.partitions
    messages = []
    for raw in log.read_bytes().splitlines():
        try:
            key: bytes | None = decode_event(raw).key().encode()
        except EventError:
            key = None
        partition = processor.partition_for(key) if key else 0
        messages.append(Message(topics.events, partition, offsets[partition], key, raw))
        offsets[partition] += 1
    looped = 0
    repartition_offsets = [0] * settings.partitions

    async def feedback() -> None:
        """Deliver what the processor sent to the repartition topic back to it, as the broker
        would (identity links, merges and forwards), until nothing more is sent."""
        nonlocal looped
        while len(sink.on(topics.repartition)) > looped:
            pending = sink.on(topics.repartition)[looped:]
            looped += len(pending)
            batch = []
            for record in pending:
                partition = record.partition or 0
                batch.append(Message(topics.repartition, partition,
                                     repartition_offsets[partition], record.key, record.value,
                                     headers=tuple(record.headers or ())))
                repartition_offsets[partition] += 1
            await processor.process(batch)

    # Identity links travel through the repartition topic (one round trip); events hours apart
    # are never in one batch, so the identity scenario goes one event per batch.
    size = 1 if "identified" in log.read_text() else 250
    for number, start in enumerate(range(0, len(messages), size)):
        await processor.process(messages[start:start + size])
        await feedback()
        if restart_every and number % restart_every == restart_every - 1:
            await processor.close()  # next batch reopens the stores: profiles from bytes
    await processor.close()
    actions = [orjson.loads(r.value) for r in sink.on(topics.actions) if r.value]
    # Refused identity links are dead-lettered by the worker (the control record) and audited
    # by both; replay has no control records to dead-letter.
    dead = [orjson.loads(r.value) for r in sink.on(topics.deadletter) if r.value]
    return actions, sum(1 for d in dead if d["reason"] != "identity_conflict")


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
@pytest.mark.parametrize(("store", "restart_every"), [("memory://", None), ("rocksdb://", 3)])
async def test_replay_output_equals_the_processor_output(
    tmp_path: Path, scenario: str, store: str, restart_every: int | None
) -> None:
    """Every example (and a generated 3,000-event journey log) through the worker's Processor
    (4 partitions, batches of 250 -- one event per batch where identities
    are linked --, with or without store round-trips) and through replay
    gives the same actions, field for field, in the same per-customer order; bad lines are
    dead-lettered there and skipped here."""
    found = scenarios(tmp_path)
    if scenario not in found:
        pytest.skip(f"examples/{scenario} has no events.jsonl")
    rules, log, context_path = found[scenario]
    context = load_context(context_path) if context_path else {}
    out = io.BytesIO()
    result = replay_file(log, load_rulebook(rules), context=context, output=out, partitions=4)
    replayed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    produced, dead = await _through_processor(rules, log, context, store, tmp_path / "data",
                                              restart_every)
    assert replayed, "no action: this scenario would prove nothing"
    assert dead == result.bad_records
    key = lambda a: (a["customer_id"], a["decided_at"], a["action_id"])  # noqa: E731
    assert sorted(produced, key=key) == sorted(replayed, key=key)
    for customer in {a["customer_id"] for a in replayed}:
        assert [a["action_id"] for a in produced if a["customer_id"] == customer] == [
            a["action_id"] for a in replayed if a["customer_id"] == customer]
