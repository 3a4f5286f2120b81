"""The rulebook: a YAML file, validated (pydantic + our own checks) and compiled once.

`load_rulebook(path)` / `parse_rulebook(text, source)` return a `Rulebook` or raise a
`RulebookError` listing *every* problem found as `file:line: field: message`. The compiled
rulebook indexes scores' points rules, traits, patterns and actions by event type, so
`decide()` only looks at what can apply to the event at hand. The language is documented in
examples/README.md and by the commented example examples/default/rulebook.yaml.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from pydantic import ValidationError

from schemas.vocabulary import CORE_EVENT_TYPES, IDENTIFIER_FIELDS
from service.domain.attribution import AttributionPolicy
from service.domain.capacity import Constraint
from service.domain.compiled import compile_steps
from service.domain.cond import EnvGetter
from service.domain.conditions import ConditionCompiler, ScoreInfo
from service.domain.fields import EventMatch, SpecError, compile_event_getter, compile_match
from service.domain.model import ActionSpec, RulebookModel
from service.domain.patterns import Pattern
from service.domain.policy import (
    CatalogAction,
    Experiment,
    LearningPolicy,
    Policy,
    format_ms,
    on_channel,
)
from service.domain.scoring import PointRule, Trait
from service.domain.signals import Signal
from service.domain.yamlsrc import Locator, Problem, Unreadable, read_source, read_yaml

__all__ = ["Problem", "Rulebook", "RulebookError", "load_rulebook", "parse_rulebook"]

T = TypeVar("T")
A = TypeVar("A")
_Path = tuple[str | int, ...]


class RulebookError(Exception):
    """A rulebook that cannot be used; `problems` lists each one with file, line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TypeIndex(Generic[T]):
    """Items by the event type they react to; items for any type are in every list."""

    def __init__(self, items: Iterable[tuple[T, frozenset[str] | None]]) -> None:
        pairs = list(items)
        wildcard = tuple(item for item, types in pairs if types is None)
        names = sorted({name for _, types in pairs if types for name in types})
        self.by_type: dict[str, tuple[T, ...]] = {
            name: tuple(item for item, types in pairs if types is None or name in types)
            for name in names
        }
        self.any = wildcard

    def types(self) -> set[str]:
        """Every event type named."""
        return set(self.by_type)

    def subset(self, keep: Callable[[T], bool]) -> TypeIndex[T]:
        """The same index holding only the items `keep` accepts (same types, same order)."""
        out: TypeIndex[T] = TypeIndex(())
        out.by_type = {name: tuple(i for i in items if keep(i))
                       for name, items in self.by_type.items()}
        out.any = tuple(i for i in self.any if keep(i))
        return out


class Rulebook:
    """A compiled rulebook. `version` = declared version + '+' + 8 hex of the content's sha256."""

    def __init__(self, model: RulebookModel, text: str, source: str, points: TypeIndex[PointRule],
                 traits: TypeIndex[Trait], patterns: TypeIndex[Pattern],
                 actions: TypeIndex[CatalogAction], policy: Policy, scores: dict[str, ScoreInfo],
                 extra_types: set[str], attribution: AttributionPolicy | None = None,
                 signals: dict[str, Signal] | None = None) -> None:
        self.model = model
        self.source = source
        self.declared_version = model.version
        self.digest = hashlib.sha256(text.encode()).hexdigest()
        self.version = f"{model.version}+{self.digest[:8]}"
        self.points = points
        self.traits = traits
        # points and traits as one generated function per event type (compiled.py)
        self.steps = compile_steps(points.by_type, points.any, traits.by_type, traits.any)
        self.patterns = patterns
        self.actions = actions
        # the catalog for an event on which no pattern fired (most events): without the
        # actions that need one
        self.unprompted: TypeIndex[CatalogAction] = actions.subset(lambda a: not a.needs_fired)
        self.policy = policy
        self.scores = scores
        self.remember_events = model.idempotence.remember_events
        self.max_lateness = model.idempotence.max_lateness
        self.action_names = frozenset(model.actions)
        self.channels: dict[str, str] = {n: spec.channel_list()[0]
                                         for n, spec in model.actions.items()}
        self.attribution = attribution
        self.signals: dict[str, Signal] = signals or {}
        self.capacity: dict[str, Constraint] = {}  # limits across customers, by name
        # (action, channel) pairs a capacity limit covers: sending one spends quota
        self.spends_capacity: frozenset[tuple[str, str]] = frozenset()
        self.event_types: frozenset[str] = frozenset(
            points.types() | traits.types() | patterns.types() | actions.types() | extra_types
        )
        # the value getters of `crosses` conditions: decide() reads them before each event
        self.crossings: tuple[EnvGetter, ...] = ()

    def __repr__(self) -> str:
        return f"Rulebook({self.version!r}, actions={sorted(self.action_names)})"


