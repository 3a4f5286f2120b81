"""The touchpoint event as the decision core sees it, and its fast, strict decoder.

`decode_event(raw)` is the hot path of the worker and of replay: one `orjson.loads`, then a
hand-written validation that accepts exactly what the pydantic model `TouchpointEvent`
(schemas/models.py) accepts (a property test holds the two together). A rejected event raises
`EventError` whose `reason` is a short machine-readable code and whose message names the field,
never the offending value, so it can go to the dead-letter topic and the logs safely.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from schemas.codec import JSONDecodeError, loads
from schemas.pii import find_personal, looks_plain, may_hold_phone, scan_text
from schemas.vocabulary import CHANNELS, HASHED_IDENTIFIERS, IDENTIFIER_FIELDS

__all__ = [
    "CHANNELS",
    "IDENTIFIER_FIELDS",
    "MAX_EVENT_BYTES",
    "Event",
    "EventError",
    "decode_event",
    "event_fields",
    "event_from_fields",
    "parse_event",
]

MAX_EVENT_BYTES = 1024 * 1024
MAX_ID_LEN = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOP_FIELDS = frozenset(
    {"event_id", "occurred_at", "channel", "type", "identity", "properties", "context",
     "schema_version"}
)
_MIN_YEAR = 2000
_MAX_YEAR = 2100


class EventError(ValueError):
    """A touchpoint event that cannot be accepted; `reason` is a short code for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Event:
    """A validated touchpoint event. `ts_ms` is UTC epoch milliseconds of `occurred_at`.

    Immutable by contract (nothing assigns to an event after `decode_event` built it), not by
    run-time enforcement, which a frozen dataclass pays per field on every decode
    (docs/decisions.md, "The event decoder"). `key()` is computed once (the decoder passes it
    in, having walked the identity anyway).
    """

    __slots__ = ("_key", "channel", "context", "event_id", "identity", "occurred_at",
                 "properties", "ts_ms", "type", "utc_offset_min")

    def __init__(self, event_id: str, occurred_at: str, ts_ms: int, utc_offset_min: int,
                 channel: str, type: str, identity: Mapping[str, str],
                 properties: Mapping[str, Any] | None = None,
                 context: Mapping[str, Any] | None = None, key: str | None = None) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.ts_ms = ts_ms
        self.utc_offset_min = utc_offset_min
        self.channel = channel
        self.type = type
        self.identity = identity
        self.properties: Mapping[str, Any] = properties if properties is not None else {}
        self.context: Mapping[str, Any] = context if context is not None else {}
        self._key = key

    def key(self) -> str:
        """The identifier that keys this event's profile: `<field>:<value>` of the first present."""
        key = self._key
        if key is None:
            key = self._key = _profile_key(self.identity)
        return key

    def to_dict(self) -> dict[str, Any]:
        """The wire form of this event (what `decode_event` accepts)."""
        return {
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "channel": self.channel,
            "type": self.type,
            "identity": dict(self.identity),
            "properties": dict(self.properties),
            "context": dict(self.context),
        }

    def _fields(self) -> tuple[Any, ...]:
        return (self.event_id, self.occurred_at, self.ts_ms, self.utc_offset_min, self.channel,
                self.type, dict(self.identity), dict(self.properties), dict(self.context))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Event(event_id={self.event_id!r}, occurred_at={self.occurred_at!r}, "
                f"channel={self.channel!r}, type={self.type!r})")


_new_event = object.__new__  # (an Event built without a call to __init__: a frame less)
#: An `Event` as a tuple of plain values (what `marshal` carries between processes), in
#: this order: event_id, occurred_at, ts_ms, utc_offset_min, channel, type, identity,
#: properties, context, and the profile key.
EventFields = tuple[str, str, int, int, str, str, Mapping[str, str], Mapping[str, Any],
                    Mapping[str, Any], str]


