"""The fast event decoder (schemas/event.py) against the contract model (schemas/models.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.event import IDENTIFIER_FIELDS, Event, EventError, decode_event, parse_event
from schemas.models import TouchpointEvent

GOOD: dict[str, Any] = {
    "event_id": "e-1001",
    "occurred_at": "2026-03-02T09:30:00+09:00",
    "channel": "web",
    "type": "content_downloaded",
    "identity": {"customer_id": "c-42", "anonymous_id": "a-9f3"},
    "properties": {"content_id": "wp-cloud", "content_kind": "whitepaper"},
    "context": {"session_id": "s-1", "campaign_id": "q1-cloud"},
}


def test_design_example_decodes() -> None:
    """The example event of DESIGN.md is accepted, with event time in UTC ms and its offset."""
    event = decode_event(orjson.dumps(GOOD))
    assert event.event_id == "e-1001"
    assert event.ts_ms == 1772411400000
    assert event.utc_offset_min == 540
    assert event.key() == "customer_id:c-42"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"channel": "fax"}, "unknown_channel"),
        ({"identity": {}}, "missing_identity"),
        ({"identity": {"customer_id": "a@b.com"}}, "personal_data"),
        ({"identity": {"email_sha256": "not-a-digest"}}, "personal_data"),
        ({"occurred_at": "2026-03-02T09:30:00"}, "bad_timestamp"),
        ({"occurred_at": "1970-01-01T00:00:00Z"}, "bad_timestamp"),
        ({"occurred_at": 12}, "bad_timestamp"),
        ({"event_id": ""}, "bad_event_id"),
        ({"properties": []}, "bad_properties"),
        ({"properties": {"email": "x@y.org"}}, "personal_data"),
        ({"extra": 1}, "unknown_field"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(change: dict[str, Any], reason: str) -> None:
    """Each kind of bad event raises EventError with a reason code, never echoing values."""
    with pytest.raises(EventError) as info:
        decode_event(orjson.dumps({**GOOD, **change}))
    assert info.value.reason == reason
    assert "a@b.com" not in str(info.value) and "x@y.org" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1,2]", "not_an_object"),
        (None, "empty"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b'{"a":"' + b"x" * (1024 * 1024) + b'"}', "oversized"),
    ],
)
def test_undecodable_bytes_are_rejected(raw: bytes | None, reason: str) -> None:
    """Invalid JSON, invalid UTF-8, deep nesting, oversized and empty messages get a reason."""
    with pytest.raises(EventError) as info:
        decode_event(raw)
    assert info.value.reason == reason


_ids = st.one_of(st.none(), st.text(min_size=0, max_size=8))
_values = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.text(max_size=6), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    event_id=_ids,
    channel=st.sampled_from(["web", "sms", "fax", "", "store"]),
    occurred_at=st.sampled_from(
        ["2026-03-02T09:30:00+09:00", "2026-03-02T09:30:00Z", "2026-03-02", "x",
         "2026-03-02T09:30:00"]
    ),
    identity=st.dictionaries(
        st.sampled_from(["customer_id", "anonymous_id", "loyalty_id", "nickname"]), _ids,
        max_size=3,
    ),
    properties=st.one_of(st.dictionaries(st.text(max_size=5), _values, max_size=3), _values),
)
def test_fast_decoder_agrees_with_the_contract_model(
    event_id: str | None, channel: str, occurred_at: str, identity: dict[str, Any],
    properties: Any,
) -> None:
    """Whatever the fast decoder accepts, the pydantic contract model accepts too."""
    data = {"event_id": event_id, "channel": channel, "occurred_at": occurred_at,
            "type": "t", "identity": identity, "properties": properties}
    try:
        decode_event(orjson.dumps(data))
    except EventError:
        return
    TouchpointEvent.model_validate(data)  # must not raise


def test_model_rejects_what_decoder_rejects_for_identity() -> None:
    """An identity with no identifier is refused by both the model and the decoder."""
    data = {**GOOD, "identity": {"customer_id": None}}
    with pytest.raises(ValidationError):
        TouchpointEvent.model_validate(data)
    with pytest.raises(EventError):
        decode_event(orjson.dumps(data))


def _reference_time(text: str) -> tuple[int, int] | str:
    """The timestamp rule spelled out without shortcuts: exact UTC epoch ms (floored) and
    offset minutes, or the rejection reason."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return "bad_timestamp"
    offset = moment.utcoffset()
    if offset is None or not 2000 <= moment.year <= 2100:
        return "bad_timestamp"
    since = moment.replace(tzinfo=None) - offset - datetime(1970, 1, 1)
    return since // timedelta(milliseconds=1), offset // timedelta(minutes=1)


