"""Context records (service/stream/context.py): how one `<prefix>.context` message or context-file
line changes the time-versioned table, and what is refused as malformed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from service.domain.context_table import BEGINNING, ContextTable
from service.ops.settings import load_settings
from service.stream.context import ContextReader, apply_context_record, record_time

MARCH_1 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
RECORD_TS = MARCH_1 + 86_400_000  # the Kafka record's timestamp, a day later


def _apply(table: ContextTable, record: object, timestamp: int | None = RECORD_TS,
           key: bytes | None = None) -> bool:
    return apply_context_record(table, key, orjson.dumps(record), timestamp)


@pytest.mark.parametrize("valid_from", [
    "2026-03-01T00:00:00Z",
    "2026-03-01T09:00:00+09:00",
    "2026-03-01T00:00:00.000+00:00",
    MARCH_1,
])
def test_valid_from_in_iso_or_epoch_ms(valid_from: object) -> None:
    """`valid_from` is epoch ms or ISO-8601 with an offset (Z allowed); it wins over the
    record timestamp."""
    table = ContextTable()
    assert _apply(table, {"key": "stock:a", "value": 4, "valid_from": valid_from})
    assert table.versions("stock:a") == [(MARCH_1, 4)]


def test_iso_valid_from_keeps_every_millisecond() -> None:
    """Milliseconds of an ISO valid_from are exact (no float rounding down by one)."""
    table = ContextTable()
    for ms in range(1, 1000, 7):
        assert _apply(table, {"key": f"k{ms}", "value": 1,
                              "valid_from": f"2026-03-01T00:00:00.{ms:03d}Z"})
        assert table.versions(f"k{ms}") == [(MARCH_1 + ms, 1)]


def test_without_valid_from_the_record_timestamp_applies() -> None:
    """A record with no valid_from (or a null one) holds from its Kafka record timestamp."""
    table = ContextTable()
    assert _apply(table, {"key": "stock:a", "value": 4})
    assert _apply(table, {"key": "stock:b", "value": 1, "valid_from": None})
    assert table.versions("stock:a") == [(RECORD_TS, 4)]
    assert table.versions("stock:b") == [(RECORD_TS, 1)]


def test_without_valid_from_or_timestamp_from_the_beginning_of_time() -> None:
    """A line with neither (a context file) holds for every event."""
    table = ContextTable()
    assert _apply(table, {"key": "stock:a", "value": 4}, timestamp=None)
    assert table.versions("stock:a") == [(BEGINNING, 4)]


def test_a_null_value_deletes_the_key_from_valid_from_on() -> None:
    """`value: null` (or no value) makes the key absent from valid_from; before, it is there."""
    table = ContextTable()
    _apply(table, {"key": "stock:a", "value": 4, "valid_from": 100})
    assert _apply(table, {"key": "stock:a", "value": None, "valid_from": 200})
    assert _apply(table, {"key": "stock:b", "valid_from": 200})
    assert table.as_of(150) == {"stock:a": 4}
    assert "stock:a" not in table.as_of(250) and "stock:b" not in table.as_of(250)


def test_the_kafka_key_form_holds_from_the_record_timestamp() -> None:
    """Kafka key = context key and the message its JSON value; a tombstone (no message)
    deletes the key from the record's timestamp on."""
    table = ContextTable()
    assert apply_context_record(table, b"stock:a", b"7", 100)
    assert apply_context_record(table, b"stock:a", None, 200)
    assert table.versions("stock:a") == [(100, 7), (200, None)]
    assert apply_context_record(table, b"stock:c", b'{"n": 1}', None)
    assert table.versions("stock:c") == [(BEGINNING, {"n": 1})]


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[1, 2]",  # not an object, and no Kafka key to name it
    b'{"key": 5, "value": 1}',
    b'{"key": "k", "value": 1, "valid_from": "yesterday"}',
    b'{"key": "k", "value": 1, "valid_from": "2026-03-01T00:00:00"}',  # no offset
    b'{"key": "k", "value": 1, "valid_from": "2026-03-01"}',
    b'{"key": "k", "value": 1, "valid_from": true}',
    b'{"key": "k", "value": 1, "valid_from": 1.5}',
    b'{"key": "k", "value": 1, "valid_from": [1]}',
    b'{"key": "k", "value": 1, "valid_from": 9000000000000000000}',
])
def test_malformed_records_change_nothing(raw: bytes) -> None:
    """Bad JSON, a record without a string key, or a valid_from that is not a time: False,
    and the table is as it was."""
    table = ContextTable()
    table.put("k", 0, 10)
    assert not apply_context_record(table, None, raw, RECORD_TS)
    assert table.versions("k") == [(10, 0)] and list(table.names()) == ["k"]


def test_a_tombstone_without_a_key_is_malformed() -> None:
    """No message and no Kafka key says nothing: refused."""
    assert not apply_context_record(ContextTable(), None, None, RECORD_TS)


def test_a_record_without_timestamp_reads_as_none() -> None:
    """Kafka's -1 (no timestamp) becomes None, so the record holds from the beginning."""
    assert record_time(-1) is None and record_time(None) is None
    assert record_time(RECORD_TS) == RECORD_TS


def test_the_reader_keeps_a_time_versioned_table() -> None:
    """The worker's context reader fills a ContextTable through the 4-argument apply."""
    reader = ContextReader(load_settings(), "touchpoints.context")
    assert isinstance(reader.table, ContextTable) and len(reader.table) == 0
    assert reader.apply is apply_context_record
