"""Fuzzing of the two places hostile input reaches: the event decoder and decide().

The decoder may only ever answer with an `Event` or an `EventError` (which the processor
dead-letters); decide() must never raise for an event the decoder accepted, whatever its
properties, with every example rulebook."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import CHANNELS, Event, EventError, decode_event
from service.domain.decide import decide
from service.domain.rules import Rulebook, load_rulebook
from tests.events import wire

ROOT = Path(__file__).resolve().parents[2]
BOOKS = [*sorted(ROOT.glob("examples/*/rulebook.yaml")), ROOT / "tests/data/rulebook.yaml"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=30), st.integers(0, 10), st.none()),
        "occurred_at": st.one_of(
            st.datetimes().map(lambda d: d.isoformat() + "Z"), st.text(max_size=30),
            st.integers(-(2**53), 2**53)),
        "channel": st.one_of(st.sampled_from(sorted(CHANNELS)), st.text(max_size=10)),
        "type": st.one_of(st.sampled_from(["ping", "purchase", "call", "identified"]),
                          st.text(max_size=10), st.integers(0, 10)),
        "identity": st.one_of(
            st.dictionaries(st.sampled_from(["customer_id", "anonymous_id", "loyalty_id",
                                             "email", "email_sha256", "other"]),
                            st.one_of(st.text(max_size=20), st.integers(0, 10)), max_size=3),
            json_values),
        "properties": json_values,
        "context": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decoder_answers_arbitrary_bytes_with_an_event_or_a_reason(raw: bytes) -> None:
    """Random bytes never crash the decoder: an Event or an EventError with a reason."""
    try:
        assert isinstance(decode_event(raw), Event)
    except EventError as error:
        assert error.reason and str(error)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields)
def test_decoder_answers_arbitrary_json_objects_with_an_event_or_a_reason(
        body: dict[str, Any]) -> None:
    """Structurally plausible JSON with wrong types and odd values: an Event or a reason."""
    try:
        assert isinstance(decode_event(orjson.dumps(body)), Event)
    except EventError as error:
        assert error.reason and str(error)


_loaded: dict[Path, Rulebook] = {}


def _book(path: Path) -> Rulebook:
    if path not in _loaded:
        _loaded[path] = load_rulebook(path)
    return _loaded[path]


valid_events = st.builds(
    lambda eid, ts, channel, etype, props: wire(etype, event_id=eid, at=ts, channel=channel,
                                                customer="c-fuzz", props=props),
    st.text(min_size=1, max_size=20),
    st.datetimes(min_value=datetime.datetime(2001, 1, 1),
                 max_value=datetime.datetime(2099, 1, 1)).map(
        lambda d: d.isoformat() + "+00:00"),
    st.sampled_from(sorted(CHANNELS)),
    st.sampled_from(["ping", "report", "call", "purchase", "product_viewed", "cart_added",
                     "checkout_viewed", "store_entered", "search", "content_downloaded",
                     "email_opened", "flight_delayed", "consent_changed", "identified",
                     "erasure_requested", "action_response", "unheard_of"]),
    st.dictionaries(st.sampled_from(["category", "sku", "price", "amount", "reason",
                                     "delay_minutes", "store_id", "delivery_slot_available",
                                     "content_kind", "status", "action_id", "channel",
                                     "purpose", "granted"]),
                    json_values, max_size=5),
)


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.parent.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events, min_size=1, max_size=8))
def test_decide_never_raises_on_accepted_events(book: Path, raws: list[bytes]) -> None:
    """Any sequence of events the decoder accepts, with any property values, runs through
    decide() for every shipped rulebook without an exception."""
    rulebook = _book(book)
    profile = None
    for raw in raws:
        try:
            event = decode_event(raw)
        except EventError:
            continue
        outcome = decide(profile, event, {}, rulebook)
        profile = outcome.profile
