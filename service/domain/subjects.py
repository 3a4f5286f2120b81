"""The condition subjects, one table: a condition is a mapping naming one subject of `SUBJECTS`
(`{score: lead_score, gte: 25}`), or a list meaning all of them.

Each entry says everything the rest of the code knows of its subject: the keys it takes besides
its own (`keys`, each with its JSON Schema fragment and a description) and whether it takes the
operators (`eq ne gt gte lt lte in not_in exists contains`, fields.py; an operand `{path: P}`
compares with another path), its compiler, the schema of its own value, a one-line doc and an
example. `ConditionCompiler.condition` (conditions.py) checks the keys and dispatches from it,
rulebook_schema.py builds the JSON Schema's `Condition` from it, and scripts/conditions_doc.py
writes the conditions table of examples/README.md from it. A new subject is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.domain.cond import Cond, Env, EnvGetter, EnvTest, conjunction, text_of
from service.domain.fields import OPS, SpecError, compile_match, compile_ops, fmt, is_number
from service.domain.localconds import CLOCK_PATTERN, local_day, local_time
from service.domain.localtime import WEEKDAYS
from service.domain.signals import is_active, signal_key

if TYPE_CHECKING:
    from service.domain.conditions import ConditionCompiler

__all__ = ["SUBJECTS", "JsonSchema", "Subject", "SubjectCompiler"]

#: a JSON Schema fragment (draft 2020-12)
JsonSchema = Mapping[str, object]
#: (the compiler, the subject's value, the whole condition mapping) -> the compiled condition;
#: the value and the mapping are raw YAML, checked here
SubjectCompiler = Callable[["ConditionCompiler", object, Mapping[str, object]], Cond]


@dataclass(frozen=True, slots=True)
class Subject:
    """One condition subject (see the module doc)."""

    name: str
    doc: str  # one line: the docs table and the schema's description
    compile: SubjectCompiler
    arg: JsonSchema  # the schema of the subject's own value
    example: str  # a condition in YAML flow style, for the docs table
    ops: bool = False  # takes the operators
    paths: bool = False  # an operator's operand may be another field, `{path: P}`
    keys: Mapping[str, JsonSchema] = field(default_factory=dict)  # its other keys


def _name(arg: object, need: str = "needs a name") -> str:
    if not isinstance(arg, str):
        raise SpecError((), need)
    return arg


# -- compilers -------------------------------------------------------------------------------

def _event(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    match = compile_match(arg)
    mtest = match.test
    return Cond(lambda env: mtest(env.event), lambda env: [f"event {match.text}"],
                f"event {match.text}")


def _not(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    inner = c.condition(arg)
    itest = inner.test
    return Cond(lambda env: not itest(env),
                lambda env: [f"not ({'; '.join(inner.explain(env))})"], f"not {inner.text}")


def _conditions(arg: object) -> list[object]:
    if not isinstance(arg, list) or not arg:
        raise SpecError((), "needs a non-empty list of conditions")
    return arg


def _all(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    return c.all_of(_conditions(arg))


def _any(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    return c.any_of(_conditions(arg))


def _segment(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    name = _name(arg)
    if name not in c.segment_specs:
        raise SpecError((), f"there is no segment named {name!r}")
    return c.segment(name)


def _pattern(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    name = _name(arg)
    if name not in c.patterns:
        raise SpecError((), f"there is no pattern named {name!r}")
    described = c.patterns[name]
    return Cond(lambda env: name in env.fired, lambda env: [f"pattern {name}: {described}"],
                f"pattern {name}")


def _signal(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    name = _name(arg)
    if name not in c.signals:
        raise SpecError((), f"there is no signal named {name!r}")
    if "key" not in spec:
        raise SpecError(("key",), "needs the group key template, e.g. \"{event.properties.sku}\"")
    try:
        key_of = c.template(spec["key"])
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


def _context(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    template = _name(arg, "needs a key template")
    check, optext = compile_ops(spec)
    key_of = c.template(template)
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
        shown = "missing" if value is None else text_of(value)
        return f"context {key} = {shown} (needs {optext})"

    if for_any is None:
        return Cond(one, lambda env: [describe(env)], f"context {template} {optext}")
    if not isinstance(for_any, str):
        raise SpecError(("for_any",), "needs a path to a list, e.g. trait.cart_skus")
    items_of = c.getter(for_any)

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


def _score(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    name = _name(arg)
    path = f"score.{name}"
    get = c.getter(path)
    if _relational(spec):
        return _compare_paths(c, path, name, get, spec)
    check, optext = compile_ops(spec)
    info = c.scores[name]

    def explain(env: Env) -> list[str]:
        points = info.breakdown(env.profile)
        tail = f" (points: {points})" if points else ""
        return [f"{name} {fmt(float(info.read(env.profile)))} {optext}{tail}"]

    return Cond(lambda env: check(get(env)), explain, f"{name} {optext}")


def _trait(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    return _field(c, f"trait.{_name(arg)}", spec)


def _value(c: ConditionCompiler, arg: object, spec: Mapping[str, object]) -> Cond:
    return _field(c, _name(arg), spec)


def _field(c: ConditionCompiler, path: str, spec: Mapping[str, object]) -> Cond:
    """A trait or any path: its value passes the operators (no operator: it is truthy)."""
    get = c.getter(path)
    if _relational(spec):
        return _compare_paths(c, path, path, get, spec)
    check, optext = compile_ops(spec)
    return Cond(lambda env: check(get(env)),
                lambda env: [f"{path} = {text_of(get(env))} {optext}"], f"{path} {optext}")


# -- crossings and comparisons of two paths (score, trait, value) -----------------------------

# (over JSON values of any type: _compare lets only two numbers reach an ordering)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
}


def _is_path_operand(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"path"}


def _relational(spec: Mapping[str, object]) -> bool:
    """Whether the condition has a crossing or compares with another path."""
    return "crosses" in spec or any(key in OPS and _is_path_operand(value)
                                    for key, value in spec.items())


def _compare_paths(c: ConditionCompiler, path: str, label: str, get: EnvGetter,
                   spec: Mapping[str, object]) -> Cond:
    """A condition with a crossing and/or operators comparing with another path."""
    tests: list[EnvTest] = []
    texts: list[str] = []
    others: list[tuple[str, EnvGetter]] = []
    index = -1
    constant = {k: v for k, v in spec.items() if k in OPS and not _is_path_operand(v)}
    if constant:
        check, optext = compile_ops(constant)
        tests.append(lambda env: check(get(env)))
        texts.append(optext)
    for name, operand in spec.items():
        if name in OPS and isinstance(operand, dict) and _is_path_operand(operand):
            if name not in _COMPARE:
                raise SpecError((name,), "compares with a {path: ...} only as eq, ne, gt, "
                                         "gte, lt or lte")
            other_path = operand["path"]
            if not isinstance(other_path, str):
                raise SpecError((name, "path"), "needs a field path, e.g. trait.max_price")
            try:
                other = c.getter(other_path)
            except SpecError as exc:
                raise SpecError((name, "path"), exc.message) from None
            tests.append(_compare(_COMPARE[name], get, other))
            texts.append(f"{OPS[name]} {other_path}")
            others.append((other_path, other))
    crosses = spec.get("crosses")
    if "crosses" in spec:
        if not isinstance(crosses, int | float) or not is_number(crosses):
            raise SpecError(("crosses",), "needs a number, e.g. crosses: 25")
        if path.partition(".")[0] not in ("score", "trait"):
            raise SpecError(("crosses",), "a crossing needs a score or a trait (the value "
                                          "before the event is read from the profile)")
        index = len(c.crossings)
        c.crossings.append(get)
        tests.append(_crossing(get, float(crosses), index))
        texts.append(f"crosses {fmt(crosses)}")
    test = tests[0] if len(tests) == 1 else conjunction(tuple(tests))
    optext = ", ".join(texts)

    def explain(env: Env) -> list[str]:
        line = f"{label} {text_of(get(env))} {optext}"
        if "crosses" in spec and env.prior is not None:
            line += f" (was {text_of(env.prior[index]) or 'unset'})"
        for other_path, other in others:
            line += f" ({other_path} = {text_of(other(env)) or 'unset'})"
        return [line]

    return Cond(test, explain, f"{label} {optext}")


def _compare(op: Callable[[Any, Any], bool], left: EnvGetter, right: EnvGetter
             ) -> EnvTest:
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


def _crossing(get: EnvGetter, threshold: float, index: int) -> EnvTest:
    """True when the value is >= threshold now and was below it (or unset) before the event
    (`env.prior[index]`, read by decide() before it applied the event)."""

    def test(env: Env) -> bool:
        now = get(env)
        if not is_number(now) or now < threshold or env.prior is None:
            return False
        before = env.prior[index]
        return not is_number(before) or before < threshold

    return test


# -- the table ---------------------------------------------------------------------------------

_NAME: JsonSchema = {"type": "string"}
_CONDITION: JsonSchema = {"$ref": "#/$defs/Condition"}
_CONDITIONS: JsonSchema = {"type": "array", "items": _CONDITION, "minItems": 1}
_CROSSES: dict[str, JsonSchema] = {"crosses": {
    "type": "number", "description": "true only on the event that takes the value from below "
    "this to at or above it"}}
_CLOCK: JsonSchema = {"type": "string", "pattern": CLOCK_PATTERN}
_DAY: JsonSchema = {"enum": list(WEEKDAYS)}

SUBJECTS: dict[str, Subject] = {s.name: s for s in (
    Subject("event", "the event matches (a MATCHER: type, channel, properties, context)",
            _event, {"$ref": "#/$defs/EventMatcher"},
            "{event: {type: flight_delayed, properties: {delay_minutes: {gte: 60}}}}"),
    Subject("score", "a score's value, decayed to the customer's newest event, passes the "
            "operators", _score, _NAME, "{score: lead_score, gte: 25}", ops=True,
            paths=True, keys=_CROSSES),
    Subject("trait", "a trait's value passes the operators (no operator: it is truthy)",
            _trait, _NAME, "{trait: interest_category, eq: phones}", ops=True, paths=True,
            keys=_CROSSES),
    Subject("segment", "the named condition of `segments` holds", _segment, _NAME,
            "{segment: heavy_web_user}"),
    Subject("pattern", "the pattern fired on this event", _pattern, _NAME,
            "{pattern: camera_views}"),
    Subject("value", "any path's value passes the operators (event.*, trait.*, score.*, "
            "segment.*, local.*, profile.customer_id, profile.key, item)", _value, _NAME,
            "{value: event.properties.price, lt: {path: trait.max_price}}", ops=True,
            paths=True, keys=_CROSSES),
    Subject("context", "the reference data under a key template passes the operators",
            _context, _NAME, "{context: \"stock:{item}\", gt: 0, for_any: trait.cart_skus, "
            "missing: false}", ops=True, keys={
                "for_any": {"type": "string", "description": "a path to a list: holds for "
                            "any element, `{item}` in the key"},
                "missing": {"type": "boolean", "description": "the result when the key has "
                            "no value (default false)"}}),
    Subject("signal", "a cross-customer signal is active for the key", _signal, _NAME,
            "{signal: complaints_spike, key: \"{event.properties.sku}\"}", keys={
                "key": {"description": "the group key template, e.g. "
                        "\"{event.properties.sku}\""}}),
    Subject("not", "the condition does not hold", _not, _CONDITION,
            "{not: {segment: heavy_web_user}}"),
    Subject("any", "at least one of the conditions holds", _any, _CONDITIONS,
            "{any: [{trait: vip}, {score: lead_score, gte: 50}]}"),
    Subject("all", "every one of the conditions holds (as a list does)", _all, _CONDITIONS,
            "{all: [{trait: vip}, {local_day: [sat, sun]}]}"),
    Subject("local_time", "the customer's local time is in [from, to) (their own zone; may "
            "wrap midnight)", local_time,
            {"type": "array", "items": _CLOCK, "minItems": 2, "maxItems": 2},
            "{local_time: [\"18:00\", \"23:00\"]}"),
    Subject("local_day", "the customer's local day of the week is one of these", local_day,
            {"anyOf": [_DAY, {"type": "array", "items": _DAY, "minItems": 1}]},
            "{local_day: [sat, sun]}"),
)}
