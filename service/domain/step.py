"""The per-input step: what one event or one identity control record does to the state it is
addressed to, and every effect it has. The worker's processor and replay both drive it.

Pure: no Kafka, no clock, no I/O. A driver looks the profile up under the input's profile key,
calls `step_event` or `step_control`, keeps what comes back and carries out the effects:

- an event under an alias that was merged into another profile is *forwarded* to that
  profile's key (`Outcome.effects.forward`); the driver delivers it there (the worker through
  the repartition topic, replay in process), where the same step applies it;
- an event that reached a profile key other than its own (forwarded) starts that profile;
- `decide()` runs; its exceptions propagate: the driver restores the profile as it was before
  the event (events are atomic) and dead-letters or counts it;
- after an `identified` event, one `link` control record per new identifier (refusal records
  beyond `MAX_LINKS`); after an erasure, one `erase` record per linked identifier, naming every
  key of the erased profile, so an alias of an alias (anonymous -> loyalty -> customer) is
  erased too;
- the (signal, group) pairs the event counts in, for the cross-customer signal counters;
- the responses learned from go to the partition's `LearningState` (the driver's, by
  partition, as both keep it).

Control records (`link`, `merge`, `erase`) are applied by `step_control`, at the partition
that owns the key they are addressed to (service/domain/identity.py has the protocol).

Erasure (service/domain/erasure.py): the driver passes the key's tombstone time when it holds
no profile; an input dated at or before it is ignored (`effects.ignored`, one audit record),
and an erasure asks the driver to keep a tombstone (`effects.tombstone`, `tombstone` of a
control result) and to publish `effects.notice`.

Capacity across customers (service/domain/capacity.py): the driver keeps one `CapacityState`
per partition, calls its `advance` and passes it in the context (`with_quota`) before each
event; arbitration spends from it; the driver sends its quota records (repartition topic,
header `tf-ctl: capacity`) and applies those addressed to the partition with `receive`. The
worker sends the actions that spent capacity once the state is durable (`defer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from schemas.codec import dumps, loads
from schemas.event import Event
from service.domain.context_table import ContextTable
from service.domain.decide import Effects, Outcome, decide
from service.domain.erasure import erasure_notice, ignored_record, key_digest
from service.domain.identity import (
    MAX_LINKS,
    alias_keys,
    merge_profiles,
    merge_record,
    plan_link,
    refusal_record,
)
from service.domain.learning import LearningState
from service.domain.profile import Profile
from service.domain.rules import Rulebook
from service.domain.signals import Signal

__all__ = [
    "Control",
    "ControlResult",
    "Effects",
    "event_context",
    "step_control",
    "step_event",
]



class Control(NamedTuple):
    """An identity control record to deliver to the partition that owns `target`."""

    kind: str
    target: str
    body: bytes


class ControlResult:
    """What one control record did: `changed` (then `profile` is the key's new state, None:
    removed), audit records (Kafka key `audit_key`), control records to send, a dead letter."""

    __slots__ = ("audit_key", "changed", "controls", "dead", "decisions", "profile",
                 "tombstone")

    def __init__(self, profile: Profile | None = None, changed: bool = False) -> None:
        self.profile = profile
        self.changed = changed
        self.decisions: list[dict[str, Any]] = []
        self.audit_key = ""
        self.controls: list[Control] = []
        self.dead: tuple[str, str] | None = None
        self.tombstone = -1  # an alias erased: the key's tombstone time to keep


def _effects(outcome: Outcome) -> Effects:
    effects = outcome.effects
    if effects is None:
        effects = outcome.effects = Effects()
    return effects


def _control(kind: str, target: str, canonical: str, event_id: str, occurred_at: str,
             ts_ms: int, **extra: object) -> Control:
    body = {"alias": target, "canonical": canonical, "event_id": event_id,
            "occurred_at": occurred_at, "ts": ts_ms, **extra}
    return Control(kind, target, dumps(body))


def event_context(table: ContextTable, tallies: LearningState | None,
                  ts_ms: int) -> Mapping[str, Any]:
    """What a decision at event time `ts_ms` reads: the reference data in force then, plus
    the learned counts of the profile's partition (None: the rulebook does not learn)."""
    # ContextTable.as_of's fast path, inlined: this is every event's path
    base = table.latest if ts_ms >= table.newest_from else table.as_of(ts_ms)
    return base if tallies is None else tallies.context(ts_ms, base)


