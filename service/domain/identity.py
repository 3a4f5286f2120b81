"""Identity stitching: pure link and merge steps shared by the worker and replay.

A person may reach us under several identifiers; each identifier key (`<field>:<value>`) hashes
to its own Kafka partition. An `identified` event carries several of them and is processed at
the partition of its highest-priority key, the *canonical* key C. For every other key L in it:

1. **link** (at L's partition): if L is unknown or a plain profile, it becomes a *redirect*
   to C and its whole history travels to C in a merge record; if L already redirects to C,
   nothing happens (idempotent); if L redirects to another key, the link is refused
   (a loyalty card claimed by two customers) and dead-lettered, never merged silently.
2. **merge** (at C's partition): the alias history is folded into C by `merge_profiles`,
   once: C remembers L in `links`, so a redelivered merge changes nothing.

Events arriving under L after step 1 are forwarded to C, *after* the merge record (same
producer, same partition), so C applies the merge before them; events L received before step 1
are part of the merged history. The union of seen event ids keeps every event counted once,
whichever identity it was delivered under. A profile holds at most `MAX_LINKS` aliases; links
beyond are refused with an audit record saying so.

Merge semantics (`merge_profiles`): as if both histories had been one customer's from the start
-- event-id sets united; hit counters added, and each score corrected by the rule payments the
combined counters imply (a `max_times: 1` rule pays once, an `nth: 2` rule pays when the
counts together reach 2); decayed scores are brought to the later reference time before they
are added; traits combined by kind (last: the newer value; count/sum: added; max/min; mean:
sums and counts added; distinct: united, newest kept; windowed: entries united; top: counts
added); pattern windows, sent-action history,
consent (newer statement wins) and response counters united. Merging evaluates no action: the
next event of the person does, with the merged profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.event import Event
from schemas.vocabulary import IDENTIFIER_FIELDS
from service.domain.audit import audit_record
from service.domain.idring import IdRing
from service.domain.localtime import merge_zone
from service.domain.policy import digest32
from service.domain.profile import Profile
from service.domain.rules import Rulebook
from service.domain.scoring import awarded
from service.domain.windowed import merge_top, merge_window

__all__ = [
    "MAX_LINKS",
    "LinkPlan",
    "alias_keys",
    "merge_profiles",
    "merge_record",
    "plan_link",
    "refusal_record",
]

MAX_LINKS = 50
_SEPARATOR = ":"


def alias_keys(event: Event) -> list[str]:
    """The other identifier keys an `identified` event links to its canonical key."""
    if event.type != "identified":
        return []
    canonical = event.key()
    keys = []
    for name in IDENTIFIER_FIELDS:
        value = event.identity.get(name)
        if value:
            key = f"{name}{_SEPARATOR}{value}"
            if key != canonical:
                keys.append(key)
    return keys


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """What the alias partition does with a link request.

    `kind`: "noop" (already linked to that canonical), "refuse" (linked elsewhere), or
    "merge" (send `history` to the canonical key and keep `redirect` under the alias key).
    """

    kind: str
    redirect: Profile | None = None
    history: Profile | None = None
    reason: str = ""


def plan_link(alias: str, alias_profile: Profile | None, canonical: str) -> LinkPlan:
    """Decide a link of `alias` to `canonical` from the alias's current state (pure)."""
    if alias == canonical:
        return LinkPlan("noop")
    if alias_profile is not None and alias_profile.redirect is not None:
        if alias_profile.redirect == canonical:
            return LinkPlan("noop")
        field = alias.split(_SEPARATOR, 1)[0]
        return LinkPlan("refuse", reason=f"{field} is already linked to another profile")
    redirect = Profile(alias)
    redirect.redirect = canonical
    if alias_profile is not None:
        redirect.erased_ms = alias_profile.erased_ms
    return LinkPlan("merge", redirect=redirect, history=alias_profile)


def _copy(profile: Profile) -> Profile:
    return Profile.from_bytes(profile.to_bytes())


def merge_profiles(base: Profile, alias: str, other: Profile | None,
                   rulebook: Rulebook) -> tuple[Profile, bool]:
    """Fold the history of `alias` (`other`, None when it had none) into `base`.

    Returns the merged profile (a new object) and False when the alias was merged before
    (idempotent: the profile is returned unchanged) or the link limit is reached.
    """
    if alias in base.links or len(base.links) >= MAX_LINKS:
        return base, False
    merged = _copy(base)
    merged.links.append(alias)
    if other is None:
        return merged, True
    merged.erased_ms = max(merged.erased_ms, other.erased_ms)
    for key in other.links:
        if key not in merged.links and key != merged.key and len(merged.links) < MAX_LINKS:
            merged.links.append(key)
    _merge_ids(merged, other, rulebook.remember_events)
    _merge_scores(merged, other, rulebook)
    _merge_traits(merged, other, rulebook)
    for name, window in other.windows.items():
        mine = merged.windows.setdefault(name, [])
        known = {tuple(_hashable(x) for x in entry) for entry in mine}
        mine.extend(entry for entry in window
                    if tuple(_hashable(x) for x in entry) not in known)
        mine.sort(key=lambda entry: entry[0])
    for name, (last, times) in other.sent.items():
        current = merged.sent.get(name)
        merged.sent[name] = [last, times] if current is None else [
            max(current[0], last), current[1] + times]
    seen_actions = {entry[2] for entry in merged.recent}
    merged.recent.extend(entry for entry in other.recent if entry[2] not in seen_actions)
    merged.recent.sort(key=lambda entry: (entry[0], entry[2]))
    for key, statement in other.consent.items():
        current = merged.consent.get(key)
        if current is None or statement[1] > current[1]:
            merged.consent[key] = statement
    for name, counts in other.responses.items():
        mine_counts = merged.responses.setdefault(name, {})
        for response, count in counts.items():
            mine_counts[response] = mine_counts.get(response, 0) + count
    if other.newest_ms > merged.newest_ms:
        merged.newest_ms = other.newest_ms
        merged.tz_min = other.tz_min
    merge_zone(merged, other)
    return merged, True


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _merge_ids(merged: Profile, other: Profile, limit: int) -> None:
    union = dict(merged.seen.items())
    for digest, ts in other.seen.items():
        union.setdefault(digest, ts)
    ordered = sorted(union.items(), key=lambda item: item[1])
    merged.seen = IdRing()
    merged.floor_ms = max(merged.floor_ms, other.floor_ms)
    for digest, ts in ordered:
        merged.remember(digest, ts, limit)