def event_fields(event: Event) -> EventFields:
    """`event`'s values as a tuple, for `event_from_fields` on the other side of a pipe."""
    return (event.event_id, event.occurred_at, event.ts_ms, event.utc_offset_min,
            event.channel, event.type, event.identity, event.properties, event.context,
            event.key())


def event_from_fields(fields: EventFields) -> Event:
    """The `Event` whose `event_fields` are `fields` (already validated: nothing is checked
    again, which is the point of decoding elsewhere)."""
    event = _new_event(Event)
    (event.event_id, event.occurred_at, event.ts_ms, event.utc_offset_min, event.channel,
     event.type, event.identity, event.properties, event.context, event._key) = fields
    return event


def _profile_key(identity: Mapping[str, str]) -> str:
    for name in IDENTIFIER_FIELDS:
        value = identity.get(name)
        if value:
            return f"{name}:{value}"
    raise EventError("missing_identity", "identity carries no identifier")


_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_fromisoformat = datetime.fromisoformat
#: offset text ("Z", "+09:00") -> first 16 characters ("2026-03-01T16:00") -> (UTC epoch
#: microseconds of that minute, offset minutes). Only timestamps ending in "Z" or in a sign
#: and HH:MM (what producers send) are cached: such a string ends in its whole offset (no
#: other part of a timestamp holds "+" or "-" that late), and the first 16 characters of any
#: form `fromisoformat` accepts fix the date, hour and minute. Seconds and fractions are read
#: from the parsed value; other offset forms take the uncached path.
_MINUTES: dict[str, dict[str, tuple[int, int]]] = {}
_MINUTES_PER_OFFSET = 8192


#: offset text ("Z", "+09:00") -> local hour ("2026-03-01T16") -> (UTC epoch ms of that hour,
#: offset minutes), for hours whose text is what `isoformat` writes and offsets "Z" or a sign
#: and HH:MM: `_parse_time` reads the rest of such a timestamp from its text.
_HOURS: dict[str, dict[str, tuple[int, int]]] = {}
_HOURS_PER_OFFSET = 4096
#: ":MM:SS" -> its milliseconds, ".fff" -> milliseconds, "ddd": the text these forms may hold
#: (minute and second 00..59; a "60", a non-ASCII digit or another separator is not here).
_SIXTY = [f"{number:02d}" for number in range(60)]
_THOUSAND = [f"{number:03d}" for number in range(1_000)]
_MINUTE_SECOND_MS = dict(zip([f":{minute}:{second}" for minute in _SIXTY for second in _SIXTY],
                             range(0, 3_600_000, 1_000), strict=True))
_FRACTION_MS = dict(zip(["." + digits for digits in _THOUSAND], range(1_000), strict=True))
_DIGITS3 = frozenset(_THOUSAND)


def _parse_time(value: Any) -> tuple[int, int]:
    """(UTC epoch ms, offset minutes) of an ISO-8601 timestamp with an offset, in exact integer
    arithmetic (floored to the millisecond; float `timestamp()` could land a millisecond
    low), exactly as `_parse_time_full` (`fromisoformat`) answers.

    A timestamp of a local hour and offset seen before, written `:MM:SS`, `:MM:SS.fff` or
    `:MM:SS.ffffff` after the hour (what producers write), is read from its text with a few
    lookups, each of which also checks its part (anything else raises KeyError, and takes
    the full parse, which gives the same answer or the same rejection); a property test holds
    the two together (docs/decisions.md, "Timestamps read from their text")."""
    try:  # (subscripts, not dict.get: a method call costs more than the lookup)
        if value[-1] == "Z":
            hour = _HOURS["Z"][value[:13]]
            end = len(value) - 1
        else:
            hour = _HOURS[value[-6:]][value[:13]]
            end = len(value) - 6
        if end == 23:
            return (hour[0] + _MINUTE_SECOND_MS[value[13:19]]
                    + _FRACTION_MS[value[19:23]], hour[1])
        if end == 19:
            return hour[0] + _MINUTE_SECOND_MS[value[13:19]], hour[1]
        if end == 26 and value[23:26] in _DIGITS3:
            return (hour[0] + _MINUTE_SECOND_MS[value[13:19]]
                    + _FRACTION_MS[value[19:23]], hour[1])
    except (KeyError, TypeError, IndexError):  # another form, an hour not seen, not a string
        pass
    ts_ms, offset_min, moment = _parsed(value)
    _note_hour(value, moment, ts_ms, offset_min)
    return ts_ms, offset_min


