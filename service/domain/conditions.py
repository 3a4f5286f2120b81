"""Eligibility conditions and payload templates, compiled to closures over an `Env`.

Condition grammar (YAML): a list means "all of"; a mapping names one subject and operators
(`eq ne gt gte lt lte in not_in exists contains`, several = all must hold):

    - event: {type: flight_delayed, properties: {delay_minutes: {gte: 60}}}
    - {score: lead_score, gte: 25}
    - {trait: interest_category, eq: phones}       # no operator: the trait is truthy
    - {segment: heavy_web_user}                     # a named condition over the profile
    - {pattern: camera_views}                       # the window pattern fired on this event
    - {value: event.properties.price, lt: 100}      # any field path
    - {context: "stock:{item}:{event.properties.store_id}", gt: 0,
       for_any: trait.cart_skus, missing: false}    # reference data; `item` binds each element
    - {not: CONDITION}  {any: [CONDITIONS]}  {all: [CONDITIONS]}
    - {score: lead_score, crosses: 25}               # edge: below 25 before this event, >= now
    - {value: event.properties.price, lt: {path: trait.max_price}}  # compare two fields

Paths: `event.(type|channel|properties.X|context.X|identity.X)`, `trait.X`, `score.X`,
`segment.X`, `profile.customer_id`, `profile.key`, `item`. Templates are strings with `{path}`
placeholders; a string that is exactly one placeholder keeps the value's JSON type.

`crosses: T` (score and trait subjects, or a `value` path into them) holds only on the event
that takes the value from below T (or unset) to T or more: `decide()` reads every crossing's
value before it applies the event (`Env.prior`, by the crossing's index in the rulebook's
`crossings`; only for a rulebook that has one), which costs a read per crossing, not a copy
of the profile. An operator whose operand is `{path: P}` compares
with the value of path P (eq, ne, and for numbers gt, gte, lt, lte; a missing side is false).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from schemas.event import Event
from service.domain.fields import (
    OPS,
    SpecError,
    compile_event_getter,
    compile_match,
    compile_ops,
    fmt,
    is_number,
)
from service.domain.localconds import LOCAL_SUBJECTS, local_condition, local_getter
from service.domain.profile import Profile
from service.domain.scoring import awarded
from service.domain.signals import is_active, signal_key

__all__ = ["Cond", "ConditionCompiler", "Env", "ScoreInfo"]

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_SUBJECTS = ("event", "score", "trait", "segment", "pattern", "value", "context", "signal",
             "not", "any", "all", *LOCAL_SUBJECTS)
EnvGetter = Callable[["Env"], Any]


class Env:
    """What one evaluation sees: the event, the updated profile, context data, fired patterns."""

    __slots__ = ("context", "event", "fired", "item", "prior", "profile", "segments")

    def __init__(self, event: Event, profile: Profile, context: Mapping[str, Any],
                 fired: frozenset[str] | set[str]) -> None:
        self.event = event
        self.profile = profile
        self.context = context
        self.fired = fired
        self.segments: dict[str, bool] = {}
        self.item: Any = None
        # each crossing's value before this event (only for rulebooks with one, else None)
        self.prior: tuple[Any, ...] | None = None


class Cond:
    """A compiled condition: `test(env)` and, for reasons, `explain(env)` -> lines."""

    __slots__ = ("explain", "test", "text")

    def __init__(self, test: Callable[[Env], bool], explain: Callable[[Env], list[str]],
                 text: str) -> None:
        self.test = test
        self.explain = explain
        self.text = text


class ScoreInfo:
    """What conditions need to know about a score: decay and its rules, for reasons."""

    __slots__ = ("half_life", "name", "rules")

    def __init__(self, name: str, half_life: int | None,
                 rules: list[tuple[str, str, float, int | None, int | None]]) -> None:
        self.name = name
        self.half_life = half_life
        self.rules = rules  # (hit key, label, points, max_times, nth)

    def read(self, profile: Profile) -> float:
        """The score now (at the newest event time of the profile)."""
        value = profile.scores.get(self.name, 0.0)
        if self.half_life and value and profile.newest_ms > profile.sref_ms:
            value *= 0.5 ** ((profile.newest_ms - profile.sref_ms) / self.half_life)
        return value

    def breakdown(self, profile: Profile) -> str:
        """'forum +10 x1, whitepaper +2 x1' from the profile's hit counters."""
        hits = profile.hits
        parts = []
        for key, label, points, max_times, nth in self.rules:
            paid = awarded(hits.get(key, 0), max_times, nth)
            if paid:
                sign = "" if points < 0 else "+"
                parts.append(f"{label} {sign}{fmt(points)}" + (f" x{paid}" if paid > 1 else ""))
        return ", ".join(parts)


