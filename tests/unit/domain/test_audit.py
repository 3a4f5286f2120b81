"""Audit records (service/domain/audit.py): whichever module builds one (arbitration, erasure,
late events, responses, attribution, identity links), it is a valid `DecisionRecord` in the
vocabulary's words, with the fields in one order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from textwrap import dedent
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import Event, parse_event
from schemas.models import DecisionRecord
from schemas.vocabulary import RECORD_KINDS, RECORD_OUTCOMES, SUPPRESSION_REASONS
from service.domain import parse_rulebook
from service.replay.replayer import Replayer
from tests.properties.histories import bodies, identities, links

RULEBOOK = parse_rulebook(dedent("""\
    version: "audit-1"
    idempotence: {remember_events: 8, max_lateness: 2h}
    scores:
      pings:
        points: [{when: {type: ping}, add: 1}]
    actions:
      milestone:
        channels: [email, sms]
        when: [{score: pings, gte: 2}]
        value: 10
        once: true
      banner:
        channel: web
        basis: legitimate_interest
        purpose: personalisation
        when: [{event: {type: view}}]
        suppress_unless: [{context: "stock:{event.properties.sku}", gt: 0}]
        cooldown: 3m
      offer_a: {channel: mobile, basis: service, group: offers, priority: 2,
                when: [{event: {type: app_opened}}]}
      offer_b: {channel: mobile, basis: service, group: offers,
                when: [{event: {type: app_opened}}]}
    contact_policy:
      cap: {max: 4, within: 1h}
      consent_by_channel: {email: opt_in}
      quiet_hours:
        sms: {start: "21:00", end: "08:00"}
        mobile: {start: "22:00", end: "07:00", mode: defer}
    arbitration: {max_per_event: 2}
    experiments:
      control: {salt: audit, arms: {treated: 1, held: 1}, holdout: [held], actions: [banner]}
    capacity:
      offers: {group: offers, limit: 3, per: 1h}
    attribution:
      conversions: {type: purchase}
      window: 1h
    """), "audit.yaml")
CONTEXT = {"stock:sku-1": 3, "stock:sku-2": 0}
START = datetime(2026, 3, 2, 9, tzinfo=UTC)
FIELDS = list(DecisionRecord.model_fields)
EXTRA = {"experiment"}  # written by arbitration, not (yet) a field of the model


def _event(number: int, identity: dict[str, str], etype: str, properties: dict[str, Any],
           at: datetime, channel: str = "web") -> Event:
    return parse_event({"event_id": f"e{number}", "occurred_at": at.isoformat(),
                        "channel": channel, "type": etype, "identity": identity,
                        "properties": properties})


def _check(record: dict[str, Any]) -> None:
    """A record as the wire contract and the vocabulary want it."""
    DecisionRecord.model_validate(record)
    assert record["suppressed_by"] is None or record["suppressed_by"] in SUPPRESSION_REASONS
    assert set(record) <= set(FIELDS) | EXTRA, set(record) - set(FIELDS)
    common = [name for name in record if name in FIELDS[:12]]
    assert common == FIELDS[:12], "the common fields come first, in the model's order"
    assert record["decision_id"] and record["reasons"]


def _replay(events: list[Event]) -> list[dict[str, Any]]:
    replayer = Replayer(RULEBOOK, CONTEXT, partitions=1)
    return [record for event in events for record in replayer.apply(event).decisions]


def test_every_kind_and_outcome_is_built_and_valid() -> None:
    """One history reaches every record kind and every outcome of the vocabulary (so every
    builder is exercised), and each record is valid."""
    c1, c2, anon = {"customer_id": "c1"}, {"customer_id": "c2"}, {"anonymous_id": "a1"}
    steps: list[tuple[dict[str, str], str, dict[str, Any], int]] = [
        (anon, "ping", {}, 0),
        (anon, "ping", {}, 60),                                   # milestone: email, no consent
        ({**c1, "anonymous_id": "a1"}, "identified", {}, 120),    # merge
        ({**c2, "anonymous_id": "a1"}, "identified", {}, 180),    # refused: a1 is c1's
        (c1, "consent_changed", {"channel": "email", "granted": True}, 200),
        (c1, "ping", {}, 240), (c1, "ping", {}, 250),
        *[({"customer_id": f"v{n}"}, "view", {"sku": "sku-1"}, 300 + n) for n in range(8)],
        (c1, "view", {"sku": "sku-2"}, 320),                      # context: out of stock
        (c2, "view", {"sku": "sku-1"}, 390),                      # credited by the purchase
        *[({"customer_id": f"o{n}"}, "app_opened", {}, 400 + n) for n in range(5)],  # capacity
        (c2, "action_response", {"action": "offer_a", "response": "shown"}, 510),
        (c2, "action_response", {"action": "offer_a", "response": "accepted"}, 520),
        (c2, "action_response", {"action": "offer_a", "response": "declined"}, 530),
        (c2, "action_response", {"action": "offer_a", "response": "converted"}, 540),
        (c2, "purchase", {}, 600),                                # attribution
        (c2, "ping", {}, 3 * 3600),
        (c2, "ping", {}, 0),                                      # late: 3h before the newest
        (c2, "erasure_requested", {}, 3 * 3600 + 10),
        (c2, "ping", {}, 3 * 3600 + 5),                           # ignored: before the erasure
    ]
    records = _replay([_event(n, identity, etype, props, START + timedelta(seconds=s))
                       for n, (identity, etype, props, s) in enumerate(steps)])
    for record in records:
        _check(record)
    assert {r["kind"] for r in records} == RECORD_KINDS
    assert {r["outcome"] for r in records} == RECORD_OUTCOMES
    reasons = {r["suppressed_by"] for r in records} - {None}
    assert reasons >= {"context", "experiment_holdout", "arbitration", "capacity",
                       "erased"}, reasons
    extras = {name for r in records for name in r if name not in FIELDS[:12]}
    assert extras >= {"arm", "legal_basis", "purpose", "experiment", "skipped_channels"}


steps = st.one_of(
    st.tuples(identities, bodies),
    st.tuples(links, st.just(("identified", {}))),
    st.tuples(identities, st.just(("erasure_requested", {}))),
    st.tuples(identities, st.sampled_from([
        ("view", {"sku": "sku-1"}), ("view", {"sku": "sku-2"}),
        ("consent_changed", {"purpose": "personalisation", "granted": False}),
        ("action_response", {"action": "offer_a", "response": "shown"})])),
)


@given(st.lists(st.tuples(steps, st.integers(0, 900), st.integers(0, 3 * 3600)), max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_record_of_any_history_is_valid(
        items: list[tuple[tuple[dict[str, str], tuple[str, dict[str, Any]]], int, int]]) -> None:
    """Random histories (links and conflicts, erasures, consent and objections, responses,
    conversions, late and redelivered events, quiet hours, experiments, capacity): every audit
    record any step builds is a valid `DecisionRecord` in the vocabulary's words."""
    events, clock = [], 0
    for number, ((identity, (etype, properties)), step_s, late_s) in enumerate(items):
        clock += step_s
        at = START + timedelta(seconds=clock - late_s)
        events.append(_event(number % 30, identity, etype, properties, at))
    for record in _replay(events):
        _check(record)
