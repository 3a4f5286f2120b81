"""`decide(profile, event, context, rulebook)`: the one pure decision function.

Ownership: the caller hands the profile over; the returned `Outcome.profile` may be the same
object, updated in place (the worker and replay store what comes back). A duplicate (or too
late, see `Profile`) event leaves the profile untouched and returns it with `duplicate=True`.
A *late* one (older than `max_lateness` before the customer's newest event, and newer than the
idempotence floor, so provably never applied) is not applied either: `duplicate=True` as well
(nothing to store), `late=True`, and one audit record of kind `late` says what was lost.
`decide` has no clock, no I/O and no randomness: the same profile, event, context and rulebook
always give the same outcome, byte for byte once encoded with orjson.

Per event, in order: idempotence check; core types (`erasure_requested` erases the profile;
`consent_changed` records consent, last writer by event time wins; `action_response` counts the
response per action); then points, traits and window patterns of the rulebook (only those
indexed under the event's type); then the actions whose conditions hold are arbitrated under
the contact policy (policy.py). Responses and conversions are audited as `response` and
`attribution` records (attribution.py), before the event's own action records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from schemas.event import Event
from schemas.vocabulary import RESPONSES, Response
from service.domain.attribution import attribute, find_booked, response_record
from service.domain.audit import audit_record
from service.domain.conditions import Env
from service.domain.idring import ENTRY_BYTES, time_bytes
from service.domain.localtime import ZONE_PROPERTY, note_zone
from service.domain.policy import arbitrate, digest32, format_ms
from service.domain.profile import Profile, event_digest
from service.domain.rules import Rulebook

if TYPE_CHECKING:
    from service.domain.patterns import Pattern
    from service.domain.step import Control

__all__ = ["Effects", "Outcome", "decide"]

_NO_FIRED: frozenset[str] = frozenset()


_NONE: tuple[()] = ()


class Effects:
    """The effects of one input beyond actions and audit records (service/domain/step.py
    fills them; most events have none, so an `Outcome` carries None instead)."""

    __slots__ = ("controls", "feeds", "forward", "ignored", "notice", "tombstone")

    def __init__(self) -> None:
        self.forward: str | None = None  # the profile key to deliver the event to instead
        self.controls: Sequence[Control] = _NONE  # identity control records to send
        self.feeds: Sequence[tuple[str, str]] = _NONE  # (signal, group) pairs it counts in
        # dated before its customer's erasure: no state changes, one `ignored` audit record
        self.ignored = False
        self.tombstone = -1  # an erasure: the key's tombstone time to keep (-1: none)
        self.notice: dict[str, Any] | None = None  # an erasure: the `<prefix>.erasures` record


class Outcome:
    """What one event did: the new profile (None: erased), actions to send, audit records.

    A plain slotted class, cheaper to build per event than a dataclass with default factories
    (docs/decisions.md, "Small shapes on the per-event path"); the parts most events leave
    empty share one empty tuple instead of a fresh list each. `decisions` is a list: callers
    add records."""

    __slots__ = ("actions", "decisions", "duplicate", "effects", "late", "operations", "profile",
                 "responses")

    def __init__(self, profile: Profile | None, actions: Sequence[dict[str, Any]],
                 decisions: list[dict[str, Any]], duplicate: bool,
                 responses: Sequence[tuple[str, str, str]] = _NONE) -> None:
        self.profile = profile
        self.actions = actions
        self.decisions = decisions
        self.duplicate = duplicate
        # (action, segment, response) of an `action_response`, for cross-customer learning
        self.responses = responses
        # messages for `<prefix>.operations` (cross-customer signals; replay's caller sets it)
        self.operations: Sequence[dict[str, Any]] = _NONE
        self.effects: Effects | None = None  # forward, control records, signal feeds
        # not applied because it came too late (then `duplicate` is True too: nothing changed)
        self.late = False

    def __repr__(self) -> str:
        return (f"Outcome(actions={len(self.actions)}, decisions={len(self.decisions)}, "
                f"duplicate={self.duplicate})")


def decide(profile: Profile | None, event: Event, context: Mapping[str, Any],
           rulebook: Rulebook) -> Outcome:
    """Apply `event` to `profile` (None: a new profile keyed by `event.key()`) and decide."""
    etype = event.type
    if etype == "erasure_requested":
        return _erase(profile, event, rulebook)
    if profile is None:
        profile = Profile(event.key())
    digest = event_digest(event.event_id)
    seen = profile.seen  # an IdRing (a bytearray); its membership test inlined
    found = seen.find(digest)
    if found >= 0 and (not found % ENTRY_BYTES or seen.has(digest)):
        return Outcome(profile, _NONE, [], True)
    ts = event.ts_ms
    newest = profile.newest_ms
    horizon = newest - rulebook.max_lateness
    if profile.floor_ms >= horizon:  # at the floor's millisecond too (see profile.py)
        horizon = profile.floor_ms + 1
    if ts < horizon:  # too late to be sure it is new (or to count in its windows)
        return _before_horizon(profile, event, rulebook, digest)
    prior = None
    crossings = rulebook.crossings
    if crossings:  # `crosses` conditions: their values before this event
        before = Env(event, profile, context, _NO_FIRED)
        prior = tuple(get(before) for get in crossings)
    # profile.remember(), inlined: this is every event's path
    seen += digest + time_bytes(ts)
    if len(seen) > ENTRY_BYTES * rulebook.remember_events:
        profile.forget(rulebook.remember_events)
    if ts >= newest:
        profile.newest_ms = ts
        profile.tz_min = event.utc_offset_min
    if ZONE_PROPERTY in event.properties:  # the customer's IANA zone (localtime.py)
        note_zone(profile, event)
    responses: Sequence[tuple[str, str, str]] = _NONE
    audit: list[dict[str, Any]] = []
    if etype == "consent_changed":
        _consent(profile, event)
    elif etype == "action_response":
        responses = _note_response(profile, event, context, rulebook, audit)
    attribution = rulebook.attribution
    if attribution is not None and attribution.match.test(event):
        credited = attribute(profile, event, attribution, rulebook.version, rulebook.channels)
        if credited is not None:
            audit.append(credited)

    steps = rulebook.steps  # points, then traits (scoring.py's semantics, compiled.py)
    step = steps.by_type.get(etype, steps.any)
    if step is not None:
        step(profile, event)
    fired: frozenset[str] | set[str] = _NO_FIRED
    patterns = rulebook.patterns
    candidates = patterns.by_type.get(etype, patterns.any)
    if candidates:
        fired = _fire_patterns(profile, event, candidates, rulebook.max_lateness)

    actions = rulebook.actions if fired else rulebook.unprompted
    catalog = actions.by_type.get(etype, actions.any)
    if not catalog:
        return Outcome(profile, _NONE, audit, False, responses)
    env = Env(event, profile, context, fired)
    env.prior = prior
    eligible = []
    for action in catalog:
        if action.when.test(env):
            eligible.append(action)
    if not eligible:
        return Outcome(profile, _NONE, audit, False, responses)
    sent, records = arbitrate(env, eligible, rulebook.policy, rulebook.version)
    return Outcome(profile, sent, audit + records if audit else records, False, responses)


def _fire_patterns(profile: Profile, event: Event, candidates: tuple[Pattern, ...],
                   max_lateness: int) -> frozenset[str] | set[str]:
    """Advance the window patterns that look at this event's type (their windows forget what
    is older than the lateness horizon); the names of those that fire on it."""
    fired: frozenset[str] | set[str] = _NO_FIRED
    floor = profile.newest_ms - max_lateness
    if profile.floor_ms > floor:
        floor = profile.floor_ms
    for pattern in candidates:  # (a loop: a set comprehension's frame costs more)
        if pattern.update(profile, event, floor):
            fired = {*fired, pattern.name}
    return fired


def _before_horizon(profile: Profile, event: Event, rulebook: Rulebook, digest: bytes
                    ) -> Outcome:
    """An event older than the profile's horizon: a consent change still applies (last
    writer by event time); one at or before the floor may be a forgotten redelivery (a
    duplicate); any other is late."""
    if event.type == "consent_changed":
        profile.remember(digest, event.ts_ms, rulebook.remember_events)
        _consent(profile, event)
        return Outcome(profile, _NONE, [], False)
    if event.ts_ms <= profile.floor_ms:  # may be a forgotten redelivery: "too late to be sure"
        return Outcome(profile, _NONE, [], True)
    return _late(profile, event, rulebook)


def _note_response(profile: Profile, event: Event, context: Mapping[str, Any],
                   rulebook: Rulebook, audit: list[dict[str, Any]]
                   ) -> Sequence[tuple[str, str, str]]:
    """Record a response to an earlier action (its audit record goes to `audit`); return it
    as (action, segment, response) for learning, or nothing when learning is off."""
    answered = _response(profile, event, rulebook)
    if answered is None:
        return _NONE
    audit.append(answered[2])
    learning = rulebook.policy.learning
    if learning is None:
        return _NONE
    segment = learning.segment(Env(event, profile, context, _NO_FIRED))
    return [(answered[0], segment, answered[1])]


def _erase(profile: Profile | None, event: Event, rulebook: Rulebook) -> Outcome:
    subject = profile if profile is not None else Profile(event.key())
    record = audit_record(
        digest32(subject.key, "erasure", event.event_id, rulebook.version), "erasure",
        subject.customer_id, event.event_id, rulebook.version, event.occurred_at, "erased",
        [f"erasure requested by event {event.event_id}"])
    return Outcome(None, _NONE, [record], False)


def _late(profile: Profile, event: Event, rulebook: Rulebook) -> Outcome:
    """An event the profile provably never applied (newer than its idempotence floor) that is
    older than the lateness horizon: dropped, with an audit record saying so."""
    lateness = format_ms(rulebook.max_lateness)
    record = audit_record(
        digest32(profile.key, "late", event.event_id, rulebook.version), "late",
        profile.customer_id, event.event_id, rulebook.version, event.occurred_at, "late",
        [f"event time is more than {lateness} (max_lateness) before the customer's newest "
         f"event ({(profile.newest_ms - event.ts_ms) / 3_600_000:.1f}h earlier): dropped, "
         "not applied"])
    outcome = Outcome(profile, _NONE, [record], True)
    outcome.late = True
    return outcome


def _consent(profile: Profile, event: Event) -> None:
    props = event.properties
    granted = props.get("granted")
    if not isinstance(granted, bool):
        return
    for kind in ("channel", "purpose"):
        name = props.get(kind)
        if isinstance(name, str) and name:
            key = f"{kind}:{name}"
            current = profile.consent.get(key)
            if current is None or event.ts_ms >= current[1]:
                profile.consent[key] = [granted, event.ts_ms]


def _response(profile: Profile, event: Event, rulebook: Rulebook
              ) -> tuple[str, str, dict[str, Any]] | None:
    """Count an `action_response` for the action it names; (action, response, audit record)."""
    props = event.properties
    response = props.get("response")
    if not isinstance(response, str) or response not in RESPONSES:  # (a list is unhashable)
        return None
    name = None
    action_id = props.get("action_id")
    entry = find_booked(profile, action_id) if isinstance(action_id, str) else None
    if entry is not None:
        name = str(entry[1])
    else:
        named = props.get("action")
        name = named if isinstance(named, str) and named in rulebook.action_names else None
    if name is None:
        return None
    counts = profile.responses.setdefault(name, {})
    counts[response] = counts.get(response, 0) + 1
    record = response_record(profile, event, rulebook.version, name, rulebook.channels.get(name),
                             entry, cast(Response, response))
    return name, str(response), record
