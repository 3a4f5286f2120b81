"""Eligibility conditions and payload templates, compiled to closures over an `Env`.

A condition is a mapping naming one subject of the table in subjects.py, with the keys that
subject takes (operators `eq ne gt gte lt lte in not_in exists contains`, several = all must
hold), or a list meaning all of them; the table documents each subject (and examples/README.md
lists them). `ConditionCompiler` holds what the subjects' compilers share: the rulebook's
symbol tables, field paths, templates and segments.

Paths: `event.(type|channel|properties.X|context.X|identity.X)`, `trait.X`, `score.X`,
`segment.X`, `profile.customer_id`, `profile.key`, `item`, `local.*` (localconds.py). Templates
are strings with `{path}` placeholders; a string that is exactly one placeholder keeps the
value's JSON type.

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

from service.domain.cond import Cond, Env, EnvGetter, ObjectTemplate, conjunction, text_of
from service.domain.fields import OPS, SpecError, compile_event_getter, fmt
from service.domain.localconds import local_getter
from service.domain.profile import Profile
from service.domain.scoring import awarded
from service.domain.subjects import SUBJECTS

__all__ = ["Cond", "ConditionCompiler", "Env", "ScoreInfo"]

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


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

    def __init__(
        self,
        scores: dict[str, ScoreInfo],
        traits: dict[str, Callable[[Profile], object]],
        segments: Mapping[str, object],
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

    def object_template(self, value: Mapping[str, object]) -> ObjectTemplate:
        """A JSON object template (a payload) -> a function of the env building the object."""
        parts = []
        for key, item in value.items():
            try:
                parts.append((key, self.template(item)))
            except SpecError as exc:
                raise SpecError((key, *exc.path), exc.message) from None
        return lambda env: {k: f(env) for k, f in parts}

    def template(self, value: object) -> EnvGetter:
        """A JSON template (strings with `{path}` placeholders) -> a function of the env."""
        if isinstance(value, dict):
            return self.object_template(value)
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
            p if isinstance(p, str) else text_of(p(env)) for p in frozen
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

    def condition(self, spec: object) -> Cond:
        """Compile one condition (a list means all of them), from the table of subjects."""
        if isinstance(spec, list):
            return self.all_of(spec)
        if not isinstance(spec, dict):
            raise SpecError((), "a condition is a mapping (e.g. {score: x, gte: 1}) or a list")
        named = [key for key in spec if key in SUBJECTS]
        if len(named) != 1:
            raise SpecError((), "a condition names exactly one of " + ", ".join(SUBJECTS))
        name = named[0]
        subject = SUBJECTS[name]
        unknown = [key for key in spec if key != name and key not in OPS
                   and key not in subject.keys]
        if unknown:
            raise SpecError((unknown[0],), f"not allowed in a {name} condition")
        try:
            if not subject.ops and any(key in OPS for key in spec):
                raise SpecError((), f"a {name} condition takes no operators")
            return subject.compile(self, spec[name], spec)
        except SpecError as exc:
            raise SpecError((name, *exc.path), exc.message) from None

    def all_of(self, specs: list[object]) -> Cond:
        """Every one of the conditions holds."""
        parts = self._each(specs)
        tests = tuple(p.test for p in parts)
        if len(tests) == 1:
            return parts[0]
        return Cond(conjunction(tests),
                    lambda env: [line for p in parts for line in p.explain(env)],
                    " and ".join(p.text for p in parts))

    def any_of(self, specs: list[object]) -> Cond:
        """At least one of the conditions holds."""
        parts = self._each(specs)

        def explain(env: Env) -> list[str]:
            for part in parts:
                if part.test(env):
                    return part.explain(env)
            return ["none of: " + " or ".join(p.text for p in parts)]

        return Cond(lambda env: any(p.test(env) for p in parts), explain,
                    " or ".join(p.text for p in parts))

    def _each(self, specs: list[object]) -> list[Cond]:
        parts: list[Cond] = []
        for index, item in enumerate(specs):
            try:
                parts.append(self.condition(item))
            except SpecError as exc:
                raise SpecError((index, *exc.path), exc.message) from None
        if not parts:
            raise SpecError((), "needs at least one condition")
        return parts
