"""The simulated workload (tools/workload.py): deterministic, valid, time-ordered journeys."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.event import EventError, decode_event
from service.tools.workload import event_log, journeys, malformed_cases, malformed_samples

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SIMULATOR_TYPES = {
    ("web", "page_viewed"), ("web", "product_viewed"), ("web", "search"), ("web", "cart_added"),
    ("web", "checkout_viewed"), ("web", "content_downloaded"), ("web", "registration_completed"),
    ("web", "identified"), ("web", "consent_changed"), ("mobile", "app_opened"),
    ("mobile", "push_opened"), ("mobile", "store_entered"), ("store", "purchase"),
    ("store", "store_visit"), ("call_center", "call"), ("email", "email_opened"),
    ("email", "email_clicked"), ("sms", "sms_clicked"),
}
REQUIRED_PROPERTIES = {
    "page_viewed": {"category"}, "product_viewed": {"product_id", "category", "price"},
    "search": {"query", "category"}, "cart_added": {"sku", "price"},
    "checkout_viewed": {"delivery_slot_available"},
    "content_downloaded": {"content_id", "content_kind"}, "push_opened": {"campaign_id"},
    "store_entered": {"store_id"}, "purchase": {"amount", "store_id", "items"},
    "store_visit": {"store_id"}, "call": {"reason"}, "email_opened": {"campaign_id"},
    "email_clicked": {"campaign_id", "link"}, "sms_clicked": {"campaign_id"},
    "consent_changed": {"channel", "granted"},
}


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    """Every event of 300 customers' journeys."""
    return list(journeys(11, 300, START))


def test_same_seed_gives_identical_bytes() -> None:
    """Two runs with the same seed and start produce byte-identical event logs."""
    assert event_log(3, 3000, 500, START) == event_log(3, 3000, 500, START)


def test_different_seed_gives_different_events() -> None:
    """A different seed gives a different log (same length)."""
    a, b = event_log(3, 2000, 500, START), event_log(4, 2000, 500, START)
    assert len(a) == len(b) == 2000
    assert a != b


def test_event_log_has_exactly_n_events_of_about_300_bytes() -> None:
    """event_log returns exactly n encoded events, ~300 bytes each, even with few customers."""
    log = event_log(5, 5000, 20, START)
    assert len(log) == 5000
    mean = sum(map(len, log)) / len(log)
    assert 220 <= mean <= 400
    assert len({orjson.loads(raw)["event_id"] for raw in log}) == 5000


def test_every_event_passes_the_decoder(sample: list[dict[str, Any]]) -> None:
    """Every generated event is accepted by schemas.event.decode_event."""
    for event in sample:
        decode_event(orjson.dumps(event))


def test_only_known_types_with_their_properties(sample: list[dict[str, Any]]) -> None:
    """Events use exactly the channel/type names the rulebooks are written against, each with
    its documented properties; call reasons come from the documented set."""
    for event in sample:
        assert (event["channel"], event["type"]) in SIMULATOR_TYPES
        assert REQUIRED_PROPERTIES.get(event["type"], set()) <= event["properties"].keys()
        if event["type"] == "call":
            assert event["properties"]["reason"] in {"complaint", "order_status", "billing",
                                                     "sales"}


def test_the_mix_covers_channels_and_identity_cases(sample: list[dict[str, Any]]) -> None:
    """The journeys span all six channels, most events carry a customer_id, some are
    anonymous-only, and some `identified` events link an anonymous_id to a customer_id."""
    channels = Counter(e["channel"] for e in sample)
    assert set(channels) == {"web", "mobile", "store", "call_center", "email", "sms"}
    with_customer = sum("customer_id" in e["identity"] for e in sample)
    anonymous = [e for e in sample if set(e["identity"]) == {"anonymous_id"}]
    identified = [e for e in sample if e["type"] == "identified"]
    assert with_customer > 0.7 * len(sample)
    assert anonymous
    assert identified
    assert all({"customer_id", "anonymous_id"} <= e["identity"].keys() for e in identified)
    assert any(e["type"] == "consent_changed" for e in sample)


def test_events_are_in_non_decreasing_time(sample: list[dict[str, Any]]) -> None:
    """The merged stream never goes back in event time, across all customers."""
    times = [datetime.fromisoformat(e["occurred_at"]) for e in sample]
    assert all(a <= b for a, b in pairwise(times))
    assert times[0] >= START
    assert times[-1] - times[0] > timedelta(days=1)  # journeys, not one burst


