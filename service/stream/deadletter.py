"""Dead letters without personal data: what a rejected message leaves on `<prefix>.deadletter`.

A dead letter names the source (topic, partition, offset: the original stays readable there
for the topic's retention) and why it was rejected, and keeps as much of the message as can
be kept without storing personal data or customer identifiers, so that an erasure leaves
no byte of a customer's identifiers in the dead-letter topic:

* the Kafka key (producers set it to a customer identifier) becomes a salted digest, also as
  the dead letter's own key (a customer's dead letters still share a partition);
* a JSON object (an event, even an invalid one) is kept with each `identity` value replaced
  by `[redacted:id:<digest>]`, every string or key holding an e-mail address or a phone
  number, anywhere, by `[redacted:email|phone:<digest>]` (schemas/pii.py), and the value of
  any top-level field the contract does not know by `[redacted:value:<digest>]`;
* anything else (not JSON, not an object, larger than 256 KiB, an identity control record,
  which carries profile keys and a profile's history) is dropped: only its length and the
  salted digest of its bytes are kept. Pattern redaction over free text cannot find a
  customer id, so keeping it would keep identifiers.

Digests are HMAC-SHA256 with `TOUCHFLOW_PII_SALT` (16 hex characters): someone holding the
salt can check whether a dead letter concerns a given customer or value; nobody can read the
value back. Without the setting, each process draws a random salt and logs one warning:
digests are then not comparable across workers or restarts, but nothing is weaker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from schemas.codec import JSONDecodeError, dumps, loads
from schemas.pii import digest, marker, redact
from service.ops.settings import Settings
from service.stream.batch import Record

__all__ = ["MAX_KEPT_BYTES", "dead_letter", "pii_salt", "redact_event"]

log = logging.getLogger(__name__)
MAX_KEPT_BYTES = 256 * 1024  # larger messages keep only size and digest: part of the contract
_CONTROL_HEADER = "tf-ctl"
_SCALAR_FIELDS = frozenset({"event_id", "occurred_at", "channel", "type", "schema_version"})
_random_salt: bytes | None = None


def pii_salt(settings: Settings) -> bytes:
    """The salt of dead-letter digests: the setting, or one random salt per process (with a
    single warning saying so)."""
    global _random_salt
    if settings.pii_salt is not None:
        return settings.pii_salt.get_secret_value().encode()
    if _random_salt is None:
        _random_salt = os.urandom(32)
        log.warning("TOUCHFLOW_PII_SALT is not set: dead-letter digests use a random salt "
                    "drawn by this process, not comparable across workers or restarts")
    return _random_salt


def redact_event(data: dict[str, Any], salt: bytes) -> tuple[dict[str, Any], int]:
    """An event-shaped JSON object with identifiers and personal data replaced by markers,
    and how many values were replaced."""
    out: dict[str, Any] = {}
    replaced = 0
    for name, value in data.items():
        clean_name, hits = redact(name, salt)
        replaced += hits
        if name == "identity" and isinstance(value, dict):
            ids: dict[str, Any] = {}
            for field, item in value.items():
                clean_field, hits = redact(field, salt)
                replaced += hits + 1
                ids[clean_field] = marker("id", salt, _text(item))
            out[clean_name] = ids
        elif name == "identity":
            replaced += 1
            out[clean_name] = marker("id", salt, _text(value))
        elif name in ("properties", "context") or (
                name in _SCALAR_FIELDS and (value is None or isinstance(value, str | int))):
            out[clean_name], hits = redact(value, salt)
            replaced += hits
        else:
            replaced += 1
            out[clean_name] = marker("value", salt, _text(value))
    return out, replaced


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value).decode()


def dead_letter(message: Record, reason: str, error: str, salt: bytes,
                worker: str) -> tuple[bytes | None, bytes]:
    """The dead letter of `message` (see the module docstring): its Kafka key and value."""
    value = message.value or b""
    key_digest = digest(salt, message.key) if message.key else None
    record: dict[str, Any] = {
        "reason": reason,
        "error": error,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp_ms": message.timestamp,
        "key_digest": key_digest,
        "value_bytes": len(value),
        "value_digest": digest(salt, value),
        "value": None,
        "value_redacted": 0,
        "worker": worker,
    }
    if value and len(value) <= MAX_KEPT_BYTES and not any(
            name == _CONTROL_HEADER for name, _ in message.headers or ()):
        try:
            data = loads(value)
        except JSONDecodeError:
            data = None
        if isinstance(data, dict):
            record["value"], record["value_redacted"] = redact_event(data, salt)
    return (key_digest.encode() if key_digest else None), dumps(record)