def step_event(profile: Profile | None, key: str, event: Event, context: Mapping[str, Any],
               rulebook: Rulebook, signals: Sequence[Signal] = (),
               erased_ms: int = -1) -> Outcome:
    """Apply `event` to the profile stored under `key` (None: none yet; then `erased_ms` is
    the key's tombstone time, -1: none); see the module doc. `decide()` may update `profile`
    in place; the returned `Outcome.profile` is the new state (None: erased) unless the event
    was forwarded (`effects.forward`), ignored (`effects.ignored`) or a duplicate."""
    if profile is not None:
        barrier = profile.erased_ms
        if event.ts_ms <= barrier:
            return _ignored(profile, key, event, barrier, rulebook)
        if profile.redirect is not None:
            outcome = Outcome(profile, (), [], False)
            _effects(outcome).forward = profile.redirect
            return outcome
    elif erased_ms >= 0:
        if event.ts_ms <= erased_ms:
            return _ignored(profile, key, event, erased_ms, rulebook)
        profile = Profile(key)  # a fresh start after an erasure: it keeps the erasure time
        profile.erased_ms = erased_ms
    elif key != event.key():
        profile = Profile(key)  # forwarded here: the profile this alias was merged into
    outcome = decide(profile, event, context, rulebook)
    if outcome.duplicate:
        return outcome
    if signals:
        feeds = [(spec.name, group) for spec in signals
                 if (group := spec.group_of(event)) is not None]
        if feeds:
            _effects(outcome).feeds = feeds
    kept = outcome.profile
    if kept is None:
        _erase(outcome, profile, key, event, erased_ms)
    elif event.type == "identified":
        _request_links(kept, event, rulebook, outcome)
    return outcome


def _ignored(profile: Profile | None, key: str, event: Event, erased_ms: int,
             rulebook: Rulebook) -> Outcome:
    """An event dated at or before its customer's erasure: audited, nothing else; but a
    login names identifiers that were the erased customer's then, and they are erased too
    (`claimed`: also when they hold a profile of their own, never linked)."""
    outcome = Outcome(profile, (), [ignored_record(
        key, "event", event.event_id, event.occurred_at, erased_ms, rulebook)], False)
    effects = _effects(outcome)
    effects.ignored = True
    if event.type == "identified":
        effects.controls = [
            _control("erase", alias, key, event.event_id, event.occurred_at, event.ts_ms,
                     via=[key], erased_ms=erased_ms, claimed=True)
            for alias in alias_keys(event)]
    return outcome


def _erase(outcome: Outcome, profile: Profile | None, key: str, event: Event,
           erased_ms: int) -> None:
    """An erasure: the key's tombstone (covering every event the profile applied), the
    record for the erasures topic, and an `erase` record per linked identifier."""
    links = list(profile.links) if profile is not None else []
    if profile is not None:
        erased_ms = max(erased_ms, profile.newest_ms, profile.erased_ms)
    erased_ms = max(erased_ms, event.ts_ms)
    effects = _effects(outcome)
    effects.tombstone = erased_ms
    effects.notice = erasure_notice(key, [key, *links], erased_ms, event.event_id,
                                    event.occurred_at)
    if links:
        effects.controls = _erase_all(links, key, event.event_id, event.occurred_at,
                                      event.ts_ms, [key, *links], erased_ms)


def _request_links(profile: Profile, event: Event, rulebook: Rulebook, outcome: Outcome) -> None:
    new = [alias for alias in alias_keys(event) if alias not in profile.links]
    if not new:
        return
    room = max(MAX_LINKS - len(profile.links), 0)
    for alias in new[room:]:
        outcome.decisions.append(refusal_record(
            profile.key, profile.customer_id, event.event_id, event.occurred_at, rulebook,
            f"identifier limit of {MAX_LINKS} reached; {alias.split(':', 1)[0]} not linked"))
    if room:
        _effects(outcome).controls = [
            _control("link", alias, profile.key, event.event_id, event.occurred_at, event.ts_ms)
            for alias in new[:room]]