def _note_hour(value: str, moment: datetime, ts_ms: int, offset_min: int) -> None:
    """Remember the hour of an accepted timestamp (`moment`, parsed from `value`) for
    `_parse_time`'s lookups, when its first 13 characters are the canonical `YYYY-MM-DDTHH`
    of what it means and it ends in "Z" or in a sign and HH:MM (then that is its whole
    offset, a whole number of minutes)."""
    tail = "Z" if value[-1] == "Z" else value[-6:]
    if value[10:11] != "T" or not (tail == "Z" or (tail[0] in "+-" and tail[3] == ":")) \
            or moment.isoformat()[:13] != value[:13]:
        return
    hours = _HOURS.get(tail)
    if hours is None:
        hours = _HOURS[tail] = {}
    elif len(hours) >= _HOURS_PER_OFFSET:
        hours.clear()
    # the hour's start: the local time floored to the hour, back in UTC
    hours[value[:13]] = (ts_ms - (ts_ms + offset_min * 60_000) % 3_600_000, offset_min)


def _parse_time_full(value: object) -> tuple[int, int]:
    """`_parse_time` by `fromisoformat`: any form it accepts, every rejection."""
    ts_ms, offset_min, _ = _parsed(value)
    return ts_ms, offset_min


def _parsed(value: object) -> tuple[int, int, datetime]:
    """`_parse_time_full`'s answer and the parsed value; the date arithmetic and range checks
    of a minute are done once (the events of a stream share minutes)."""
    if not isinstance(value, str):
        raise EventError("bad_timestamp", "occurred_at must be an ISO-8601 string")
    try:
        moment = _fromisoformat(value)
    except ValueError:
        raise EventError("bad_timestamp", "occurred_at is not an ISO-8601 timestamp") from None
    if value[-1] == "Z":
        tail = "Z"
    elif len(value) > 16 and value[-6] in "+-" and value[-3] == ":":
        tail = value[-6:]
    else:
        base_us, offset_min = _minute(moment)
        return ((base_us + moment.second * 1_000_000 + moment.microsecond) // 1_000, offset_min,
                moment)
    minutes = _MINUTES.get(tail)
    if minutes is None:
        minutes = _MINUTES[tail] = {}
    head = value[:16]
    minute = minutes.get(head)
    if minute is None:
        minute = _minute(moment)
        if len(minutes) >= _MINUTES_PER_OFFSET:
            minutes.clear()
        minutes[head] = minute
    return ((minute[0] + moment.second * 1_000_000 + moment.microsecond) // 1_000, minute[1],
            moment)


def _minute(moment: datetime) -> tuple[int, int]:
    """(UTC epoch microseconds of the minute of `moment`, offset minutes); checks the range."""
    offset = moment.utcoffset()
    if offset is None:
        raise EventError("bad_timestamp", "occurred_at must carry a UTC offset (e.g. Z or +09:00)")
    if not _MIN_YEAR <= moment.year <= _MAX_YEAR:
        raise EventError("bad_timestamp", f"occurred_at must lie in {_MIN_YEAR}..{_MAX_YEAR}")
    offset_s = offset.days * 86_400 + offset.seconds
    local_s = ((moment.toordinal() - _EPOCH_ORDINAL) * 86_400 + moment.hour * 3_600
               + moment.minute * 60)
    return (local_s - offset_s) * 1_000_000 - offset.microseconds, offset_s // 60


