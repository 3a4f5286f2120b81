"""The per-customer state record: small, versioned, and everything `decide()` needs.

Idempotence. A profile remembers the ids of the last `remember_events` events applied to it
(`event_digest`: an 8-byte XXH3 digest of each id, with the event's time; idring.py), so a
redelivered event is recognised and changes nothing. When an id is forgotten (pushed out by
newer arrivals), its event time raises `floor_ms`, the newest event time ever forgotten. An
event that is not remembered but whose time lies at or *before* `floor_ms` cannot be told
apart from a forgotten redelivery, so it is treated as a duplicate too ("too late to be
sure"): an event is applied at most once, always. Any event newer than `floor_ms` (in
practice: later than about the last `remember_events` events of this customer) is applied,
also when it is older than the newest one seen, and counts in the windows it belongs to.
The floor's own millisecond counts as forgotten, so a redelivery at the floor cannot cascade
into applying older events twice (docs/decisions.md, "The idempotence floor is inclusive").

Serialised form (`to_bytes`): orjson of a dict with `"v": 2` and short keys, the id ring as
base64 of its buffer (per id, the digest and a little-endian int64 time); unknown versions are
refused by `from_bytes` with a `ProfileFormatError`. Version 1 (ids digested with BLAKE2b;
docs/decisions.md, "Remembered event ids") is still read: its digests cannot be compared with new
ones, so they are dropped and `floor_ms` moves to the newest of their times, which makes
every event up to that time "too late to be sure" - a redelivery of an event from before
the upgrade is skipped, never applied twice.
The customer's time zone (`tz`: IANA name, source rank, event time) was added to format 2 as
an optional part: profiles stored before it read as "zone not known" (the offset fallback).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_64_digest

from schemas.codec import JSONDecodeError, dumps_str_keys, loads
from service.domain.idring import IdRing

__all__ = ["PROFILE_VERSION", "Profile", "ProfileFormatError", "event_digest"]

PROFILE_VERSION = 2
_READABLE = frozenset({1, PROFILE_VERSION})
#: Stored parts read back by `from_bytes`: (key, attribute, constructor).
_PARTS: tuple[tuple[str, str, Callable[[Any], object]], ...] = (
    ("s", "scores", dict), ("h", "hits", dict), ("t", "traits", dict), ("w", "windows", dict),
    ("a", "sent", dict), ("q", "recent", list), ("o", "consent", dict),
    ("x", "responses", dict), ("d", "redirect", str),
    ("l", "links", lambda keys: [str(key) for key in keys]),
)
_V1_ENTRY = 14  # version 1 id ring: 8-byte digest + 6-byte big-endian event time, interleaved


def event_digest(event_id: str) -> bytes:
    """The 8 bytes a profile remembers an applied event id by."""
    return xxh3_64_digest(event_id.encode())


class ProfileFormatError(ValueError):
    """Stored bytes that are not a profile this code can read."""


class Profile:
    """Mutable state of one customer. `decide()` takes ownership and returns it updated."""

    __slots__ = (
        "cid",
        "consent",
        "erased_ms",
        "floor_ms",
        "hits",
        "key",
        "links",
        "newest_ms",
        "recent",
        "redirect",
        "responses",
        "scores",
        "seen",
        "sent",
        "sref_ms",
        "traits",
        "tz_min",
        "tz_ms",
        "tz_name",
        "tz_rank",
        "windows",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.cid: str | None = key[12:] if key.startswith("customer_id:") else None
        self.newest_ms = -1  # newest event time applied
        self.tz_min = 0  # UTC offset of the newest event: the customer's time zone
        self.seen = IdRing()  # event-id digests and their event times, arrival order
        self.floor_ms = -1  # newest event time among forgotten ids
        self.scores: dict[str, float] = {}
        self.sref_ms = -1  # the time decayed scores are expressed at
        self.hits: dict[str, int] = {}  # "score/rule" -> matches so far
        self.traits: dict[str, Any] = {}
        self.windows: dict[str, list[list[Any]]] = {}  # pattern -> [[ts, group(, step)]...]
        self.sent: dict[str, list[int]] = {}  # action -> [last sent ts, times sent]
        self.recent: list[list[Any]] = []  # [[ts, action, action_id]] for cap and responses
        self.consent: dict[str, list[Any]] = {}  # "channel:sms"/"purpose:x" -> [granted, ts]
        self.responses: dict[str, dict[str, int]] = {}  # action -> response -> count
        self.redirect: str | None = None  # an alias: the profile key it was merged into
        self.links: list[str] = []  # alias keys merged into this profile (bounded)
        self.erased_ms = -1  # a fresh profile after an erasure: inputs up to this time ignored
        # the customer's IANA zone from their events, its source's rank and event time
        # (service/domain/localtime.py); None: not known, the offset above is the fallback
        self.tz_name: str | None = None
        self.tz_rank = 0
        self.tz_ms = -1

    @classmethod
    def new(cls, key: str) -> Profile:
        """An empty profile for the profile key `key` (e.g. `customer_id:c-42`)."""
        return cls(key)

    @property
    def customer_id(self) -> str:
        """The customer id if known, else the profile key."""
        return self.cid if self.cid is not None else self.key

    # -- idempotence ------------------------------------------------------------------------

    def remember(self, digest: bytes, ts_ms: int, limit: int) -> None:
        """Record an applied event id, forgetting the oldest arrivals beyond `limit`."""
        seen = self.seen
        seen.add(digest, ts_ms)
        if seen.size() > limit:
            self.forget(limit)

    def forget(self, limit: int) -> None:
        """Forget the oldest arrivals beyond `limit`, raising `floor_ms` to their times."""
        forgotten = self.seen.forget(limit)
        if forgotten > self.floor_ms:
            self.floor_ms = forgotten

    def clone(self) -> Profile:
        """An independent copy (every nested list and dict copied): what an event that fails
        half-way is rolled back to. Several times cheaper than a round trip through bytes."""
        other = Profile.__new__(Profile)
        other.key, other.cid, other.redirect = self.key, self.cid, self.redirect
        other.newest_ms, other.tz_min = self.newest_ms, self.tz_min
        other.floor_ms, other.sref_ms = self.floor_ms, self.sref_ms
        other.erased_ms = self.erased_ms
        other.seen = IdRing(self.seen)
        other.scores = dict(self.scores)
        other.hits = dict(self.hits)
        other.traits = {k: _deep(v) for k, v in self.traits.items()}
        other.windows = {k: [_deep(e) for e in v] for k, v in self.windows.items()}
        other.sent = {k: list(v) for k, v in self.sent.items()}
        other.recent = [list(e) for e in self.recent]
        other.consent = {k: list(v) for k, v in self.consent.items()}
        other.responses = {k: dict(v) for k, v in self.responses.items()}
        other.links = list(self.links)
        other.tz_name, other.tz_rank, other.tz_ms = self.tz_name, self.tz_rank, self.tz_ms
        return other

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The versioned, JSON-ready form (empty parts left out)."""
        out: dict[str, Any] = {"v": PROFILE_VERSION, "k": self.key}
        if self.cid is not None and not self.key.startswith("customer_id:"):
            out["c"] = self.cid
        out["n"] = self.newest_ms
        if self.tz_min:
            out["z"] = self.tz_min
        if self.seen:  # the id ring (idring.py): per id, its digest and its time
            # (what base64.b64encode returns, without its Python-level call)
            out["r"] = binascii.b2a_base64(self.seen, newline=False).decode("ascii")
        if self.floor_ms >= 0:
            out["f"] = self.floor_ms
        if self.scores:
            out["s"] = self.scores
        if self.hits:
            out["h"] = self.hits
        if self.traits:
            out["t"] = self.traits
        if self.windows:
            out["w"] = self.windows
        if self.sent:
            out["a"] = self.sent
        if self.recent:
            out["q"] = self.recent
        if self.consent:
            out["o"] = self.consent
        if self.responses:
            out["x"] = self.responses
        if self.scores and self.sref_ms >= 0:
            out["sr"] = self.sref_ms
        if self.redirect is not None:
            out["d"] = self.redirect
        if self.links:
            out["l"] = self.links
        if self.erased_ms >= 0:
            out["e"] = self.erased_ms
        if self.tz_name is not None:
            out["tz"] = [self.tz_name, self.tz_rank, self.tz_ms]
        return out

    def to_bytes(self) -> bytes:
        """Compact JSON bytes; `from_bytes(p.to_bytes())` gives an equal profile."""
        return dumps_str_keys(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        """Read stored bytes; raise `ProfileFormatError` for a format this code cannot read."""
        try:
            raw = loads(data)
        except JSONDecodeError as exc:
            raise ProfileFormatError(f"stored profile is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ProfileFormatError("stored profile is not a JSON object")
        version = raw.get("v")
        if version not in _READABLE:
            raise ProfileFormatError(
                f"stored profile has format version {version!r}; this code reads versions "
                f"1 and {PROFILE_VERSION} (upgrade the worker, or rebuild state by replay)"
            )
        try:
            return cls._from_dict(raw, version)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileFormatError(f"stored profile is malformed: {exc!r}") from None

    @classmethod
    def _from_dict(cls, raw: dict[str, Any], version: int) -> Profile:
        profile = cls(str(raw["k"]))
        if "c" in raw:
            profile.cid = str(raw["c"])
        profile.newest_ms = int(raw["n"])
        profile.tz_min = int(raw.get("z", 0))
        profile.floor_ms = int(raw.get("f", -1))
        ring = base64.b64decode(raw.get("r", ""))
        if version == 1:  # BLAKE2b digests: keep only their time bound
            if len(ring) % _V1_ENTRY:
                raise ValueError("id ring has a partial entry")
            if ring:
                newest = max(int.from_bytes(ring[start + 8:start + _V1_ENTRY], "big")
                             for start in range(0, len(ring), _V1_ENTRY))
                profile.floor_ms = max(profile.floor_ms, newest)  # (the floor is inclusive)
        elif ring:
            profile.seen = IdRing.from_stored(ring)
        profile.sref_ms = int(raw.get("sr", -1))
        profile.erased_ms = int(raw.get("e", -1))
        for name, attr, build in _PARTS:  # parts left out when empty keep the fresh ones
            part = raw.get(name)
            if part is not None:
                setattr(profile, attr, build(part))
        zone = raw.get("tz")  # absent in profiles stored before time zones were held
        if zone is not None:
            profile.tz_name, profile.tz_rank, profile.tz_ms = str(zone[0]), int(zone[1]), int(
                zone[2])
        return profile

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Profile({self.key!r}, events={self.seen.size()}, newest_ms={self.newest_ms})"


def _deep(value: Any) -> Any:
    """A copy of a JSON-shaped value (lists and dicts copied at every depth)."""
    if isinstance(value, list):
        return [_deep(item) for item in value]
    if isinstance(value, dict):
        return {key: _deep(item) for key, item in value.items()}
    return value