class ConditionCompiler:
    """Compiles conditions against the rulebook's symbol tables."""

    SUBJECTS = _SUBJECTS  # the condition subjects (also for the rulebook's JSON Schema)

    def __init__(
        self,
        scores: dict[str, ScoreInfo],
        traits: dict[str, Callable[[Profile], Any]],
        segments: dict[str, Any],
        patterns: dict[str, str],
        signals: set[str] | None = None,
    ) -> None:
        self.signals = signals or set()
        self.scores = scores
        self.traits = traits
        self.segment_specs = segments
        self.segments: dict[str, Cond] = {}
        self.patterns = patterns
        self._compiling: list[str] = []
        # the value getter of each `crosses` condition: decide() reads them before the event
        self.crossings: list[EnvGetter] = []

    # -- paths and templates ----------------------------------------------------------------

    def getter(self, path: str) -> EnvGetter:
        """A field path (see module doc) -> a function of the env."""
        head, _, rest = path.partition(".")
        if path == "item":
            return lambda env: env.item
        if head == "event":
            get = compile_event_getter(path)
            return lambda env: get(env.event)
        if head == "trait" and rest in self.traits:
            read = self.traits[rest]
            return lambda env: read(env.profile)
        if head == "score" and rest in self.scores:
            info = self.scores[rest]
            return lambda env: info.read(env.profile)
        if head == "segment" and rest in self.segment_specs:
            cond = self.segment(rest)
            return cond.test
        if path == "profile.customer_id":
            return lambda env: env.profile.customer_id
        if path == "profile.key":
            return lambda env: env.profile.key
        if head == "local":  # the customer's local clock (localconds.py)
            return local_getter(path)
        if head in ("trait", "score", "segment"):
            raise SpecError((), f"{path!r}: there is no {head} named {rest!r}")
        raise SpecError((), f"{path!r} is not a known path (event.*, trait.*, score.*, "
                            "segment.*, profile.customer_id, profile.key, item)")

    def template(self, value: Any) -> EnvGetter:
        """A JSON template (strings with `{path}` placeholders) -> a function of the env."""
        if isinstance(value, dict):
            parts = []
            for key, item in value.items():
                try:
                    parts.append((key, self.template(item)))
                except SpecError as exc:
                    raise SpecError((key, *exc.path), exc.message) from None
            return lambda env: {k: f(env) for k, f in parts}
        if isinstance(value, list):
            items = [self.template(item) for item in value]
            return lambda env: [f(env) for f in items]
        if not isinstance(value, str) or "{" not in value:
            return lambda env: value
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return self.getter(whole.group(1).strip())
        pieces: list[str | EnvGetter] = []
        last = 0
        for match in _PLACEHOLDER.finditer(value):
            pieces.append(value[last:match.start()])
            pieces.append(self.getter(match.group(1).strip()))
            last = match.end()
        pieces.append(value[last:])
        frozen = tuple(p for p in pieces if p != "")
        return lambda env: "".join(
            p if isinstance(p, str) else _text(p(env)) for p in frozen
        )

    # -- conditions -------------------------------------------------------------------------

    def segment(self, name: str) -> Cond:
        """The compiled segment `name` (compiled on first use; cycles are errors)."""
        found = self.segments.get(name)
        if found is not None:
            return found
        if name in self._compiling:
            raise SpecError((), "segments refer to each other in a cycle: "
                                + " -> ".join([*self._compiling, name]))
        self._compiling.append(name)
        try:
            inner = self.condition(self.segment_specs[name])
        finally:
            self._compiling.pop()

        def test(env: Env) -> bool:
            cache = env.segments
            known = cache.get(name)
            if known is None:
                known = cache[name] = inner.test(env)
            return known

        cond = Cond(test, lambda env: [f"segment {name} ({'; '.join(inner.explain(env))})"],
                    f"segment {name}")
        self.segments[name] = cond
        return cond

    def condition(self, spec: Any) -> Cond:
        """Compile one condition (a list means all of them)."""
        if isinstance(spec, list):
            return self._all(spec)
        if not isinstance(spec, dict):
            raise SpecError((), "a condition is a mapping (e.g. {score: x, gte: 1}) or a list")
        subjects = [key for key in spec if key in _SUBJECTS]
        if len(subjects) != 1:
            raise SpecError((), "a condition names exactly one of " + ", ".join(_SUBJECTS))
        subject = subjects[0]
        allowed = set(OPS) | {subject}
        if subject in ("score", "trait", "value"):
            allowed.add("crosses")
        if subject == "context":
            allowed |= {"for_any", "missing"}
        if subject == "signal":
            allowed = {"signal", "key"}
        unknown = [key for key in spec if key not in allowed]
        if unknown:
            raise SpecError((unknown[0],), f"not allowed in a {subject} condition")
        arg = spec[subject]
        try:
            return self._subject(subject, arg, spec)
        except SpecError as exc:
            raise SpecError((subject, *exc.path) if exc.path else (subject,), exc.message) from None

    def _subject(self, subject: str, arg: Any, spec: dict[str, Any]) -> Cond:
        has_ops = any(key in OPS for key in spec)
        if subject in LOCAL_SUBJECTS:  # the customer's local clock (localconds.py)
            if has_ops:
                raise SpecError((), f"a {subject} condition takes no operators")
            return Cond(*local_condition(subject, arg))
        if subject in ("event", "segment", "pattern", "not", "any", "all") and has_ops:
            raise SpecError((), f"a {subject} condition takes no operators")
        if subject == "event":
            match = compile_match(arg)
            mtest = match.test
            return Cond(lambda env: mtest(env.event),
                        lambda env: [f"event {match.text}"],
                        f"event {match.text}")
        if subject == "not":
            inner = self.condition(arg)
            itest = inner.test
            return Cond(lambda env: not itest(env),
                        lambda env: [f"not ({'; '.join(inner.explain(env))})"],
                        f"not {inner.text}")
        if subject in ("any", "all"):
            if not isinstance(arg, list) or not arg:
                raise SpecError((), "needs a non-empty list of conditions")
            return self._all(arg) if subject == "all" else self._any(arg)
        if not isinstance(arg, str):
            raise SpecError((), "needs a name" if subject != "context" else "needs a key template")
        if subject == "segment":
            if arg not in self.segment_specs:
                raise SpecError((), f"there is no segment named {arg!r}")
            return self.segment(arg)
        if subject == "signal":
            return self._signal(arg, spec)
        if subject == "pattern":
            if arg not in self.patterns:
                raise SpecError((), f"there is no pattern named {arg!r}")
            described = self.patterns[arg]
            return Cond(lambda env: arg in env.fired,
                        lambda env: [f"pattern {arg}: {described}"], f"pattern {arg}")
        if subject == "context":
            check, optext = compile_ops(spec)
            return self._context(arg, spec, check, optext)
        path = arg if subject == "value" else f"{subject}.{arg}"
        get = self.getter(path)
        if "crosses" in spec or _has_path_operand(spec):
            return self._relational(subject, path, get, spec)
        check, optext = compile_ops(spec)
        if subject == "score":
            info = self.scores[arg]

            def explain_score(env: Env) -> list[str]:
                points = info.breakdown(env.profile)
                tail = f" (points: {points})" if points else ""
                return [f"{arg} {fmt(float(get(env)))} {optext}{tail}"]

            return Cond(lambda env: check(get(env)), explain_score, f"{arg} {optext}")
        return Cond(lambda env: check(get(env)),
                    lambda env: [f"{path} = {_text(get(env))} {optext}"], f"{path} {optext}")

    def _relational(self, subject: str, path: str, get: EnvGetter, spec: dict[str, Any]
                    ) -> Cond:
        """A condition with a crossing and/or operators comparing with another path."""
        tests: list[Callable[[Env], bool]] = []
        texts: list[str] = []
        others: list[tuple[str, EnvGetter]] = []
        index = -1
        constant = {k: v for k, v in spec.items() if k in OPS and not _is_path_operand(v)}
        if constant:
            check, optext = compile_ops(constant)
            tests.append(lambda env: check(get(env)))
            texts.append(optext)
        for name, operand in spec.items():
            if name in OPS and _is_path_operand(operand):
                if name not in _COMPARE:
                    raise SpecError((name,), "compares with a {path: ...} only as eq, ne, gt, "
                                             "gte, lt or lte")
                other_path = operand["path"]
                if not isinstance(other_path, str):
                    raise SpecError((name, "path"), "needs a field path, e.g. trait.max_price")
                try:
                    other = self.getter(other_path)
                except SpecError as exc:
                    raise SpecError((name, "path"), exc.message) from None
                tests.append(_compare(_COMPARE[name], get, other))
                texts.append(f"{OPS[name]} {other_path}")
                others.append((other_path, other))
        if "crosses" in spec:
            if not is_number(spec["crosses"]):
                raise SpecError(("crosses",), "needs a number, e.g. crosses: 25")
            if path.partition(".")[0] not in ("score", "trait"):
                raise SpecError(("crosses",), "a crossing needs a score or a trait (the value "
                                              "before the event is read from the profile)")
            index = len(self.crossings)
            self.crossings.append(get)
            tests.append(_crossing(get, float(spec["crosses"]), index))
            texts.append(f"crosses {fmt(spec['crosses'])}")
        test = tests[0] if len(tests) == 1 else _conjunction(tuple(tests))
        optext = ", ".join(texts)
        label = path.partition(".")[2] if subject == "score" else path

        def explain(env: Env) -> list[str]:
            line = f"{label} {_text(get(env))} {optext}"
            if "crosses" in spec and env.prior is not None:
                line += f" (was {_text(env.prior[index]) or 'unset'})"
            for other_path, other in others:
                line += f" ({other_path} = {_text(other(env)) or 'unset'})"
            return [line]

        return Cond(test, explain, f"{label} {optext}")

    def _signal(self, name: str, spec: dict[str, Any]) -> Cond:
        if name not in self.signals:
            raise SpecError((), f"there is no signal named {name!r}")
        if "key" not in spec:
            raise SpecError(("key",), "needs the group key template, e.g. "
                                      "\"{event.properties.sku}\"")
        try:
            key_of = self.template(spec["key"])
        except SpecError as exc:
            raise SpecError(("key", *exc.path), exc.message) from None

        def test(env: Env) -> bool:
            return is_active(env.context, name, str(key_of(env)), env.event.ts_ms)

        def explain(env: Env) -> list[str]:
            key = str(key_of(env))
            value = env.context.get(signal_key(name, key))
            if test(env) and isinstance(value, dict):
                return [f"signal {name} active for {key}: {value.get('reason', '')}"]
            return [f"signal {name} not active for {key}"]

        return Cond(test, explain, f"signal {name}")

    def _context(self, template: str, spec: dict[str, Any], check: Callable[[Any], bool],
                 optext: str) -> Cond:
        key_of = self.template(template)
        missing = spec.get("missing", False)
        if not isinstance(missing, bool):
            raise SpecError(("missing",), "must be true or false (the result for a missing key)")
        for_any = spec.get("for_any")

        def one(env: Env) -> bool:
            value = env.context.get(str(key_of(env)))
            return missing if value is None else check(value)

        def describe(env: Env) -> str:
            key = str(key_of(env))
            value = env.context.get(key)
            shown = "missing" if value is None else _text(value)
            return f"context {key} = {shown} (needs {optext})"

        if for_any is None:
            return Cond(one, lambda env: [describe(env)], f"context {template} {optext}")
        if not isinstance(for_any, str):
            raise SpecError(("for_any",), "needs a path to a list, e.g. trait.cart_skus")
        items_of = self.getter(for_any)

        def any_item(env: Env) -> bool:
            items = items_of(env)
            if not isinstance(items, list):
                return False
            saved = env.item
            try:
                for item in items:
                    env.item = item
                    if one(env):
                        return True
                return False
            finally:
                env.item = saved

        def explain_items(env: Env) -> list[str]:
            items = items_of(env)
            saved = env.item
            lines = []
            try:
                for item in items if isinstance(items, list) else []:
                    env.item = item
                    lines.append(describe(env))
            finally:
                env.item = saved
            return lines or [f"context: {for_any} is empty"]

        return Cond(any_item, explain_items, f"context {template} {optext} for any {for_any}")

    def _all(self, specs: list[Any]) -> Cond:
        parts = self._each(specs)
        tests = tuple(p.test for p in parts)
        if len(tests) == 1:
            return parts[0]
        return Cond(_conjunction(tests),
                    lambda env: [line for p in parts for line in p.explain(env)],
                    " and ".join(p.text for p in parts))

    def _any(self, specs: list[Any]) -> Cond:
        parts = self._each(specs)

        def explain(env: Env) -> list[str]:
            for part in parts:
                if part.test(env):
                    return part.explain(env)
            return ["none of: " + " or ".join(p.text for p in parts)]

        return Cond(lambda env: any(p.test(env) for p in parts), explain,
                    " or ".join(p.text for p in parts))

    def _each(self, specs: list[Any]) -> list[Cond]:
        parts: list[Cond] = []
        for index, item in enumerate(specs):
            try:
                parts.append(self.condition(item))
            except SpecError as exc:
                raise SpecError((index, *exc.path), exc.message) from None
        if not parts:
            raise SpecError((), "needs at least one condition")
        return parts


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
}


