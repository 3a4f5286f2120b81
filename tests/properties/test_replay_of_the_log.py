"""The worker == `touchflow replay` of the event log, when each event's consequences settle
before the next event arrives: random histories (identity chains, erasures, consent, late and
redelivered events, learned propensities), each event produced in place or on a foreign
partition, then every record it caused on the repartition topic (forwards, link, merge and
erase records) processed in the order sent, before the next event. Replay delivers the same
records in process, first in first out, so the actions and audit records must come out in the
same order with the same bytes, and the stores must hold replay's profiles. (The state machine
in test_live_equals_replay.py covers arbitrary interleavings, with replay of the applied
history as the oracle.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import dumps
from schemas.event import decode_event
from service.domain.partitioning import partition_for_key
from service.domain.rules import load_rulebook
from service.ops.settings import load_settings
from service.replay.replayer import Replayer
from service.stream.processor import Processor
from service.stream.topics import TopicNames
from tests.events import wire
from tests.properties.broker_model import BrokerModel
from tests.properties.histories import bodies, identities, links

RULES = Path(__file__).resolve().parents[1] / "data" / "machine_rulebook.yaml"
PARTITIONS = 3
START = datetime(2026, 3, 2, 9, tzinfo=UTC)

steps = st.one_of(
    st.tuples(identities, bodies),
    st.tuples(links, st.just(("identified", {}))),
    st.tuples(identities, st.just(("erasure_requested", {}))),
)


def _log(items: list[tuple[tuple[dict[str, str], tuple[str, dict[str, Any]]], int, int]]
         ) -> list[bytes]:
    lines, clock = [], 0
    for number, ((identity, (etype, properties)), step_s, late_s) in enumerate(items):
        clock += step_s * 1000
        at = START + timedelta(milliseconds=clock - late_s * 1000)
        lines.append(wire(etype, event_id=f"e{number % 40}", at=at.isoformat(),
                          identity=identity, props=properties))
    return lines


async def _live(lines: list[bytes], foreign: list[int | None]) -> tuple[Any, ...]:
    settings_ = load_settings(rules=RULES, store="memory://", partitions=PARTITIONS,
                              channel_topics=False, broker="kafka://127.0.0.1:1",
                              topic_prefix="sy")
    topics = TopicNames.from_settings(settings_)
    broker = BrokerModel()
    processor = Processor(settings_, topics, load_rulebook(RULES), broker,
                          recover=broker.recovery(topics.changelog))
    await processor.assign(set(range(PARTITIONS)))
    done = 0  # repartition records processed, in send order across partitions
    for raw, elsewhere in zip(lines, foreign, strict=True):
        key = decode_event(raw).key().encode()
        partition = partition_for_key(key, PARTITIONS) if elsewhere is None else elsewhere
        await processor.process([broker.append(topics.events, partition, None, raw)])
        while True:
            sent = broker.records_in_order(topics.repartition)
            if done >= len(sent):
                break
            await processor.process([sent[done]])
            done += 1
    actions = [m.value for m in broker.records_in_order(topics.actions)]
    audit = [m.value for m in broker.records_in_order(topics.decisions)]
    stores = {}
    for partition in range(PARTITIONS):
        store = processor.store(partition)
        assert store is not None
        stores.update({key: store.get(key) for key in store.keys()})  # noqa: SIM118
    return actions, audit, stores


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(steps, st.integers(0, 120), st.sampled_from([0, 0, 0, 100, 9000])),
                min_size=1, max_size=40),
       st.data())
def test_the_worker_settled_event_by_event_equals_replay_of_the_log(
        items: list[Any], data: st.DataObject) -> None:
    """Actions and audit records in the same order, byte for byte, and the same profiles:
    forwarding, identity control records and erasure of chained aliases are one step; once
    settled, no alias points to a profile that is gone."""
    lines = _log(items)
    foreign = data.draw(st.lists(st.none() | st.integers(0, PARTITIONS - 1),
                                 min_size=len(lines), max_size=len(lines)))
    replayer = Replayer(load_rulebook(RULES), partitions=PARTITIONS)
    actions: list[bytes] = []
    audit: list[bytes] = []
    for raw in lines:
        outcome = replayer.apply(decode_event(raw))
        if outcome.duplicate:  # a late one is not applied either, but audited
            audit.extend(dumps(r) for r in outcome.decisions if outcome.late)
            continue
        actions.extend(dumps(a) for a in outcome.actions)
        audit.extend(dumps(r) for r in outcome.decisions)
    live_actions, live_audit, stores = asyncio.run(_live(lines, foreign))
    assert live_actions == actions
    assert live_audit == audit
    assert stores == {key: p.to_bytes() for key, p in replayer.profiles.items()}
    # Erasure leaves no alias behind: every redirect leads to a profile that exists (an alias
    # of an alias of an erased customer, anonymous -> loyalty -> customer, is erased too).
    for profile in replayer.profiles.values():
        if profile.redirect is not None:
            assert profile.redirect.encode() in replayer.profiles, "a dangling alias"


def test_erasing_the_end_of_a_chain_erases_every_alias_live_and_in_replay() -> None:
    """anonymous -> loyalty card -> customer, then the customer is erased: neither the worker's
    stores nor replay keep a profile or a redirect under any of the three keys (the worker used
    to keep the anonymous redirect, which pointed at the loyalty card, not the customer)."""
    chain = [(({"loyalty_id": "l1", "anonymous_id": "a1"}, ("identified", {})), 10, 0),
             (({"anonymous_id": "a1"}, ("ping", {})), 10, 0),
             (({"customer_id": "c1", "loyalty_id": "l1"}, ("identified", {})), 10, 0),
             (({"customer_id": "c1"}, ("erasure_requested", {})), 10, 0)]
    lines = _log(chain)  # type: ignore[arg-type]
    _, _, stores = asyncio.run(_live(lines, [None] * len(lines)))
    replayer = Replayer(load_rulebook(RULES), partitions=PARTITIONS)
    for raw in lines:
        replayer.apply(decode_event(raw))
    assert stores == {} and replayer.profiles == {}