_ID_NAMES = frozenset(IDENTIFIER_FIELDS)
_FIRST_ID = IDENTIFIER_FIELDS[0]  # the highest-priority identifier (customer_id)
_FIRST_ID_PREFIX = _FIRST_ID + ":"
_HASHED_IDS = HASHED_IDENTIFIERS


def _check_identity(identity: object, plain: bool) -> tuple[dict[str, str], str]:
    """The identity's present identifiers, and the profile key (the highest-priority one).

    The common case (known names, plain non-empty strings, no hashed identifier to check, no
    personal data anywhere: `looks_plain`) is recognised in one pass and keeps the decoded
    dict as it is; anything else takes the field-by-field path, which gives the exact error."""
    if plain and isinstance(identity, dict) and identity \
            and _ID_NAMES.issuperset(identity):
        for name, value in identity.items():
            if (not isinstance(value, str) or not value or len(value) > MAX_ID_LEN
                    or name in _HASHED_IDS):
                break
        else:
            return identity, _profile_key(identity)
    return _check_identity_exact(identity)


def _check_identity_exact(identity: object) -> tuple[dict[str, str], str]:
    if not isinstance(identity, dict):
        raise EventError("missing_identity", "identity must be an object")
    out: dict[str, str] = {}
    for name, value in identity.items():
        if name not in _ID_NAMES:
            raise EventError("bad_identity", f"{_named('identity', name)} is not a known "
                             "identifier")
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
            raise EventError("bad_identity", f"identity.{name} must be a non-empty string")
        if name in _HASHED_IDS and not _SHA256.fullmatch(value):
            raise EventError(
                "personal_data", f"identity.{name} must be a lowercase hex SHA-256 digest"
            )
        if scan_text(value) == "email":
            raise EventError("personal_data", f"identity.{name} holds a raw e-mail address")
        out[name] = value
    if not out:
        raise EventError(
            "missing_identity", "identity carries none of " + ", ".join(IDENTIFIER_FIELDS)
        )
    return out, _profile_key(out)


def _named(where: str, name: object) -> str:
    """A field named in an error message: `where.name` (a long name cut), or EventError when
    the name itself holds personal data (it must not reach the dead letter or the logs)."""
    text = str(name)
    finding = find_personal({text: None}, where or "the event")
    if finding is not None:
        raise EventError("personal_data", finding.sentence())
    shown = repr(text[:64] + ("..." if len(text) > 64 else ""))
    return f"{where}.{text}" if where and text.isidentifier() and len(text) <= 64 else \
        (f"{where}[{shown}]" if where else shown)


def _check_pii(properties: Mapping[str, Any], where: str) -> None:
    """Reject personal data in any string or key of `properties`, at any depth
    (schemas/pii.py); the reason names the field path, never the value."""
    finding = find_personal(properties, where)
    if finding is not None:
        raise EventError("personal_data", finding.sentence())


def parse_event(data: object, *, plain: bool = False) -> Event:
    """Validate an already-decoded JSON value into an `Event`, or raise `EventError`.

    `plain`: the caller knows that no string in `data` can hold an e-mail address
    (`decode_event` checks the raw bytes with `looks_plain`), so properties and context
    need only the quick look for phone-shaped runs (`may_hold_phone`)."""
    if not isinstance(data, dict):
        raise EventError("not_an_object", "event must be a JSON object")
    if not _TOP_FIELDS.issuperset(data):
        unknown = data.keys() - _TOP_FIELDS
        name = sorted(unknown)[0]
        raise EventError("unknown_field", f"unknown field {_named('', name)}")
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LEN:
        raise EventError("bad_event_id", "event_id must be a non-empty string of <= 200 chars")
    channel = data.get("channel")
    if not isinstance(channel, str):
        raise EventError("bad_channel", "channel must be a string")
    if channel not in CHANNELS:
        raise EventError("unknown_channel", "channel must be one of " + ", ".join(sorted(CHANNELS)))
    etype = data.get("type")
    if not isinstance(etype, str) or not etype or len(etype) > MAX_ID_LEN:
        raise EventError("bad_type", "type must be a non-empty string")
    ts_ms, offset = _parse_time(data.get("occurred_at"))
    identity, key = _check_identity(data.get("identity"), plain)
    properties = data.get("properties", {})
    if not isinstance(properties, dict):
        raise EventError("bad_properties", "properties must be an object")
    context = data.get("context", {})
    if not isinstance(context, dict):
        raise EventError("bad_context", "context must be an object")
    if (properties or context) and not (plain and not may_hold_phone(properties, context)):
        if properties:
            _check_pii(properties, "properties")
        if context:
            _check_pii(context, "context")
    return Event(event_id, data["occurred_at"], ts_ms, offset, channel, etype, identity,
                 properties, context, key)


