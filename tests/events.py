"""The one way tests build touchpoint events: `event_dict` writes the wire contract's JSON
object, and every other builder here is a shape of it.

- `make_event(...)`: the decoded `Event`, through the production decoder (`parse_event`);
- `wire(...)`: the same event as bytes, what a producer puts on `<prefix>.events` or a log
  line holds;
- `log_line(event_id, customer, etype, ...)`: a customer's event as bytes, by position (logs);
- `keyed(event_id, etype, minute, **identity)` and `keyed_event(...)`: an event under given
  identifiers (identity, erasure), as bytes or decoded;
- `unchecked_event(...)`: an `Event` built without the decoder, for property tests whose
  random properties the decoder's personal-data check could refuse;
- `chained_identities(person)`: the erasure tests' story of one customer under three
  identifiers, as `keyed` arguments.

Times are ISO-8601 strings: `at_minute` (minutes past a given hour of 2026-03-02, rolling
over into the next hours) and `at_ms` (epoch milliseconds, UTC).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson

from schemas.event import Event, parse_event

__all__ = ["DAY", "at_minute", "at_ms", "chained_identities", "event_dict", "keyed",
           "keyed_event", "log_line", "make_event", "unchecked_event", "wire"]

DAY = "2026-03-02"
_ids = itertools.count(1)


def at_minute(minute: int, *, hour: int = 9, offset: str = "Z") -> str:
    """`DAY` at `hour`:00 plus `minute` minutes (past 59 they roll into the next hours), in
    the given UTC offset ("Z", "+09:00")."""
    extra, minute = divmod(minute, 60)
    return f"{DAY}T{hour + extra:02d}:{minute:02d}:00{offset}"


def at_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 in UTC, with the milliseconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{stamp}.{ms % 1000:03d}+00:00"


def event_dict(type: str = "page_viewed", *, event_id: str | None = None,
               at: str = f"{DAY}T12:00:00+00:00", channel: str = "web", customer: str = "c-1",
               identity: dict[str, str] | None = None, props: dict[str, Any] | None = None,
               **properties: Any) -> dict[str, Any]:
    """A valid event as the wire contract's JSON object (a fresh event_id unless given).
    `identity` replaces the default `{"customer_id": customer}`; `props` holds properties
    whose names clash with the arguments (e.g. a consent event's `channel`)."""
    return {
        "event_id": event_id or f"t-{next(_ids)}",
        "occurred_at": at,
        "channel": channel,
        "type": type,
        "identity": {"customer_id": customer} if identity is None else identity,
        "properties": {**properties, **(props or {})},
    }


def make_event(type: str = "page_viewed", **fields: Any) -> Event:
    """`event_dict(type, **fields)` decoded as the worker decodes it."""
    return parse_event(event_dict(type, **fields))


def wire(type: str = "page_viewed", **fields: Any) -> bytes:
    """`event_dict(type, **fields)` as JSON bytes."""
    return orjson.dumps(event_dict(type, **fields))


def log_line(event_id: str, customer: str, etype: str = "page_viewed", *, minute: int = 0,
         at: str | None = None, channel: str = "web", **properties: Any) -> bytes:
    """One customer's event as bytes: at `at`, else `minute` minutes past 09:00 (+09:00)."""
    return wire(etype, event_id=event_id, customer=customer, channel=channel,
                at=at or at_minute(minute, offset="+09:00"), props=properties)


def keyed(event_id: str, etype: str, minute: int = 0, *, at: str | None = None,
          **identity: str) -> bytes:
    """An event on the web under exactly `identity`'s identifiers, without properties: at
    `at`, else `minute` minutes past 09:00 UTC."""
    return wire(etype, event_id=event_id, at=at or at_minute(minute), identity=identity)


def keyed_event(event_id: str, etype: str, minute: int = 0, **identity: str) -> Event:
    """`keyed(...)`, decoded."""
    return make_event(etype, event_id=event_id, at=at_minute(minute), identity=identity)


def unchecked_event(type: str, *, event_id: str, ts_ms: int, channel: str = "web",
                    customer: str = "c-1", properties: dict[str, Any] | None = None) -> Event:
    """An `Event` at `ts_ms` built directly, without the decoder's validation."""
    return Event(event_id, at_ms(ts_ms), ts_ms, 0, channel, type, {"customer_id": customer},
                 properties or {}, {}, f"customer_id:{customer}")


def chained_identities(person: dict[str, str]
                       ) -> tuple[list[tuple[str, str, int, dict[str, str]]],
                                  tuple[str, str, int, dict[str, str]]]:
    """One customer's inputs as `(event_id, etype, minute, identity)`: a ping under each of
    `person`'s `anonymous_id`, `loyalty_id` and `customer_id`, two logins chaining cookie ->
    loyalty card -> customer, a ping and a report; and, apart, the erasure at minute 20."""
    anonymous = {"anonymous_id": person["anonymous_id"]}
    loyalty = {"loyalty_id": person["loyalty_id"]}
    customer = {"customer_id": person["customer_id"]}
    inputs = [("i1", "ping", 1, anonymous), ("i2", "ping", 2, loyalty),
              ("i3", "ping", 3, customer), ("i4", "identified", 4, {**loyalty, **anonymous}),
              ("i5", "identified", 5, {**customer, **loyalty}), ("i6", "ping", 6, anonymous),
              ("i7", "report", 7, customer)]
    return inputs, ("bye", "erasure_requested", 20, customer)
