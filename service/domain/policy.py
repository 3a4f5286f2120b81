"""Arbitration and contact policy: which eligible actions are sent, and why the others are not.

Eligible actions are ranked by priority x propensity x value (the propensity is learned when
the rulebook has a `learning` section, learning.py, and 1.0 otherwise), ties broken by
action name. Each candidate, in rank order, meets the first check that stops it, recorded as
`suppressed_by`:

1. `context`     - a `suppress_unless` condition fails (e.g. the product is out of stock);
2. `once_only`   - a once-only action was already sent to this customer;
3. `cooldown`    - the action was sent less than its cool-down ago;
4. `no_consent`  - no consent for the channel (or the action's purpose);
5. `quiet_hours` - the channel's quiet hours, in the customer's local time;
6. `arbitration` - its group already has an action on this event, or `max_per_event` is reached;
7. `contact_cap` - the customer had `cap.max` actions within `cap.within` (all channels);
8. experiment holdout - outcome `held_out`: audited, not sent.
9. `capacity`    - a limit across customers (capacity.py) has no quota left at the partition:
   `when_reached: fallback` lets the next candidates through, `suppress` stops them too.

A held-out decision is booked in the profile as if it had been sent (cool-down, once-only,
cap), so the control group's audit trail mirrors what the treated group receives.

An action with a channel preference list (`channels: [sms, email]`) is checked once per channel
in order (`choose_channel`): consent, quiet hours and capacity limits that fall back are per
channel, the audit record lists the channels skipped and why. Quiet hours are in the customer's
own zone (localtime.py); a channel whose quiet hours `defer` sends anyway with `not_before`,
the end of the quiet period.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from schemas.vocabulary import CHANNEL_SKIP_REASONS, RecordOutcome
from service.domain.audit import audit_record
from service.domain.capacity import CAPACITY_CONTEXT, CapacityState, Constraint
from service.domain.channels import (
    Deferral,
    Skip,
    channel_fields,
    channel_notes,
    deferral,
    quiet_now,
)
from service.domain.cond import Cond, Env, ObjectTemplate
from service.domain.fields import digest32, format_ms
from service.domain.learning import propensity
from service.domain.profile import Profile

__all__ = ["CatalogAction", "Experiment", "Policy", "arbitrate", "choose_channel", "digest32",
           "format_ms", "on_channel"]

_RECENT_KEEP = 64


class Experiment:
    """Deterministic hash assignment of customers to arms."""

    __slots__ = ("actions", "arms", "holdout", "name", "payload", "salt")

    def __init__(self, name: str, salt: str, arms: list[tuple[str, float]],
                 holdout: frozenset[str], actions: frozenset[str] | None,
                 payload: dict[str, ObjectTemplate]) -> None:
        self.name = name
        self.salt = salt
        total = sum(weight for _, weight in arms)
        bounds: list[tuple[str, float]] = []
        running = 0.0
        for arm, weight in arms:
            running += weight / total
            bounds.append((arm, running))
        self.arms = bounds
        self.holdout = holdout
        self.actions = actions  # None: every action
        self.payload = payload  # arm -> template getter

    def assign(self, customer_key: str) -> str:
        """The arm of `customer_key`: sha256 of (experiment, salt, key) as a number in [0, 1)."""
        raw = hashlib.sha256(f"{self.name}\x1f{self.salt}\x1f{customer_key}".encode()).digest()
        point = int.from_bytes(raw[:8], "big") / 2**64
        for arm, upper in self.arms:
            if point < upper:
                return arm
        return self.arms[-1][0]


class CatalogAction:
    """A compiled catalog entry."""

    __slots__ = (
        "basis",
        "capacity",
        "channel",
        "consent_keys",
        "cooldown",
        "experiments",
        "expires",
        "group",
        "name",
        "needs_fired",
        "objection_keys",
        "once",
        "payload",
        "purpose",
        "rank",
        "types",
        "unless",
        "variants",
        "when",
    )

    def __init__(self, name: str, channel: str, when: Cond, unless: Cond | None,
                 payload: ObjectTemplate, value: float, priority: float, expires: int,
                 cooldown: int | None, once: bool, group: str | None,
                 consent_keys: tuple[str, ...], experiments: tuple[Experiment, ...],
                 types: frozenset[str] | None,
                 needs_fired: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.channel = channel
        self.when = when
        self.unless = unless
        self.payload = payload
        self.rank = priority * value  # `arbitrate` multiplies in the learned propensity
        self.expires = expires
        self.cooldown = cooldown
        self.once = once
        self.group = group
        self.consent_keys = consent_keys
        self.basis = "consent"  # legal basis: consent, service, legitimate_interest
        self.purpose: str | None = None
        self.objection_keys: tuple[str, ...] = ()  # legitimate interest: stopped if withdrawn
        self.experiments = experiments
        self.types = types
        # patterns its top-level conditions require to have fired on the event: without
        # them it cannot be eligible, and decide() need not evaluate it
        self.needs_fired = needs_fired
        # a channel preference list: this action once per channel, in order (channels.py)
        self.variants: tuple[CatalogAction, ...] = ()
        self.capacity: tuple[Constraint, ...] = ()  # limits across customers covering it


class LearningPolicy:
    """The rulebook's `learning` section, compiled (service/domain/learning.py)."""

    __slots__ = ("prior", "refresh", "segments", "warm_up")

    def __init__(self, warm_up: int, prior: tuple[float, float],
                 segments: list[tuple[str, Cond]], refresh: int) -> None:
        self.warm_up = warm_up
        self.prior = prior
        self.segments = segments  # (name, Cond) in order; the first that holds is the segment
        self.refresh = refresh

    def segment(self, env: Env) -> str:
        for name, cond in self.segments:
            if cond.test(env):
                return name
        return "all"


