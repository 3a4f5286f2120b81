"""Points and traits compiled to one straight-line Python function per event type.

`apply_points` and `Trait.update` (scoring.py) are the reference semantics: a generic
interpreter that, per rule and per event, calls a function, re-reads the rule's options and
branches on them. For a given event type most of that is known at load time: which rules and
traits can react, whether a matcher has anything to check beyond the type (the type index
already matched it), whether a rule has a limit, a multiplier, a half-life, a cap. `compile_steps`
writes, for every event type the rulebook names (and one for all other types), a function that
does exactly what the interpreter's loops do for that type, in the same order, with the same
arithmetic on the same constant objects, minus the decisions already taken. The constants are
closure cells of a generated factory, never re-typed literals, so the floats are the same bits.

A Hypothesis property (tests/unit/domain/test_compiled.py) runs every example rulebook and
random event streams through both and compares the profiles byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.event import Event
from service.domain.fields import EventMatch, event_getter_source, is_number
from service.domain.profile import Profile
from service.domain.scoring import PointRule, Trait

__all__ = ["Step", "Steps", "compile_steps"]

Step = Callable[[Profile, Event], None]


class Steps:
    """The compiled step per event type; `any` for a type no points rule or trait names.
    A step is None where nothing can react."""

    __slots__ = ("any", "by_type", "sources")

    def __init__(self, by_type: dict[str, Step | None], any_step: Step | None,
                 sources: dict[str, str]) -> None:
        self.by_type = by_type
        self.any = any_step
        self.sources = sources  # the generated code per type ("*": any other), for debugging


def compile_steps(points_by_type: dict[str, tuple[PointRule, ...]],
                  points_any: tuple[PointRule, ...],
                  traits_by_type: dict[str, tuple[Trait, ...]],
                  traits_any: tuple[Trait, ...]) -> Steps:
    """One step per event type named by a points rule or a trait, and one for the rest."""
    by_type: dict[str, Step | None] = {}
    sources: dict[str, str] = {}
    for etype in sorted(set(points_by_type) | set(traits_by_type)):
        step, source = _compile(etype, points_by_type.get(etype, points_any),
                                traits_by_type.get(etype, traits_any))
        by_type[etype] = step
        sources[etype] = source
    any_step, source = _compile(None, points_any, traits_any)
    sources["*"] = source
    return Steps(by_type, any_step, sources)


class _Writer:
    """Source lines with indentation, and the constants the code refers to by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 2
        self.consts: list[object] = []

    def const(self, value: object) -> str:
        self.consts.append(value)
        return f"k{len(self.consts) - 1}"

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def open(self, text: str) -> None:
        self.line(text)
        self.depth += 1


def _type_can_match(match: EventMatch, etype: str | None) -> bool:
    """Whether an event of `etype` (None: a type no rule names) passes the matcher's type part."""
    return match.types is None or (etype is not None and etype in match.types)


def _compile(etype: str | None, points: tuple[PointRule, ...],
             traits: tuple[Trait, ...]) -> tuple[Step | None, str]:
    out = _Writer()
    for rule in points:
        depth = out.depth
        _point(out, rule, etype)
        out.depth = depth
    for trait in traits:
        depth = out.depth
        _trait(out, trait, etype)
        out.depth = depth
    if not out.lines:
        return None, "# nothing reacts to this event type\n"
    params = ", ".join(f"k{i}" for i in range(len(out.consts)))
    body = "\n".join(out.lines)
    source = (f"def _factory(is_number{', ' if params else ''}{params}):\n"
              f"    def step(profile, event):\n"
              f"        ts = event.ts_ms\n"
              f"        hits = profile.hits\n"
              f"        scores = profile.scores\n"
              f"        traits = profile.traits\n"
              f"{body}\n"
              f"    return step\n")
    namespace: dict[str, Any] = {}
    # the source is ours: rulebook values are constants' cells; only field names enter the
    # text, as repr() string literals, after compile_event_getter validated the path
    exec(compile(source, f"<touchflow steps for {etype or '*'}>", "exec"), namespace)
    step: Step = namespace["_factory"](is_number, *out.consts)
    return step, source


def _guard(out: _Writer, match: EventMatch) -> None:
    """Open an `if` on the non-type part of `match` (nothing when it has none)."""
    if not match.trivial_rest:
        out.open(f"if {out.const(match.rest)}(event):")