def load_rulebook(path: str | os.PathLike[str]) -> Rulebook:
    """Read and compile a rulebook file; raise `RulebookError` (also for an unreadable file)."""
    source = os.fspath(path)
    try:
        text = read_source(source)
    except Unreadable as exc:
        raise RulebookError([Problem(source, 0, "", f"cannot read the rulebook: {exc}")]
                            ) from None
    return parse_rulebook(text, source)


def parse_rulebook(text: str, source: str = "<string>") -> Rulebook:
    """Compile rulebook text; raise `RulebookError` listing every problem found."""
    data, locator, problems = read_yaml(text, source)
    if data is None:
        raise RulebookError(problems)
    if not isinstance(data, dict):
        raise RulebookError([*problems, Problem(source, 1, "", "the rulebook must be a mapping")])
    try:
        model = RulebookModel.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(p for p in error["loc"] if isinstance(p, int) or "[" not in p)
            message = error["msg"].removeprefix("Value error, ")
            problems.append(locator.problem(path, message))
        raise RulebookError(problems) from None
    compiler = _Compiler(model, locator)
    rulebook = compiler.build(text, source)
    problems.extend(compiler.problems)
    if problems:
        raise RulebookError(sorted(problems, key=lambda p: (p.line, p.field)))
    assert rulebook is not None
    return rulebook