class Policy:
    """Contact policy settings, compiled."""

    __slots__ = ("cap_max", "cap_within", "consent_defaults", "defer", "keep_ms", "learning",
                 "max_per_event", "quiet")

    def __init__(self, cap_max: int | None, cap_within: int, quiet: dict[str, tuple[int, int]],
                 consent_defaults: dict[str, bool], max_per_event: int,
                 learning: LearningPolicy | None = None, keep_ms: int = 0) -> None:
        self.cap_max = cap_max
        self.cap_within = cap_within
        self.quiet = quiet  # channel -> (start minute, end minute), local time
        self.consent_defaults = consent_defaults  # consent key -> granted when never stated
        self.max_per_event = max_per_event
        self.learning = learning
        # how long the profile remembers what it was sent (cap, responses, attribution)
        self.keep_ms = max(cap_within, 86_400_000, keep_ms)
        self.defer: frozenset[str] = frozenset()  # channels whose quiet hours defer, not stop


def _span(millis: int) -> str:
    """93_600_000 -> '1d 2h' (two largest units, rounded down)."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis >= size:
            parts.append(f"{millis // size}{unit}")
            millis %= size
    return " ".join(parts[:2]) or "0s"


def _check(action: CatalogAction, env: Env, policy: Policy, taken: dict[str, str], sent_now: int,
           in_cap: int) -> tuple[str, str] | None:
    profile = env.profile
    ts = env.event.ts_ms
    if action.unless is not None and not action.unless.test(env):
        return "context", "; ".join(action.unless.explain(env))
    history = profile.sent.get(action.name)
    if history is not None:
        if action.once:
            return "once_only", f"once-only action already sent ({history[1]}x)"
        if action.cooldown is not None and abs(ts - history[0]) < action.cooldown:
            return "cooldown", (f"cool-down {format_ms(action.cooldown)}: last sent "
                                f"{_span(abs(ts - history[0]))} apart")
    for key in action.consent_keys:
        state = profile.consent.get(key)
        granted = policy.consent_defaults.get(key, True) if state is None else bool(state[0])
        if not granted:
            how = "withdrawn" if state is not None else "never given (opt-in)"
            return "no_consent", f"no consent for {key.replace(':', ' ')}: {how}"
    for key in action.objection_keys:
        state = profile.consent.get(key)
        if state is not None and not state[0]:
            return "objection", (f"legitimate interest ({action.purpose}): the customer "
                                 f"objected ({key.replace(':', ' ')} withdrawn)")
    window = policy.quiet.get(action.channel)
    if window is not None and action.channel not in policy.defer:
        why = quiet_now(action.channel, window, env)
        if why is not None:
            return "quiet_hours", why
    if action.group is not None and action.group in taken:
        return "arbitration", f"group {action.group} already filled by {taken[action.group]}"
    if sent_now >= policy.max_per_event:
        return "arbitration", f"at most {policy.max_per_event} action(s) per event"
    if policy.cap_max is not None and in_cap >= policy.cap_max:
        return "contact_cap", (f"contact cap {policy.cap_max} per "
                               f"{format_ms(policy.cap_within)} reached ({in_cap} already)")
    return None


def arbitrate(env: Env, eligible: list[CatalogAction], policy: Policy, version: str
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rank `eligible`, apply the contact policy, book sends in the profile; wire dicts out."""
    event = env.event
    profile = env.profile
    ts = event.ts_ms
    key = profile.key
    customer = profile.customer_id
    eligible, ranks, learned = _rank(env, eligible, policy)
    in_cap = 0
    if policy.cap_max is not None:
        within = policy.cap_within
        in_cap = sum(1 for entry in profile.recent if abs(ts - entry[0]) < within)
    actions: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    taken: dict[str, str] = {}
    sent_now = 0
    capped: list[str] = []  # a `when_reached: suppress` limit reached on this event
    for action in eligible:
        name = action.name
        action_id = digest32(key, name, event.event_id, version)
        reasons = action.when.explain(env)
        if learned:
            reasons = [*reasons, learned[name]]
        rank = ranks[name]
        arms = {exp.name: exp.assign(key) for exp in action.experiments}
        afford = _affordable(env, arms, capped) if capped or action.capacity or any(
            variant.capacity for variant in action.variants) else None
        action, stopped, not_before, skipped = choose_channel(action, env, policy, taken,
                                                             sent_now, in_cap, afford)
        if skipped or not_before is not None:
            reasons = [*channel_notes(skipped, not_before), *reasons]
        outcome: RecordOutcome = "sent"
        suppressed_by: str | None = None
        if stopped is not None:
            outcome = "suppressed"
            suppressed_by, why = stopped
            reasons = [why, *reasons]
        else:
            for exp in action.experiments:
                if arms[exp.name] in exp.holdout:
                    outcome, suppressed_by = "held_out", "experiment_holdout"
                    reasons = [f"experiment {exp.name}: arm {arms[exp.name]} is held out",
                               *reasons]
                    break
            sent_now += 1
            in_cap += 1
            if action.group is not None:
                taken[action.group] = name
            _book(profile, name, action_id, ts, policy, outcome == "held_out")
        if outcome == "sent":
            actions.append(_action_dict(action, env, action_id, customer, reasons, arms, version,
                                        rank))
            if not_before is not None:
                actions[-1]["not_before"] = not_before.at
        decisions.append(_decision_record(env, name, action, action_id, version, outcome,
                                          reasons, suppressed_by, rank, arms, skipped,
                                          not_before))
    return actions, decisions