def test_many_customers_interleave(sample: list[dict[str, Any]]) -> None:
    """Customers' sessions interleave: the first 200 events come from many customers, and
    customers come back later in the stream (journeys of several sessions)."""
    who = [e["context"]["session_id"].split("-")[1] for e in sample]
    assert len(set(who[:200])) > 25
    runs = sum(1 for a, b in pairwise(who) if a != b)
    assert runs > 2 * len(set(who))


def test_each_customer_keeps_one_time_zone(sample: list[dict[str, Any]]) -> None:
    """A customer's UTC offset is the same on all their events; several offsets occur."""
    offsets: dict[str, set[Any]] = defaultdict(set)
    for event in sample:
        who = event["identity"].get("customer_id") or event["identity"]["anonymous_id"]
        offsets[who].add(datetime.fromisoformat(event["occurred_at"]).utcoffset())
    assert all(len(seen) == 1 for seen in offsets.values())
    assert len(set().union(*offsets.values())) >= 3


def test_customers_are_mostly_active_in_their_local_daytime(
        sample: list[dict[str, Any]]) -> None:
    """Most events happen between 07:00 and 23:00 in the customer's own time zone (people
    sleep; quiet hours in the rulebook should mostly meet awake customers), a few at night."""
    hours = [datetime.fromisoformat(e["occurred_at"]).hour for e in sample]
    daytime = sum(7 <= h < 23 for h in hours) / len(hours)
    assert 0.85 < daytime < 1.0


def test_customer_ids_are_zero_padded(sample: list[dict[str, Any]]) -> None:
    """Customer ids look like c-000042."""
    ids = {e["identity"]["customer_id"] for e in sample if "customer_id" in e["identity"]}
    assert ids
    assert all(len(i) == 8 and i.startswith("c-") and i[2:].isdigit() for i in ids)


def test_start_is_respected_and_must_be_aware() -> None:
    """Event times follow `start` (in the customers' own offsets); a naive start is refused."""
    later = START + timedelta(days=100)
    first = next(journeys(1, 10, later))
    assert datetime.fromisoformat(first["occurred_at"]) >= later
    with pytest.raises(ValueError, match="timezone-aware"):
        next(journeys(1, 10, datetime(2026, 3, 2)))


def test_start_offset_does_not_change_the_events() -> None:
    """The same instant given in another offset yields the same events."""
    tokyo = START.astimezone(timezone(timedelta(hours=9)))
    assert list(islice(journeys(2, 50, START), 100)) == list(islice(journeys(2, 50, tokyo), 100))


def test_malformed_samples_are_all_rejected_with_a_reason() -> None:
    """Every bad sample is rejected by decode_event with an EventError carrying a reason code,
    and the corpus covers at least a dozen kinds."""
    cases = malformed_cases()
    assert len(cases) >= 12
    assert [raw for _, raw in cases] == malformed_samples()
    reasons = set()
    for kind, raw in cases:
        with pytest.raises(EventError) as caught:
            decode_event(raw)
        assert caught.value.reason, kind
        reasons.add(caught.value.reason)
    assert {"invalid_json", "invalid_utf8", "unknown_channel", "missing_identity",
            "personal_data", "bad_timestamp", "oversized"} <= reasons


def _types_in(node: Any) -> set[str]:
    """Every event type a rulebook's matchers name (values of `type:` keys, at any depth)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "type":
                found |= {value} if isinstance(value, str) else set(value)
            else:
                found |= _types_in(value)
    elif isinstance(node, list):
        for item in node:
            found |= _types_in(item)
    return found


def test_default_rulebook_only_names_types_the_simulator_sends(
        sample: list[dict[str, Any]]) -> None:
    """Every event type examples/default/rulebook.yaml matches on is one the workload
    generates, so `make run` exercises every rule (no typo'd or stale type names)."""
    import yaml

    root = Path(__file__).resolve().parents[3]
    rulebook = yaml.safe_load((root / "examples" / "default" / "rulebook.yaml").read_text())
    named = _types_in(rulebook) - {"action_response", "erasure_requested"}
    generated = {e["type"] for e in sample}
    assert named, "the rulebook names no event types?"
    assert named <= generated, f"rulebook types never simulated: {sorted(named - generated)}"