class _Compiler:
    def __init__(self, model: RulebookModel, locator: Locator) -> None:
        self.model = model
        self.locator = locator
        self.problems: list[Problem] = []

    def attempt(self, path: _Path, make: Callable[[A], T], arg: A) -> T | None:
        try:
            return make(arg)
        except SpecError as exc:
            self.problems.append(self.locator.problem((*path, *exc.path), exc.message))
            return None

    def match(self, path: _Path, spec: object) -> EventMatch | None:
        if spec is None:
            return None
        return self.attempt(path, compile_match, spec)

    def build(self, text: str, source: str) -> Rulebook | None:
        model = self.model
        decayed = tuple((name, s.half_life) for name, s in model.scores.items() if s.half_life)
        rules: list[tuple[PointRule, frozenset[str] | None]] = []
        infos: dict[str, ScoreInfo] = {}
        for name, score in model.scores.items():
            labels: list[tuple[str, str, float, int | None, int | None]] = []
            for index, rule in enumerate(score.points):
                path: _Path = ("scores", name, "points", index)
                label = rule.name or f"rule{index + 1}"
                if any(label == known[1] for known in labels):
                    self.problems.append(self.locator.problem((*path, "name"), "duplicate name"))
                labels.append((f"{name}/{label}", label, rule.add, rule.max_times, rule.nth))
                per_ok = rule.per is None or self.attempt(
                    (*path, "per"), compile_event_getter, rule.per) is not None
                if rule.nth is not None and rule.max_times is not None:
                    self.problems.append(self.locator.problem(
                        (*path, "nth"), "use either nth or max_times, not both"))
                match = self.match((*path, "when"), rule.when)
                if match is None or not per_ok:
                    continue
                compiled = PointRule(name, label, match, rule.add, rule.per, rule.max_times,
                                     rule.nth, score.cap, score.floor, score.half_life, decayed)
                rules.append((compiled, match.types))
            infos[name] = ScoreInfo(name, score.half_life, labels)
        traits = self._traits()
        patterns = self._patterns()
        signals = self._signals()
        conditions = ConditionCompiler(
            infos, {t.name: t.read for t, _ in traits}, dict(model.segments),
            {p.name: p.text for p, _ in patterns}, set(model.signals),
        )
        for name in model.segments:
            self.attempt(("segments", name), conditions.segment, name)
        experiments = self._experiments(conditions)
        pattern_types = {p.name: types for p, types in patterns}
        actions = self._actions(conditions, experiments, pattern_types)
        policy = self._policy(conditions)
        capacity = self._capacity([action for action, _ in actions])
        extra = set(CORE_EVENT_TYPES)
        attribution = self._attribution()
        if attribution is not None:
            extra |= attribution.match.types or set()
        for spec in signals.values():
            extra |= spec.match.types or set()
        if self.problems:
            return None
        rulebook = Rulebook(model, text, source, TypeIndex(rules), TypeIndex(traits),
                            TypeIndex(patterns), TypeIndex(actions), policy, infos, extra,
                            attribution, signals)
        rulebook.crossings = tuple(conditions.crossings)
        rulebook.capacity = capacity
        rulebook.spends_capacity = frozenset(
            (variant.name, variant.channel) for action, _ in actions
            for variant in (action.variants or (action,)) if variant.capacity)
        return rulebook

    def _capacity(self, actions: list[CatalogAction]) -> dict[str, Constraint]:
        """The `capacity` entries, compiled; each action learns the constraints covering it."""
        out: dict[str, Constraint] = {}
        for name, spec in self.model.capacity.items():
            path: _Path = ("capacity", name)
            scopes = [(kind, value) for kind, value in
                      (("action", spec.action), ("group", spec.group), ("channel", spec.channel))
                      if value is not None]
            if len(scopes) != 1:
                self.problems.append(self.locator.problem(
                    path, "name exactly one scope: action, group or channel"))
                continue
            scope, target = scopes[0]
            constraint = Constraint(name, scope, target, spec.limit, spec.per,
                                    spec.when_reached == "suppress",
                                    spec.quota or 0)
            # (each channel of a preference list is its own variant of the action)
            candidates = [v for a in actions for v in (a.variants or (a,))]
            covered = [a for a in candidates if constraint.covers(a.name, a.group, a.channel)]
            if not covered:
                self.problems.append(self.locator.problem(
                    (*path, scope), f"no action has {scope} {target!r}"))
                continue
            for action in covered:
                action.capacity = (*action.capacity, constraint)
            out[name] = constraint
        return out

    def _signals(self) -> dict[str, Signal]:
        out: dict[str, Signal] = {}
        for name, spec in self.model.signals.items():
            match = self.match(("signals", name, "when"), spec.when)
            by = self.attempt(("signals", name, "by"), compile_event_getter, spec.by)
            if spec.by.split(".")[-1] in IDENTIFIER_FIELDS:
                self.problems.append(self.locator.problem(
                    ("signals", name, "by"), "a signal groups by something other than a "
                    "customer identifier (per-customer counts are patterns)"))
                continue
            if match is not None and by is not None:
                out[name] = Signal(name, match, by, spec.within, spec.at_least, spec.hold,
                                       spec.description)
        return out

    def _attribution(self) -> AttributionPolicy | None:
        spec = self.model.attribution
        if spec is None:
            return None
        match = self.match(("attribution", "conversions"), spec.conversions)
        actions = None
        if spec.actions != "*":
            actions = frozenset(spec.actions)
            for index, name in enumerate(spec.actions):
                if name not in self.model.actions:
                    self.problems.append(self.locator.problem(
                        ("attribution", "actions", index), f"unknown action {name!r}"))
        if match is None:
            return None
        return AttributionPolicy(spec.window, match, actions)

    def _traits(self) -> list[tuple[Trait, frozenset[str] | None]]:
        out: list[tuple[Trait, frozenset[str] | None]] = []
        for name, spec in self.model.traits.items():
            path: _Path = ("traits", name)
            if spec.kind != "count" and not spec.field:
                self.problems.append(self.locator.problem(
                    (*path, "field"), f"a {spec.kind} trait needs the event field it reads"))
                continue
            if spec.field and self.attempt(
                    (*path, "field"), compile_event_getter, spec.field) is None:
                continue
            if spec.bands is not None and spec.kind in ("last", "distinct", "top"):
                self.problems.append(self.locator.problem(
                    (*path, "bands"), "bands need a numeric trait (count/sum/max/min/mean)"))
            if spec.kind == "distinct_count" and spec.within is None:
                self.problems.append(self.locator.problem(
                    (*path, "within"), "a distinct_count trait needs a window (within: 30d); "
                    "without one, use kind distinct"))
                continue
            match = self.match((*path, "when"), spec.when)
            clear = self.match((*path, "clear_when"), spec.clear_when)
            trait = Trait(name, spec.kind, spec.field, match, clear, spec.max_items, spec.bands,
                          spec.default, spec.within, spec.keep)
            out.append((trait, trait.types()))
        return out

    def _patterns(self) -> list[tuple[Pattern, frozenset[str] | None]]:
        out: list[tuple[Pattern, frozenset[str] | None]] = []
        for name, spec in self.model.patterns.items():
            path: _Path = ("patterns", name)
            wanted = ("when",) if spec.kind == "count" else ("first", "then")
            unwanted = ("first", "then") if spec.kind == "count" else ("when",)
            missing = [key for key in wanted if getattr(spec, key) is None]
            extra = [key for key in unwanted if getattr(spec, key) is not None]
            for key in missing:
                self.problems.append(self.locator.problem(
                    (*path, key), f"a {spec.kind} pattern needs {key}"))
            for key in extra:
                self.problems.append(self.locator.problem(
                    (*path, key), f"not used by a {spec.kind} pattern"))
            if spec.by and self.attempt((*path, "by"),
                                        compile_event_getter, spec.by) is None:
                continue
            if missing or extra:
                continue
            match = self.match((*path, "when"), spec.when)
            first = self.match((*path, "first"), spec.first)
            then = self.match((*path, "then"), spec.then)
            within = format_ms(spec.within)
            if spec.kind == "count" and match is not None:
                text = f"{spec.at_least} x {match.text} within {within}"
            elif first is not None and then is not None:
                text = f"{first.text} then {then.text} within {within}"
            else:
                continue
            if spec.by:
                text += f" (same {spec.by})"
            pattern = Pattern(name, spec.kind, spec.within, match, first, then, spec.at_least,
                              spec.by, spec.keep, text)
            out.append((pattern, pattern.types()))
        return out

    def _experiments(self, conditions: ConditionCompiler) -> list[Experiment]:
        out = []
        for name, spec in self.model.experiments.items():
            path: _Path = ("experiments", name)
            if any(weight < 0 for weight in spec.arms.values()) or not sum(spec.arms.values()):
                self.problems.append(self.locator.problem(
                    (*path, "arms"), "weights must be >= 0 and not all 0"))
                continue
            for index, arm in enumerate(spec.holdout):
                if arm not in spec.arms:
                    self.problems.append(self.locator.problem(
                        (*path, "holdout", index), f"{arm!r} is not one of the arms"))
            if isinstance(spec.actions, list):
                for index, action in enumerate(spec.actions):
                    if action not in self.model.actions:
                        self.problems.append(self.locator.problem(
                            (*path, "actions", index), f"there is no action named {action!r}"))
            payload = {}
            for arm, template in spec.payload.items():
                if arm not in spec.arms:
                    self.problems.append(self.locator.problem(
                        (*path, "payload", arm), f"{arm!r} is not one of the arms"))
                    continue
                compiled = self.attempt((*path, "payload", arm),
                                        conditions.object_template, template)
                if compiled is not None:
                    payload[arm] = compiled
            actions = None if spec.actions == "*" else frozenset(spec.actions)
            out.append(Experiment(name, spec.salt or name, list(spec.arms.items()),
                                  frozenset(spec.holdout), actions, payload))
        return out

    def _actions(self, conditions: ConditionCompiler, experiments: list[Experiment],
                 pattern_types: dict[str, frozenset[str] | None]
                 ) -> list[tuple[CatalogAction, frozenset[str] | None]]:
        out: list[tuple[CatalogAction, frozenset[str] | None]] = []
        for name, spec in self.model.actions.items():
            path: _Path = ("actions", name)
            when = self.attempt((*path, "when"), conditions.condition, spec.when)
            unless = None
            if spec.suppress_unless is not None:
                unless = self.attempt((*path, "suppress_unless"),
                                      conditions.condition, spec.suppress_unless)
            payload = self.attempt((*path, "payload"),
                                   conditions.object_template, spec.payload)
            channels = self._channels(path, spec)
            if when is None or payload is None or not channels:
                continue
            basis = self._basis(path, spec)
            consent: tuple[str, ...] = ()
            if basis == "consent":
                consent = (f"channel:{channels[0]}",)
                if spec.purpose:
                    consent += (f"purpose:{spec.purpose}",)
            mine = tuple(e for e in experiments if e.actions is None or name in e.actions)
            types = _trigger_types(spec.when, pattern_types)
            action = CatalogAction(name, channels[0], when, unless, payload, spec.value,
                            spec.priority, spec.expires, spec.cooldown, spec.once,
                            spec.group, consent, mine, types, _required_patterns(spec.when))
            action.basis, action.purpose = basis, spec.purpose
            if basis == "legitimate_interest":  # no consent asked; an objection stops it
                action.objection_keys = (f"purpose:{spec.purpose}", f"channel:{channels[0]}")
            out.append((action, types))
            if len(channels) > 1:  # a preference list: the action once per channel, in order
                action.variants = (action, *(on_channel(action, other) for other in channels[1:]))
        return out

    def _basis(self, path: _Path, spec: ActionSpec) -> str:
        """The action's legal basis (`basis`, or the older `consent: required|exempt`)."""
        if spec.basis is not None and spec.consent is not None:
            self.problems.append(self.locator.problem(
                (*path, "consent"), "give the legal basis once: `basis` replaces `consent`"))
        basis = spec.basis or ("service" if spec.consent == "exempt" else "consent")
        if basis == "legitimate_interest" and not spec.purpose:
            self.problems.append(self.locator.problem(
                (*path, "purpose"), "basis legitimate_interest needs the purpose it serves "
                "(e.g. purpose: service_recovery); the customer may object to it"))
        return basis

    def _policy(self, conditions: ConditionCompiler) -> Policy:
        contact = self.model.contact_policy
        quiet: dict[str, tuple[int, int]] = {}
        for channel, hours in contact.quiet_hours.items():
            start = int(hours.start[:2]) * 60 + int(hours.start[3:])
            end = int(hours.end[:2]) * 60 + int(hours.end[3:])
            if start == end:
                self.problems.append(self.locator.problem(
                    ("contact_policy", "quiet_hours", channel), "start and end are equal"))
            quiet[channel] = (start, end)
        defaults: dict[str, bool] = {}
        opt_in = contact.consent_default == "opt_in"
        for spec in self.model.actions.values():
            for each in spec.channel_list():
                mode = contact.consent_by_channel.get(each, contact.consent_default)
                defaults[f"channel:{each}"] = mode == "opt_out"
            if spec.purpose:
                defaults[f"purpose:{spec.purpose}"] = not opt_in
        cap = contact.cap
        learning = None
        learn = self.model.learning
        if learn is not None:
            segments = []
            for index, name in enumerate(learn.segments):
                cond = self.attempt(("learning", "segments", index), conditions.segment, name) \
                    if name in self.model.segments else None
                if cond is None:
                    self.problems.append(self.locator.problem(
                        ("learning", "segments", index), f"unknown segment {name!r}"))
                    continue
                segments.append((name, cond))
            learning = LearningPolicy(learn.warm_up, learn.prior, segments, learn.refresh)
        keep = self.model.attribution.window if self.model.attribution is not None else 0
        policy = Policy(cap.max if cap else None, cap.within if cap else 0, quiet, defaults,
                        self.model.arbitration.max_per_event, learning, keep)
        policy.defer = frozenset(channel for channel, hours in contact.quiet_hours.items()
                                 if hours.mode == "defer")
        return policy

    def _channels(self, path: _Path, spec: ActionSpec) -> list[str]:
        """An action's channels in order of preference ([] after reporting a problem)."""
        if (spec.channel is None) == (spec.channels is None):
            self.problems.append(self.locator.problem(
                (*path, "channel"), "give either channel or channels (a preference list)"
                if spec.channel is not None else "needs a channel (or channels: a preference "
                "list such as [sms, email])"))
            return []
        channels: list[str] = [*spec.channel_list()]
        if len(set(channels)) != len(channels):
            self.problems.append(self.locator.problem(
                (*path, "channels"), "names a channel twice"))
            return []
        return channels


def _top_level(when: object) -> list[dict[str, object]]:
    """An action's top-level conditions (a list means all of them), those that are mappings."""
    items = when if isinstance(when, list) else [when]
    return [item for item in items if isinstance(item, dict)]


def _required_patterns(when: object) -> frozenset[str]:
    """Patterns named by top-level conditions (all of which must hold): the action can be
    eligible only on an event that fires every one of them."""
    return frozenset(name for item in _top_level(when)
                     if isinstance(name := item.get("pattern"), str))


def _trigger_types(when: object, pattern_types: dict[str, frozenset[str] | None]
                   ) -> frozenset[str] | None:
    """Event types an action can fire on, if its top-level conditions pin them down (an event
    condition with types, or a pattern, which fires only on events it looks at)."""
    for item in _top_level(when):
        if "event" in item:
            match = compile_match(item["event"])
            if match.types is not None:
                return match.types
        pattern = item.get("pattern")
        if isinstance(pattern, str):
            types = pattern_types.get(pattern)
            if types is not None:
                return types
    return None