def _is_path_operand(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"path"}


def _has_path_operand(spec: dict[str, Any]) -> bool:
    return any(key in OPS and _is_path_operand(value) for key, value in spec.items())


def _compare(op: Callable[[Any, Any], bool], left: EnvGetter, right: EnvGetter
             ) -> Callable[[Env], bool]:
    """Two paths' values compared: both numbers (not booleans), or for eq/ne, any two set
    values of one JSON type; a missing side makes the comparison false."""
    ordering = op not in (_COMPARE["eq"], _COMPARE["ne"])

    def test(env: Env) -> bool:
        a, b = left(env), right(env)
        if a is None or b is None:
            return False
        if is_number(a) and is_number(b):
            return op(a, b)
        if ordering or isinstance(a, bool) != isinstance(b, bool):
            return False
        return op(a, b)

    return test


def _crossing(get: EnvGetter, threshold: float, index: int) -> Callable[[Env], bool]:
    """True when the value is >= threshold now and was below it (or unset) before the event
    (`env.prior[index]`, read by decide() before it applied the event)."""

    def test(env: Env) -> bool:
        now = get(env)
        if not is_number(now) or now < threshold or env.prior is None:
            return False
        before = env.prior[index]
        return not is_number(before) or before < threshold

    return test


def _conjunction(tests: tuple[Callable[[Env], bool], ...]) -> Callable[[Env], bool]:
    if len(tests) == 2:
        first, second = tests
        return lambda env: first(env) and second(env)
    if len(tests) == 3:
        one, two, three = tests
        return lambda env: one(env) and two(env) and three(env)
    return lambda env: all(t(env) for t in tests)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return fmt(value)