_ZONES = [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-9)),
          timezone(timedelta(hours=-5, minutes=-30)), timezone(timedelta(minutes=765)),
          timezone(timedelta(hours=1, seconds=30, microseconds=5)),
          timezone(timedelta(hours=2, seconds=30, microseconds=5))]
_FORMS = ["auto", "milliseconds", "seconds", "minutes", "hours", "basic", "space"]


@settings(max_examples=500, deadline=None)
@given(base=st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2101, 1, 1)),
       moments=st.lists(st.tuples(st.integers(-7_200_000_000, 7_200_000_000),
                                  st.sampled_from(_ZONES), st.sampled_from(_FORMS)),
                        max_size=12))
def test_timestamp_parse_is_exact_in_every_accepted_form(
    base: datetime, moments: list[tuple[int, timezone, str]],
) -> None:
    """`occurred_at` becomes exact epoch ms and offset minutes in every ISO-8601 form Python
    accepts, and years outside 2000..2100 are refused. The decoder caches each minute's
    arithmetic by the text of the minute and of the offset: the timestamps here share local
    minutes across offsets (+09:00 and -09:00, offsets with seconds alike but for the hour),
    come in any order and repeat, and none of that may change a result."""
    texts = []
    for micros, zone, form in moments:
        moment = (base + timedelta(microseconds=micros)).replace(tzinfo=zone)
        if form == "basic":
            texts.append(moment.strftime("%Y%m%dT%H%M%S.%f") + (moment.strftime("%z") or "Z"))
        elif form == "space":
            texts.append(moment.isoformat(sep=" "))
        else:
            texts.append(moment.isoformat(timespec=form))
    for text in texts + texts[::-1]:
        data = {**GOOD, "occurred_at": text}
        expected = _reference_time(text)
        try:
            event = decode_event(orjson.dumps(data))
        except EventError as exc:
            assert exc.reason == expected, text
            continue
        assert (event.ts_ms, event.utc_offset_min) == expected, text


def _answer(call: Any) -> tuple[Any, ...]:
    """An accepted event's every field, or a rejection's reason and message."""
    try:
        event = call()
    except EventError as error:
        return ("rejected", error.reason, error.message)
    return ("accepted", event._fields(), event.key(), type(event.properties),
            type(event.context))


_odd = st.one_of(st.none(), st.integers(-3, 10**12), st.booleans(),
                 st.lists(st.integers(0, 9), max_size=2))
_strings = st.one_of(st.sampled_from(["x", "", "a" * 201, "555 123 4567", "+4915123456789",
                                      "2026-03-01 16:00", "s-006284-0001", "(415) 555-2671",
                                      "1 299 999.00", "web", "2026-03-02T09:30:00Z",
                                      "2026-03-02T09:30:00", "2199-03-02T09:30:00+01:00"]),
                     st.text(max_size=12))
_objects = st.dictionaries(
    st.sampled_from(["customer_id", "anonymous_id", "loyalty_id", "email_sha256", "nickname",
                     "page", "phone"]),
    st.one_of(_strings, _odd), max_size=3)


_ids_by_name = st.dictionaries(
    st.sampled_from(["customer_id", "anonymous_id", "loyalty_id", "email_sha256",
                     "phone_sha256", "nickname"]),
    st.one_of(st.sampled_from(["c-42", "a" * 64, "a@b.co", "", "x" * 201]), _strings, _odd),
    min_size=1, max_size=3)
_payloads = st.dictionaries(st.sampled_from(["page", "phone", "n", "+1 (415) 555-2671"]),
                            st.one_of(_strings, _odd, _objects), max_size=3)
_FIELD_VALUES = {"identity": _ids_by_name, "properties": _payloads, "context": _payloads}


@settings(max_examples=600, deadline=None)
@given(changes=st.lists(st.sampled_from(
    ["event_id", "occurred_at", "channel", "type", "identity", "properties", "context",
     "schema_version", "extra"]).flatmap(lambda name: st.tuples(
         st.just(name), st.one_of(_FIELD_VALUES.get(name, _strings), _odd, _strings,
                                  _objects))), max_size=3),
    drop=st.lists(st.sampled_from(["properties", "context", "identity", "type"]), max_size=2))