def _rank(env: Env, eligible: list[CatalogAction], policy: Policy
          ) -> tuple[list[CatalogAction], dict[str, float], dict[str, str]]:
    """The eligible actions best first (rank, times the learned propensity when learning is
    on; ties by name), their ranks, and each learned propensity's reason."""
    ranks = {action.name: action.rank for action in eligible}
    learned: dict[str, str] = {}
    learning = policy.learning
    if learning is not None:
        segment = learning.segment(env)
        for action in eligible:
            value, why = propensity(env.context, action.name, segment, env.event.event_id,
                                    learning.warm_up, learning.prior)
            ranks[action.name] = action.rank * value
            learned[action.name] = why
    if len(eligible) > 1:
        eligible = sorted(eligible, key=lambda a: (-ranks[a.name], a.name))
    return eligible, ranks, learned


def _decision_record(env: Env, name: str, action: CatalogAction, action_id: str, version: str,
                     outcome: RecordOutcome, reasons: list[str], suppressed_by: str | None,
                     rank: float, arms: dict[str, str], skipped: Sequence[Skip],
                     not_before: Deferral | None
                     ) -> dict[str, Any]:
    """The audit record of candidate `name` (`action`: it on the channel chosen): sent,
    suppressed or held out, and why."""
    event = env.event
    record = audit_record(
        digest32(env.profile.key, name, event.event_id, version, "decision"), "action",
        env.profile.customer_id, event.event_id, version, event.occurred_at, outcome, reasons,
        action=name, channel=action.channel, action_id=action_id, suppressed_by=suppressed_by,
        score=rank)
    record["legal_basis"] = action.basis
    if action.purpose:
        record["purpose"] = action.purpose
    if arms:
        record["experiment"] = arms
    if skipped or not_before is not None:
        record.update(channel_fields(skipped, not_before))
    return record