def _merge_scores(merged: Profile, other: Profile, rulebook: Rulebook) -> None:
    specs = rulebook.model.scores
    sref = max(merged.sref_ms, other.sref_ms)
    for name, spec in specs.items():
        mine = merged.scores.get(name, 0.0)
        theirs = other.scores.get(name, 0.0)
        if spec.half_life and sref >= 0:
            if merged.sref_ms >= 0 and mine:
                mine *= 0.5 ** ((sref - merged.sref_ms) / spec.half_life)
            if other.sref_ms >= 0 and theirs:
                theirs *= 0.5 ** ((sref - other.sref_ms) / spec.half_life)
        value = mine + theirs
        for index, rule in enumerate(spec.points):
            label = rule.name or f"rule{index + 1}"
            key = f"{name}/{label}"
            a, b = merged.hits.get(key, 0), other.hits.get(key, 0)
            if not b:
                continue
            limit = rule.nth or rule.max_times
            together = a + b if limit is None else min(a + b, limit)
            correction = (awarded(together, rule.max_times, rule.nth)
                          - awarded(a, rule.max_times, rule.nth)
                          - awarded(b, rule.max_times, rule.nth))
            if correction and rule.per is None:
                value += correction * rule.add
            merged.hits[key] = together
        if spec.cap is not None and value > spec.cap:
            value = spec.cap
        if spec.floor is not None and value < spec.floor:
            value = spec.floor
        if name in merged.scores or name in other.scores or value:
            merged.scores[name] = float(value)
    if any(spec.half_life for spec in specs.values()):
        merged.sref_ms = sref


def _merge_traits(merged: Profile, other: Profile, rulebook: Rulebook) -> None:
    for name, spec in rulebook.model.traits.items():
        theirs = other.traits.get(name)
        if theirs is None:
            continue
        mine = merged.traits.get(name)
        if mine is None:
            merged.traits[name] = theirs
            continue
        kind = spec.kind
        if spec.within is not None:  # windowed: entries united, trimmed (windowed.py)
            if isinstance(mine, list) and isinstance(theirs, list):
                merged.traits[name] = merge_window(
                    mine, theirs, max(merged.newest_ms, other.newest_ms), spec.within, spec.keep)
        elif kind == "top":
            if isinstance(mine, list) and isinstance(theirs, list):
                merged.traits[name] = merge_top(mine, theirs, spec.max_items)
        elif kind == "last":
            if theirs[1] > mine[1]:
                merged.traits[name] = theirs
        elif kind in ("count", "sum"):
            merged.traits[name] = mine + theirs
        elif kind == "max":
            merged.traits[name] = max(mine, theirs)
        elif kind == "min":
            merged.traits[name] = min(mine, theirs)
        elif kind == "mean":
            merged.traits[name] = [mine[0] + theirs[0], mine[1] + theirs[1]]
        else:  # distinct
            items = list(mine) + [item for item in theirs if item not in mine]
            merged.traits[name] = items[-spec.max_items:]


def merge_record(profile: Profile, alias: str, event_id: str, occurred_at: str,
                 rulebook: Rulebook) -> dict[str, Any]:
    """The audit record of a merge (names the alias's identifier field, not its value)."""
    field = alias.split(_SEPARATOR, 1)[0]
    reason = (f"merged the history of a linked {field} ({len(profile.links)} of at most "
              f"{MAX_LINKS} linked identifiers)")
    return audit_record(digest32(profile.key, "merge", event_id, reason, rulebook.version),
                        "merge", profile.customer_id, event_id, rulebook.version, occurred_at,
                        "merged", [reason])


def refusal_record(profile_key: str, customer_id: str, event_id: str, occurred_at: str,
                   rulebook: Rulebook, reason: str) -> dict[str, Any]:
    """The audit record of a refused link (conflict, or the identifier limit reached)."""
    return audit_record(
        digest32(profile_key, "identity_refused", event_id, reason, rulebook.version),
        "identity_refused", customer_id, event_id, rulebook.version, occurred_at, "refused",
        [reason])