@example(changes=[("properties", None)], drop=[])
@example(changes=[("context", None)], drop=["properties"])
@example(changes=[("identity", {"email_sha256": "c-42"})], drop=[])
@example(changes=[("identity", {"anonymous_id": "a-1", "loyalty_id": "l-1"})], drop=[])
@example(changes=[("identity", {"customer_id": "c-1", "anonymous_id": None})], drop=[])
@example(changes=[("context", {"n": "call +1 (415) 555-2671"})], drop=[])
@example(changes=[("channel", "fax"), ("occurred_at", "x")], drop=[])
@example(changes=[("occurred_at", "2026-03-02T09:30:00"), ("identity", {})], drop=[])
def test_the_common_case_path_answers_exactly_as_the_full_checks(
        changes: list[tuple[str, Any]], drop: list[str]) -> None:
    """`decode_event` answers a plain ASCII event through an inlined path of its own; for
    any event, valid or not, that answer (every field, or the reason and the message) is
    exactly `parse_event`'s with every check done in full (no fast path, the whole walk
    for personal data)."""
    data = {**GOOD, **dict(changes)}
    for name in drop:
        data.pop(name, None)
    raw = orjson.dumps(data)
    fast = _answer(lambda: decode_event(raw))
    assert fast == _answer(lambda: parse_event(orjson.loads(raw)))
_IDS = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)
_HASHES = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(st.fixed_dictionaries({}, optional={
    name: _HASHES if name.endswith("_sha256") else _IDS for name in IDENTIFIER_FIELDS}))
def test_an_event_built_without_the_decoder_keys_as_the_decoder_does(
        identity: dict[str, str]) -> None:
    """`Event.key()` computed lazily (an event built in code, no key passed in) is the key the
    decoder computes for the same identity, by the same priority of identifiers; an identity
    with none raises `missing_identity` either way."""
    built = Event("e-1", GOOD["occurred_at"], 0, 0, "web", "page_viewed", identity)
    wire = {**GOOD, "identity": identity}
    try:
        decoded = decode_event(orjson.dumps(wire))
    except EventError as error:
        with pytest.raises(EventError) as lazy:
            built.key()
        assert (error.reason, lazy.value.reason) == ("missing_identity", "missing_identity")
        return
    assert built.key() == decoded.key()


def _time_answer(parse: Any, text: str) -> tuple[Any, ...]:
    """A timestamp parser's answer: its value, or the rejection's reason and message."""
    try:
        return ("accepted", parse(text))
    except EventError as error:
        return ("rejected", error.reason, error.message)


_TAILS = ["Z", "+09:00", "-08:00", "+05:30", "-00:00", "+00:00", "+23:59", "-23:59",
          "+24:00", "+09:60", "+0900", "z", "+09:00:30", "-05:30", ""]
_TWO = st.one_of(st.integers(0, 99).map("{:02d}".format),
                 st.sampled_from(["6", "\u0660\u0660", "0\u0663", "1 ", "+1", "-1", "5", "0x"]))
_FRACTIONS = st.one_of(
    st.just(""), st.text("0123456789", max_size=8).map(lambda digits: "." + digits),
    st.sampled_from([",427", ".4\u06627", ".42a", ". 42", "427", ".-42", ".427000"]))


@settings(max_examples=800, deadline=None)
@given(hour=st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2101, 1, 1)),
       tail=st.sampled_from(_TAILS), minute=_TWO, second=_TWO, fraction=_FRACTIONS,
       separators=st.sampled_from(["::", "::", "::", ":-", ".:", ": ", "::"]))
@example(hour=datetime(2026, 3, 1, 16), tail="Z", minute="59", second="60", fraction="",
         separators="::")
@example(hour=datetime(2026, 3, 1, 16), tail="-08:00", minute="60", second="00",
         fraction=".427", separators="::")
@example(hour=datetime(2026, 3, 1, 16), tail="+05:30", minute="07", second="09",
         fraction=".123456", separators="::")
@example(hour=datetime(2100, 12, 31, 23), tail="-23:59", minute="59", second="59",
         fraction=".999", separators="::")
def test_timestamps_read_from_their_text_answer_as_fromisoformat(
        hour: datetime, tail: str, minute: str, second: str, fraction: str,
        separators: str) -> None:
    """A timestamp of an hour already seen is read from its text (`_parse_time`'s lookups),
    with no `fromisoformat`: its answer, value or rejection with its message, is exactly the
    full parse's (`_parse_time_full`) and the reference arithmetic's, on valid timestamps
    and near-valid ones (second or minute 60, non-ASCII digits, other separators, fractions
    of any length, offsets that are refused or written otherwise, years out of range)."""
    from schemas.event import _HOURS, _parse_time, _parse_time_full

    head = hour.strftime("%Y-%m-%dT%H")
    _time_answer(_parse_time, f"{head}:00:00{tail}")  # the hour seen before (if valid)
    text = f"{head}{separators[0]}{minute}{separators[1]}{second}{fraction}{tail}"
    fast = _time_answer(_parse_time, text)
    assert fast == _time_answer(_parse_time_full, text), text
    assert fast[1] == _reference_time(text), text
    if tail in ("Z", "+09:00", "-08:00") and 2000 <= hour.year <= 2100:
        assert head in _HOURS[tail]  # (the lookups were tried, not only the full parse)