# Spends capacity for an action on one channel (None: spent, or no limit covers it), else
# what stopped it and whether that stops the action (True) or only that channel (False).
Afford = Callable[[CatalogAction], tuple[tuple[str, str], bool] | None]


def _affordable(env: Env, arms: dict[str, str], capped: list[str]) -> Afford:
    """The capacity check of one candidate, for `choose_channel`: a `when_reached: fallback`
    limit reached on one channel of a preference list lets the next channel be tried."""

    def afford(option: CatalogAction) -> tuple[tuple[str, str], bool] | None:
        if not option.capacity and not capped:
            return None
        had = len(capped)
        stopped = _capacity(env, option, arms, capped)
        return None if stopped is None else (stopped, bool(had) or len(capped) > had)

    return afford


def _capacity(env: Env, action: CatalogAction, arms: dict[str, str], capped: list[str]
              ) -> tuple[str, str] | None:
    """Capacity across customers (service/domain/capacity.py), for an action that passed
    every other check: spend a unit of each limit covering it, or stop it when one is
    reached. A held-out decision spends nothing; after a `when_reached: suppress` limit was
    reached, the lower-ranked candidates are stopped too (`capped`)."""
    if capped:
        return "capacity", f"ranked below an action whose {capped[0]} is reached"
    if any(arms[exp.name] in exp.holdout for exp in action.experiments):
        return None
    state = env.context.get(CAPACITY_CONTEXT)
    if not isinstance(state, CapacityState):
        return None  # a driver that keeps no capacity state: no limit applies
    reached = state.take(action.capacity, env.event.ts_ms)
    if reached is None:
        return None
    if reached.suppress:
        capped.append(reached.describe())
    fallback = "" if reached.suppress else "; falling back to the next eligible action"
    return "capacity", f"{reached.describe()} reached{fallback}"


def _book(profile: Profile, name: str, action_id: str, ts: int, policy: Policy,
          held_out: bool) -> None:
    history = profile.sent.get(name)
    if history is None:
        profile.sent[name] = [ts, 1]
    else:
        history[0] = max(history[0], ts)
        history[1] += 1
    recent = profile.recent
    recent.append([ts, name, action_id, 1] if held_out else [ts, name, action_id])
    horizon = profile.newest_ms - policy.keep_ms
    while recent and (recent[0][0] < horizon or len(recent) > _RECENT_KEEP):
        del recent[0]


def _action_dict(action: CatalogAction, env: Env, action_id: str, customer: str, reasons: list[str],
                 arms: dict[str, str], version: str, rank: float) -> dict[str, Any]:
    payload = action.payload(env)
    for exp in action.experiments:
        extra = exp.payload.get(arms[exp.name])
        if extra is not None:
            payload = {**payload, **extra(env)}
    event = env.event
    expires = datetime.fromisoformat(event.occurred_at) + timedelta(milliseconds=action.expires)
    out: dict[str, Any] = {
        "action_id": action_id,
        "customer_id": customer,
        "action": action.name,
        "channel": action.channel,
        "score": rank,
        "reasons": reasons,
        "trigger_event_id": event.event_id,
        "rulebook_version": version,
        "decided_at": event.occurred_at,
        "expires_at": expires.isoformat(),
        "payload": payload,
        "legal_basis": action.basis,
    }
    if action.purpose:
        out["purpose"] = action.purpose
    if arms:
        out["experiment"] = arms
    return out



