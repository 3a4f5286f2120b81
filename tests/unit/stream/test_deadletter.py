"""Dead letters without personal data (service/stream/deadletter.py): the rejected event is kept
with identifiers and detected values replaced by salted digests; what cannot be redacted
is dropped, keeping its length and digest; the record fits the DeadLetter contract."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

import service.stream.deadletter as deadletter
from schemas.event import EventError, decode_event
from schemas.models import DeadLetter
from schemas.pii import digest
from service.ops.settings import load_settings
from service.stream.batch import Message
from service.stream.deadletter import dead_letter, pii_salt
from tests.pii_corpus import HOSTILE

SALT = b"test-salt"
EVENT: dict[str, Any] = {
    "event_id": "e-1", "occurred_at": "2026-03-02T09:30:00+09:00", "channel": "web",
    "type": "page_viewed",
    "identity": {"customer_id": "c-secret-42", "anonymous_id": "a-secret-9"},
    "properties": {"items": [{"sku": "SKU-1"}, {"contact": "jane.doe@example.com"}],
                   "jane.doe@example.com": "as a key", "price": "12.99"},
    "context": {"callback": "+44 20 7946 0958", "page": "/tv"},
}


def _letter(value: bytes | None, key: bytes | None = b"customer_id:c-secret-42",
            headers: tuple[tuple[str, bytes], ...] = (), salt: bytes = SALT) -> dict[str, Any]:
    message = Message("tp.events", 3, 17, key, value, 1_772_411_400_000, headers)
    out_key, out = dead_letter(message, "personal_data", "a sentence", salt, "touchflow")
    record: dict[str, Any] = orjson.loads(out)
    DeadLetter.model_validate(record)
    assert out_key == (record["key_digest"].encode() if key else None)
    return record


def test_event_is_kept_with_identifiers_and_personal_data_replaced() -> None:
    """Identity values become `[redacted:id:...]`, the nested e-mail, the e-mail key and the
    phone `[redacted:email|phone:...]`; everything else (SKU, price, page) is kept; the
    Kafka key is a digest; no byte of an identifier or a personal value remains."""
    raw = orjson.dumps(EVENT)
    record = _letter(raw)
    kept = record["value"]
    assert kept["identity"] == {
        "customer_id": f"[redacted:id:{digest(SALT, 'c-secret-42')}]",
        "anonymous_id": f"[redacted:id:{digest(SALT, 'a-secret-9')}]"}
    assert kept["properties"]["items"] == [
        {"sku": "SKU-1"}, {"contact": f"[redacted:email:{digest(SALT, 'jane.doe@example.com')}]"}]
    assert f"[redacted:email:{digest(SALT, 'jane.doe@example.com')}]" in kept["properties"]
    assert kept["properties"]["price"] == "12.99" and kept["context"]["page"] == "/tv"
    assert kept["context"]["callback"].startswith("[redacted:phone:")
    assert record["value_redacted"] == 5
    assert record["key_digest"] == digest(SALT, b"customer_id:c-secret-42")
    assert record["value_bytes"] == len(raw) and record["value_digest"] == digest(SALT, raw)
    text = orjson.dumps(record).decode()
    for secret in ("secret", "jane", "7946", "example.com"):
        assert secret not in text


def test_digests_are_stable_under_one_salt_and_differ_under_another() -> None:
    """The same value under the same salt gives the same marker (dead letters of one
    customer can be grouped); another salt gives another (nothing to look up without it)."""
    raw = orjson.dumps(EVENT)
    assert _letter(raw)["value"] == _letter(raw)["value"]
    assert _letter(raw)["value"]["identity"] != _letter(raw, salt=b"other")["value"]["identity"]


@pytest.mark.parametrize("raw", [
    b'{"event_id": "e-1", "identity": {"customer_id": "c-secret-42"}',  # truncated JSON
    b'["c-secret-42", "jane.doe@example.com"]',  # not an object
    b"customer_id=c-secret-42",  # not JSON
    b'{"a": "' + b"c-secret-42 " * 30_000 + b'"}',  # over 256 KiB
])
def test_what_cannot_be_redacted_is_dropped_keeping_length_and_digest(raw: bytes) -> None:
    """Text that is not a JSON object (pattern redaction cannot find a customer id in it),
    or is larger than 256 KiB, leaves only its length and digest."""
    record = _letter(raw)
    assert record["value"] is None and record["value_bytes"] == len(raw)
    assert "secret" not in orjson.dumps(record).decode()


def test_identity_control_records_are_dropped() -> None:
    """A dead-lettered link/merge record (it carries profile keys and a history) keeps no
    content, whatever its shape."""
    raw = orjson.dumps({"alias": "anonymous_id:a-secret", "canonical": "customer_id:c-secret",
                        "event_id": "e", "occurred_at": "2026-03-02T09:30:00Z"})
    record = _letter(raw, key=b"anonymous_id:a-secret", headers=(("tf-ctl", b"link"),))
    assert record["value"] is None
    assert "secret" not in orjson.dumps(record).decode()


def test_unknown_and_malformed_fields_are_digested() -> None:
    """A top-level field the contract does not know, an identity that is not an object and
    a non-string event id keep their names but not their values."""
    raw = orjson.dumps({"event_id": ["c-secret"], "customer": "c-secret",
                        "identity": "c-secret", "channel": "web"})
    kept = _letter(raw, key=None)["value"]
    assert kept["channel"] == "web"
    assert all(kept[name].startswith("[redacted:") for name in ("event_id", "customer",
                                                                 "identity"))
    assert "secret" not in orjson.dumps(kept).decode()


@pytest.mark.parametrize(("name", "parts", "sentence"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_corpus_dead_letters_keep_no_personal_value(
        name: str, parts: dict[str, Any], sentence: str) -> None:
    """For every item of the hostile corpus, the rejection's dead letter holds the reason's
    path and no personal value (the e-mail's local part, the phone's last digits)."""
    raw = orjson.dumps({**EVENT, "properties": {}, "context": {}, **parts})
    with pytest.raises(EventError) as info:
        decode_event(raw)
    message = Message("tp.events", 0, 1, None, raw)
    _, out = dead_letter(message, info.value.reason, info.value.message, SALT, "w")
    text = out.decode()
    assert orjson.loads(out)["error"] == sentence
    for secret in ("jane", "2671", "0958", "6789", "56 78", "5552671"):
        assert secret not in text


def test_unset_salt_draws_a_random_one_with_a_single_warning(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TOUCHFLOW_PII_SALT each process draws one random salt (reused) and says so
    once; with it, the setting's value is the salt and nothing is logged."""
    monkeypatch.setattr(deadletter, "_random_salt", None)
    settings = load_settings(broker="kafka://127.0.0.1:1")
    with caplog.at_level(logging.WARNING):
        first, second = pii_salt(settings), pii_salt(settings)
    assert first == second and len(first) == 32
    assert [r.getMessage() for r in caplog.records].count(
        "TOUCHFLOW_PII_SALT is not set: dead-letter digests use a random salt drawn by this "
        "process, not comparable across workers or restarts") == 1
    caplog.clear()
    salted = load_settings(broker="kafka://127.0.0.1:1", pii_salt="pepper")
    assert pii_salt(salted) == b"pepper" and not caplog.records
    assert "pepper" not in repr(salted)