def _point(out: _Writer, rule: PointRule, etype: str | None) -> None:
    """apply_points(profile, event, rule), specialised."""
    if not _type_can_match(rule.match, etype):
        return  # not indexed under this type (cannot happen through TypeIndex; kept exact)
    out.line(f"# points {rule.key}")
    _guard(out, rule.match)
    key = out.const(rule.key)
    out.line(f"c = hits.get({key}, 0) + 1")
    limit = rule.nth or rule.max_times
    if limit is not None:
        out.open(f"if c <= {out.const(limit)}:")
    out.line(f"hits[{key}] = c")
    if rule.nth is not None:
        out.open(f"if c == {out.const(rule.nth)}:")
    out.line(f"pts = {out.const(rule.add)}")
    if rule.per is not None:
        source = event_getter_source(rule.per_path) if rule.per_path else None
        out.line(f"f = {source or out.const(rule.per) + '(event)'}")
        out.open("if is_number(f):")
        out.line("pts *= f")
    score = out.const(rule.score)
    if rule.half_life:
        out.line("sref = profile.sref_ms")
        out.open("if ts > sref:")
        if rule.decayed:
            out.open("if sref >= 0:")
            for name, half_life in rule.decayed:
                name_c, life_c = out.const(name), out.const(half_life)
                out.line(f"v = scores.get({name_c})")
                out.open("if v:")
                out.line(f"scores[{name_c}] = v * 0.5 ** ((ts - sref) / {life_c})")
                out.depth -= 1
            out.depth -= 1
        out.line("profile.sref_ms = ts")
        out.depth -= 1
        out.open("elif ts < sref:")
        out.line(f"pts *= 0.5 ** ((sref - ts) / {out.const(rule.half_life)})")
        out.depth -= 1
    out.line(f"v = scores.get({score}, 0.0) + pts")
    if rule.cap is not None:
        cap = out.const(rule.cap)
        out.open(f"if v > {cap}:")
        out.line(f"v = {cap}")
        out.depth -= 1
    if rule.floor is not None:
        floor = out.const(rule.floor)
        out.open(f"if v < {floor}:")
        out.line(f"v = {floor}")
        out.depth -= 1
    out.line(f"scores[{score}] = float(v)")


def _trait(out: _Writer, trait: Trait, etype: str | None) -> None:
    """trait.update(profile, event), specialised."""
    name = out.const(trait.name)
    out.line(f"# trait {trait.name}")
    clear = trait.clear
    if clear is not None and _type_can_match(clear, etype):
        if clear.trivial_rest:
            out.line(f"traits.pop({name}, None)")
            return
        out.open(f"if {out.const(clear.rest)}(event):")
        out.line(f"traits.pop({name}, None)")
        out.depth -= 1
        out.open("else:")
    match = trait.match
    if match is not None:
        if not _type_can_match(match, etype):
            out.line("pass")
            return
        _guard(out, match)
    kind = trait.kind
    if trait.folds:  # windowed or top: the trait's own fold (windowed.py), one call
        out.line(f"{out.const(trait.fold)}(profile, event)")
        return
    if kind == "count":
        out.line(f"traits[{name}] = traits.get({name}, 0) + 1")
        return
    if trait.field is None:
        out.line("pass")
        return
    source = event_getter_source(trait.field_path) if trait.field_path else None
    out.line(f"value = {source or out.const(trait.field) + '(event)'}")
    out.open("if value is not None:")
    if kind == "last":
        out.line(f"current = traits.get({name})")
        out.open("if current is None or ts >= current[1]:")
        out.line(f"traits[{name}] = [value, ts]")
    elif kind == "distinct":
        out.open("if isinstance(value, str | int | float | bool):")
        out.line(f"items = traits.get({name})")
        out.open("if items is None:")
        out.line(f"traits[{name}] = [value]")
        out.depth -= 1
        out.open("elif value not in items:")
        out.line("items.append(value)")
        out.open(f"if len(items) > {out.const(trait.max_items)}:")
        out.line("del items[0]")
    else:
        out.open("if is_number(value):")
        out.line(f"current = traits.get({name})")
        if kind == "sum":
            out.line(f"traits[{name}] = (current or 0) + value")
        elif kind == "max":
            out.line(f"traits[{name}] = value if current is None or value > current else current")
        elif kind == "min":
            out.line(f"traits[{name}] = value if current is None or value < current else current")
        else:  # mean
            out.line(f"traits[{name}] = [value, 1] if current is None else "
                     "[current[0] + value, current[1] + 1]")