# -- channel preference lists and deferred quiet hours (channels.py) ---------------------------

# what makes a list try the next channel (an objection to the purpose stops every channel)
_CHANNEL_STOPS = CHANNEL_SKIP_REASONS
_NO_SKIPS: tuple[Skip, ...] = ()


def choose_channel(action: CatalogAction, env: Env, policy: Policy, taken: dict[str, str],
                   sent_now: int, in_cap: int, afford: Afford | None = None
                   ) -> tuple[CatalogAction, tuple[str, str] | None, Deferral | None,
                              Sequence[Skip]]:
    """The channel `action` goes out on: (the action on that channel, what stopped it or None,
    its deferral or None, the channels skipped before it).

    Channels are tried in order; a channel without consent or in its quiet hours is skipped.
    One whose quiet hours defer is kept in reserve: a later channel that can go now wins, else
    the first deferrable one goes with `not_before`. A stop that does not depend on the channel
    (context, cool-down, arbitration, cap...) ends the search. When every channel is skipped,
    `suppressed_by` is the first channel's reason. `afford` (capacity across customers) spends
    a unit for the channel chosen; a channel whose `fallback` limit is reached is skipped too
    (reason `capacity`), a `suppress` limit stops the action."""
    if not action.variants and action.channel not in policy.defer:
        stopped = _check(action, env, policy, taken, sent_now, in_cap)
        if stopped is None and afford is not None:
            spent = afford(action)
            stopped = spent[0] if spent is not None else None
        return action, stopped, None, _NO_SKIPS
    options = action.variants or (action,)
    single = len(options) == 1
    skipped: list[Skip] = []
    reserve: tuple[CatalogAction, Deferral, int] | None = None
    for option in options:
        stopped = _check(option, env, policy, taken, sent_now, in_cap)
        if stopped is None:
            later, why = _deferred(option, env, policy)
            if later is None and why is None:
                spent = afford(option) if afford is not None else None
                if spent is None:
                    return option, None, None, skipped
                stopped, final = spent
                if single or final:
                    return option, stopped, None, skipped
                skipped.append(Skip(option.channel, stopped[0], stopped[1]))
                continue
            if later is not None:
                if single:
                    spent = afford(option) if afford is not None else None
                    if spent is not None:
                        return option, spent[0], None, skipped
                    return option, None, later, skipped
                if reserve is None:
                    reserve = (option, later, len(skipped))
                skipped.append(Skip(option.channel, "quiet_hours",
                                    f"{later.why} (it would wait until {later.at})"))
                continue
            stopped = ("quiet_hours", why or "")
        if single or stopped[0] not in _CHANNEL_STOPS:
            return option, stopped, None, skipped
        skipped.append(Skip(option.channel, stopped[0], stopped[1]))
    if reserve is not None:
        option, later, index = reserve
        spent = afford(option) if afford is not None else None
        if spent is None:
            del skipped[index]
            return option, None, later, skipped
        if spent[1]:
            return option, spent[0], None, skipped
        skipped[index] = Skip(option.channel, spent[0][0], spent[0][1])
    tried = ", ".join(f"{skip.channel}: {skip.reason}" for skip in skipped)
    return options[0], (skipped[0].reason, f"no channel could be used ({tried})"), None, skipped


def _deferred(action: CatalogAction, env: Env, policy: Policy
              ) -> tuple[Deferral | None, str | None]:
    window = policy.quiet.get(action.channel)
    if window is None or action.channel not in policy.defer:
        return None, None
    return deferral(action.channel, window, env, action.expires)


def on_channel(action: CatalogAction, channel: str) -> CatalogAction:
    """A copy of `action` sent on `channel` (its channel consent and objection keys swapped)."""
    other = copy.copy(action)
    other.channel = channel
    other.consent_keys = tuple(f"channel:{channel}" if key.startswith("channel:") else key
                               for key in action.consent_keys)
    other.objection_keys = tuple(f"channel:{channel}" if key.startswith("channel:") else key
                                 for key in action.objection_keys)
    other.variants = ()
    return other