def step_control(profile: Profile | None, key: str, kind: str, value: bytes | None,
                 rulebook: Rulebook, erased_ms: int = -1) -> ControlResult:
    """Apply a `link`, `merge` or `erase` record addressed to the profile under `key` (None:
    none; then `erased_ms` is the key's tombstone time, -1: none). A link or merge dated at
    or before the key's erasure is ignored; a merge so ignored erases the alias it came from
    (its redirect to the erased profile would otherwise outlive it)."""
    try:
        body = loads(value or b"")
        alias, canonical = str(body["alias"]), str(body["canonical"])
        event_id, occurred_at = str(body["event_id"]), str(body["occurred_at"])
        ts_ms = int(body["ts"]) if "ts" in body else _epoch_ms(occurred_at)
    except (ValueError, KeyError, TypeError):
        result = ControlResult(profile)
        result.dead = ("bad_control", "unreadable identity control record")
        return result
    if kind == "erase":
        # The alias of an erased profile forgets too: when it redirects to any key of that
        # profile (`via`: the profile's key and every identifier linked into it).
        # A login dated before the erasure `claimed` the alias for the erased customer: its
        # own profile (never linked) is erased too, unless it belongs to another customer.
        via = body.get("via")
        keys = set(via) if isinstance(via, list) else {canonical}
        redirect = profile.redirect if profile is not None else None
        if redirect in keys if redirect is not None else bool(body.get("claimed")):
            result = ControlResult(None, profile is not None)
            erased_ms = max(int(body.get("erased_ms", ts_ms)),
                            profile.erased_ms if profile is not None else -1,
                            profile.newest_ms if profile is not None else -1)
            result.tombstone = erased_ms
            links = [link for link in profile.links if link not in keys] \
                if profile is not None else []
            result.controls = _erase_all(links, key, event_id, occurred_at, ts_ms,
                                         sorted({*keys, key, *links}), erased_ms)
            return result
        return ControlResult(profile)
    if kind not in ("link", "merge"):
        result = ControlResult(profile)
        result.dead = ("bad_control", f"unknown identity control record kind {kind!r}")
        return result
    barrier = profile.erased_ms if profile is not None else erased_ms
    if ts_ms <= barrier:
        result = ControlResult(profile)
        result.decisions.append(ignored_record(key, kind, event_id, occurred_at, barrier,
                                               rulebook))
        result.audit_key = "erased:" + key_digest(key)
        if kind == "merge":  # the alias and what was linked into it were the customer's
            history = body.get("history")
            linked = history.get("l") if isinstance(history, dict) else None
            aliases = [alias, *(str(k) for k in linked)] if isinstance(linked, list) else [alias]
            result.controls = _erase_all(aliases, key, event_id, occurred_at, ts_ms,
                                         sorted({key, canonical, *aliases}), barrier)
        return result
    if kind == "merge" and profile is not None and profile.redirect is not None:
        # The key was itself merged into another profile meanwhile (a chain, cookie -> card
        # -> customer, whose links crossed): the history belongs there.
        result = ControlResult(profile)
        result.controls.append(Control("merge", profile.redirect, value or b""))
        return result
    if profile is None and barrier >= 0:
        profile = Profile(key)  # a fresh start after an erasure: it keeps the erasure time
        profile.erased_ms = barrier
    if kind == "link":
        return _link(profile, alias, canonical, event_id, occurred_at, ts_ms, rulebook)
    return _merge(profile, key, alias, event_id, occurred_at, body.get("history"), rulebook)


def _erase_all(aliases: list[str], key: str, event_id: str, occurred_at: str, ts_ms: int,
               via: list[str], erased_ms: int) -> list[Control]:
    """`erase` records for `aliases` of an erased `key` (`via`: every key of the profile)."""
    return [_control("erase", alias, key, event_id, occurred_at, ts_ms, via=via,
                     erased_ms=erased_ms) for alias in aliases]


def _epoch_ms(occurred_at: str) -> int:
    """A control record's time from its ISO text (records written before they carried it)."""
    return int(datetime.fromisoformat(occurred_at).timestamp() * 1000)


def _link(profile: Profile | None, alias: str, canonical: str, event_id: str,
          occurred_at: str, ts_ms: int, rulebook: Rulebook) -> ControlResult:
    empty = (profile is not None and profile.newest_ms < 0 and profile.redirect is None
             and not profile.links)
    plan = plan_link(alias, None if empty else profile, canonical)
    if empty and plan.redirect is not None and profile is not None:
        plan.redirect.erased_ms = profile.erased_ms
    if plan.kind == "refuse":
        result = ControlResult(profile)
        result.dead = ("identity_conflict", plan.reason)
        customer = canonical[12:] if canonical.startswith("customer_id:") else canonical
        result.decisions.append(refusal_record(canonical, customer, event_id, occurred_at,
                                               rulebook, plan.reason))
        result.audit_key = canonical
        return result
    if plan.kind != "merge":
        return ControlResult(profile)
    result = ControlResult(plan.redirect, True)
    history = plan.history.to_dict() if plan.history is not None else None
    result.controls.append(Control("merge", canonical, dumps(
        {"alias": alias, "canonical": canonical, "event_id": event_id,
         "occurred_at": occurred_at, "ts": ts_ms, "history": history})))
    return result


def _merge(profile: Profile | None, key: str, alias: str, event_id: str, occurred_at: str,
           raw_history: object, rulebook: Rulebook) -> ControlResult:
    base = profile if profile is not None else Profile(key)
    other = Profile.from_bytes(dumps(raw_history)) if raw_history else None
    merged, changed = merge_profiles(base, alias, other, rulebook)
    result = ControlResult(merged if changed else profile, changed)
    result.audit_key = key
    if changed:
        result.decisions.append(merge_record(merged, alias, event_id, occurred_at, rulebook))
    elif alias not in base.links:
        result.decisions.append(refusal_record(
            key, base.customer_id, event_id, occurred_at, rulebook,
            f"identifier limit of {MAX_LINKS} reached"))
    return result
