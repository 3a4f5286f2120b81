"""Erasure tombstones: what remains of an erased customer, and nothing personal.

An erasure removes the profile and every alias redirecting to it, and leaves, per identifier
key, a *tombstone*: the key's digest and the erasure time (`erased_ms`, the later of the
erasure event's time and the newest event the profile had applied). Any input for that key
dated at or before `erased_ms` -- a producer's retry of last week's visit, a link or merge
control record from a login before the erasure -- is ignored and audited as `ignored`
(reason `erased`); a later one starts a fresh profile that keeps `erased_ms`, so it ignores
those inputs too. A tombstone is kept until the partition's event time passes `erased_ms` by
the rulebook's maximum lateness plus a margin (a setting): older inputs would be dropped as
too late by a profile anyway.

The digest is keyed BLAKE2b (16 bytes) of the profile key, so the store and the changelog
hold no identifier; whoever knows the key can find its tombstone (that is what it is for).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from service.domain.audit import audit_record
from service.domain.fields import digest32

if TYPE_CHECKING:
    from service.domain.rules import Rulebook

__all__ = ["IGNORED_REASON", "Tombstones", "erasure_notice", "ignored_record", "key_digest"]

IGNORED_REASON = "erased"
_PERSON = b"tf-erasure"


def key_digest(key: str) -> str:
    """The 32 hex digits a tombstone (and the erasures topic) names a profile key by."""
    return blake2b(key.encode(), digest_size=16, person=_PERSON).hexdigest()


class Tombstones:
    """One partition's tombstones: key digest -> erasure time, and which changed since the
    driver last wrote them (`pending`: digest -> time, or None once expired)."""

    __slots__ = ("_by_digest", "_next_expiry", "pending", "watermark")

    def __init__(self) -> None:
        self._by_digest: dict[str, int] = {}
        self._next_expiry = 1 << 62  # the oldest erasure time held (none: never)
        self.pending: dict[str, int | None] = {}
        self.watermark = -1  # the newest event time this partition applied

    def __len__(self) -> int:
        return len(self._by_digest)

    def load(self, digest: str, erased_ms: int) -> None:
        """A stored tombstone (recovery): held, not pending."""
        self._by_digest[digest] = erased_ms
        self._next_expiry = min(self._next_expiry, erased_ms)

    def erased_ms(self, key: str) -> int:
        """The erasure time of `key` (-1: no tombstone)."""
        if not self._by_digest:
            return -1
        return self._by_digest.get(key_digest(key), -1)

    def mark(self, key: str, erased_ms: int) -> None:
        """Record (or move later) the tombstone of `key`."""
        digest = key_digest(key)
        if erased_ms > self._by_digest.get(digest, -1):
            self._by_digest[digest] = erased_ms
            self.pending[digest] = erased_ms
            self._next_expiry = min(self._next_expiry, erased_ms)

    def advance(self, ts_ms: int, horizon_ms: int) -> None:
        """The partition applied an event at `ts_ms`: drop the tombstones older than
        `horizon_ms` before its newest event time (marked pending as None)."""
        if ts_ms <= self.watermark:
            return
        self.watermark = ts_ms
        limit = ts_ms - horizon_ms
        if limit <= self._next_expiry:
            return
        expired = [digest for digest, at in self._by_digest.items() if at < limit]
        for digest in expired:
            del self._by_digest[digest]
            self.pending[digest] = None
        self._next_expiry = min(self._by_digest.values(), default=1 << 62)

    def items(self) -> list[tuple[str, int]]:
        """(digest, erasure time) of every tombstone held, sorted (comparisons, tests)."""
        return sorted(self._by_digest.items())


def ignored_record(key: str, kind: str, trigger_id: str, occurred_at: str,
                   erased_ms: int, rulebook: Rulebook) -> dict[str, Any]:
    """The audit record of an input dated before its customer's erasure: it names the key
    by digest only (the customer is erased) and says what was ignored."""
    digest = key_digest(key)
    return audit_record(
        digest32(digest, "ignored", kind, trigger_id, rulebook.version), "erasure",
        f"erased:{digest}", trigger_id, rulebook.version, occurred_at, "ignored",
        [f"{IGNORED_REASON}: this {kind} is dated at or before the customer's erasure "
         f"({erased_ms} ms since the epoch)"], suppressed_by=IGNORED_REASON)


def erasure_notice(key: str, identifiers: list[str], erased_ms: int, event_id: str,
                   occurred_at: str) -> dict[str, Any]:
    """The record for `<prefix>.erasures`: what services downstream must erase too."""
    return {
        "key_digest": key_digest(key),
        "identifiers": [_identifier(item) for item in identifiers],
        "erased_ms": erased_ms,
        "requested_at": occurred_at,
        "trigger_event_id": event_id,
    }


def _identifier(key: str) -> dict[str, str]:
    field, _, value = key.partition(":")
    return {"field": field, "value": value, "digest": key_digest(key)}