def decode_event(raw: bytes | bytearray | memoryview | str | None) -> Event:
    """Decode and validate one message value; raise `EventError` with a reason otherwise."""
    if raw is None:
        raise EventError("empty", "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("oversized", f"message is larger than {MAX_EVENT_BYTES} bytes")
    try:
        data = loads(raw)
    except JSONDecodeError as exc:
        # orjson's message names a position, never echoes the payload.
        text = str(exc)
        reason = "invalid_utf8" if "utf-8" in text.lower() else "invalid_json"
        raise EventError(reason, f"not valid JSON: {text}") from None
    # JSON spells "@" as itself or as a \\u escape: with no "@", no backslash, no "%" and
    # only ASCII in the bytes, no decoded string holds an e-mail address
    plain = type(raw) is bytes and looks_plain(raw)
    if not plain or type(data) is not dict or not _TOP_FIELDS.issuperset(data):
        return parse_event(data, plain=plain)
    # The common case: `parse_event`'s checks on exact types (orjson makes no subclasses),
    # without its calls, fields read by subscript (cheaper than `dict.get`; a missing one
    # raises KeyError, an unhashable channel TypeError). Anything else, or any doubt, goes to
    # `parse_event`, which checks again from the start and words the error: the one source
    # of the rules. `_parse_time` raises here only what `parse_event` would raise first.
    try:
        properties = data["properties"]
    except KeyError:
        properties = {}
    try:
        context = data["context"]
    except KeyError:
        context = {}
    try:
        event_id = data["event_id"]
        channel = data["channel"]
        etype = data["type"]
        identity = data["identity"]
        occurred_at = data["occurred_at"]
        if (type(event_id) is not str or not event_id or len(event_id) > MAX_ID_LEN
                or channel not in CHANNELS
                or type(etype) is not str or not etype or len(etype) > MAX_ID_LEN
                or type(identity) is not dict or not identity
                or not _ID_NAMES.issuperset(identity) or not _HASHED_IDS.isdisjoint(identity)
                or type(properties) is not dict or type(context) is not dict):
            return parse_event(data, plain=True)
    except (KeyError, TypeError):
        return parse_event(data, plain=True)
    for value in identity.values():
        if type(value) is not str or not value or len(value) > MAX_ID_LEN:
            return parse_event(data, plain=True)
    ts_ms, offset = _parse_time(occurred_at)
    value = identity.get(_FIRST_ID)
    key = _FIRST_ID_PREFIX + value if value else _profile_key(identity)
    if (properties or context) and may_hold_phone(properties, context):
        return parse_event(data, plain=True)
    event = _new_event(Event)  # `event_from_fields`, inline: a call costs a frame (decisions)
    event.event_id = event_id
    event.occurred_at = occurred_at
    event.ts_ms = ts_ms
    event.utc_offset_min = offset
    event.channel = channel
    event.type = etype
    event.identity = identity
    event.properties = properties
    event.context = context
    event._key = key
    return event
