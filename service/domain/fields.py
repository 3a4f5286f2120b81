"""Compiled building blocks: event field getters, value tests, event matchers.

Everything here turns a rulebook fragment into a closure once, at load time, so that the hot
path never parses a path or an operator name. Compile functions raise `SpecError(path, msg)`
(path relative to the fragment) which `rules.py` turns into a file:line:field problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from schemas.event import Event

if TYPE_CHECKING:
    from typing_extensions import TypeIs

__all__ = [
    "OPS",
    "EventMatch",
    "SpecError",
    "compile_event_getter",
    "compile_match",
    "compile_ops",
    "digest32",
    "event_getter_source",
    "fmt",
    "format_ms",
    "is_number",
]

#: an event field's value (raw JSON from the event: None when absent)
Getter = Callable[[Event], object]
#: a check of a value (of any JSON type: each operator checks the type it needs)
Test = Callable[[object], bool]
_EVENT_ATTRS = ("type", "channel", "event_id", "occurred_at")
_MAPS = ("properties", "context", "identity")
OPS: dict[str, str] = {
    "eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "in": "in", "not_in": "not in", "exists": "exists", "contains": "contains",
}


class SpecError(ValueError):
    """A rulebook fragment that cannot be compiled; `path` is relative to the fragment."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def is_number(value: object) -> TypeIs[int | float]:
    """int or float, but not bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: object) -> str:
    """Stable short text for a value in a reason: 27.0 -> '27', 0.333333 -> '0.33'."""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def dig(value: object, keys: tuple[str, ...]) -> object:
    """Follow nested mapping keys; None when any step is missing."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _field_path(path: str) -> tuple[str, tuple[str, ...]]:
    """`event.properties.sku` -> ("properties", ("sku",)): the event part and the keys below
    it; SpecError for a path that names no event field."""
    parts = path.split(".")
    if parts[0] == "event":
        parts = parts[1:]
    if not parts or not all(parts):
        raise SpecError((), f"{path!r} is not a field path")
    head, rest = parts[0], tuple(parts[1:])
    if (head in _EVENT_ATTRS and not rest) or (head in _MAPS and rest):
        return head, rest
    raise SpecError(
        (),
        f"{path!r} is not an event field: use type, channel, event_id, occurred_at, "
        "properties.NAME, context.NAME or identity.NAME",
    )


def compile_event_getter(path: str) -> Getter:
    """`properties.sku` / `event.properties.sku` / `channel` -> a function of the event."""
    head, rest = _field_path(path)
    if not rest:
        if head == "type":
            return lambda event: event.type
        if head == "channel":
            return lambda event: event.channel
        if head == "event_id":
            return lambda event: event.event_id
        return lambda event: event.occurred_at
    if len(rest) == 1:
        name = rest[0]
        if head == "properties":
            return lambda event: event.properties.get(name)
        if head == "context":
            return lambda event: event.context.get(name)
        return lambda event: event.identity.get(name)
    if head == "properties":
        return lambda event: dig(event.properties, rest)
    if head == "context":
        return lambda event: dig(event.context, rest)
    return lambda event: dig(event.identity, rest)


def event_getter_source(path: str) -> str | None:
    """Python source reading `path` from a variable `event`, for the simple paths that
    `compile_event_getter` turns into one attribute or one `.get` (None for deeper paths)."""
    head, rest = _field_path(path)
    if not rest:
        return f"event.{head}"
    if len(rest) == 1:
        return f"event.{head}.get({rest[0]!r})"
    return None


def _op(name: str, arg: object) -> Test:
    if name in ("gt", "gte", "lt", "lte"):
        if not is_number(arg):
            raise SpecError((name,), "needs a number")
        bound = float(arg)
        if name == "gt":
            return lambda v: is_number(v) and v > bound
        if name == "gte":
            return lambda v: is_number(v) and v >= bound
        if name == "lt":
            return lambda v: is_number(v) and v < bound
        return lambda v: is_number(v) and v <= bound
    if name in ("in", "not_in"):
        if not isinstance(arg, list):
            raise SpecError((name,), "needs a list")
        member = _membership(arg)
        return member if name == "in" else (lambda v: not member(v))
    if name == "exists":
        if not isinstance(arg, bool):
            raise SpecError((name,), "needs true or false")
        return (lambda v: v is not None) if arg else (lambda v: v is None)
    if name == "contains":
        return lambda v: isinstance(v, list | str | dict) and _contains(v, arg)
    if name == "eq":
        return _equals(arg)
    if name == "ne":
        equal = _equals(arg)
        return lambda v: not equal(v)
    raise SpecError((name,), f"unknown operator; use one of {', '.join(OPS)}")


def _contains(container: list[object] | str | dict[object, object], item: object) -> bool:
    try:
        return item in container
    except TypeError:
        return False


def _equals(arg: object) -> Test:
    if isinstance(arg, bool):
        return lambda v: v is arg
    if is_number(arg):
        return lambda v: is_number(v) and v == arg
    return lambda v: v == arg


def _membership(items: list[object]) -> Test:
    if all(isinstance(i, str) for i in items):
        allowed = frozenset(items)
        return lambda v: isinstance(v, str) and v in allowed
    tests = [_equals(i) for i in items]
    return lambda v: any(t(v) for t in tests)


def compile_ops(spec: Mapping[str, object]) -> tuple[Test, str]:
    """`{gte: 25, lt: 50}` -> (test, '>= 25, < 50'). Keys outside OPS are the caller's."""
    tests: list[Test] = []
    texts: list[str] = []
    for name, arg in spec.items():
        if name not in OPS:
            continue
        tests.append(_op(name, arg))
        texts.append(f"{OPS[name]} {fmt(arg)}" if name != "exists" else f"exists={fmt(arg)}")
    if not tests:
        return (lambda v: bool(v)), "is set"
    if len(tests) == 1:
        return tests[0], texts[0]
    both = tuple(tests)
    return (lambda v: all(t(v) for t in both)), ", ".join(texts)


def compile_value_spec(spec: object) -> Test:
    """A property expectation: scalar (equals), list (one of) or an operator mapping."""
    if isinstance(spec, dict):
        unknown = [key for key in spec if key not in OPS]
        if unknown:
            raise SpecError((unknown[0],), f"unknown operator; use one of {', '.join(OPS)}")
        if not spec:
            raise SpecError((), "needs at least one operator")
        return compile_ops(spec)[0]
    if isinstance(spec, list):
        return _membership(spec)
    return _equals(spec)


class EventMatch:
    """A compiled event matcher: `types` (None = any type) for indexing, `test` for the whole
    match, and `rest`: the test minus the type check, for callers that indexed by type."""

    __slots__ = ("rest", "test", "text", "trivial_rest", "types")

    def __init__(self, types: frozenset[str] | None, test: Callable[[Event], bool], text: str,
                 rest: Callable[[Event], bool] | None = None,
                 trivial_rest: bool = False) -> None:
        self.types = types
        self.test = test
        self.text = text
        self.rest = rest if rest is not None else test
        # True: `rest` checks nothing (the matcher names only types), it is always true
        self.trivial_rest = trivial_rest


def _match_one(spec: object) -> EventMatch:
    if not isinstance(spec, dict):
        raise SpecError((), "an event matcher is a mapping with type, channel, properties")
    unknown = [key for key in spec if key not in ("type", "channel", "properties", "context")]
    if unknown:
        raise SpecError((unknown[0],), "unknown key; use type, channel, properties or context")
    types: frozenset[str] | None = None
    checks: list[Callable[[Event], bool]] = []
    rest: list[Callable[[Event], bool]] = []
    text: list[str] = []
    for key in ("type", "channel"):
        value = spec.get(key)
        if value is None:
            continue
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError((key,), "must be a name or a list of names")
        allowed = frozenset(names)
        if key == "type":
            types = allowed
            checks.append(_type_in(allowed))
        else:
            checks.append(_channel_in(allowed))
            rest.append(checks[-1])
        text.append("|".join(names) if key == "type" else f"on {'|'.join(names)}")
    text = [", ".join(text)] if text else []
    for key in ("properties", "context"):
        fields = spec.get(key)
        if fields is None:
            continue
        if not isinstance(fields, dict) or not fields:
            raise SpecError((key,), "must map field names to expected values")
        for name, expected in fields.items():
            try:
                check = compile_value_spec(expected)
                getter = compile_event_getter(f"{key}.{name}")
            except SpecError as exc:
                raise SpecError((key, name, *exc.path), exc.message) from None
            checks.append(_field_is(getter, check))
            rest.append(checks[-1])
            text.append(f"{name} {_spec_text(expected)}")
    return EventMatch(types, _all(checks), " ".join(text) or "any event", _all(rest),
                      trivial_rest=not rest)


def _type_in(allowed: frozenset[str]) -> Callable[[Event], bool]:
    return lambda e: e.type in allowed


def _channel_in(allowed: frozenset[str]) -> Callable[[Event], bool]:
    return lambda e: e.channel in allowed


def _field_is(getter: Getter, check: Test) -> Callable[[Event], bool]:
    return lambda e: check(getter(e))


def _spec_text(spec: object) -> str:
    if isinstance(spec, dict):
        return compile_ops(spec)[1]
    if isinstance(spec, list):
        return "in " + "|".join(fmt(s) for s in spec)
    return "= " + fmt(spec)


def _all(checks: list[Callable[[Event], bool]]) -> Callable[[Event], bool]:
    if not checks:
        return lambda e: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda e: first(e) and second(e)
    frozen = tuple(checks)
    return lambda e: all(c(e) for c in frozen)


def compile_match(spec: object) -> EventMatch:
    """A matcher, or a list of matchers of which any may match."""
    if isinstance(spec, list):
        if not spec:
            raise SpecError((), "an empty list of matchers matches nothing")
        parts: list[EventMatch] = []
        for index, item in enumerate(spec):
            try:
                parts.append(_match_one(item))
            except SpecError as exc:
                raise SpecError((index, *exc.path), exc.message) from None
        if len(parts) == 1:
            return parts[0]
        types: frozenset[str] | None = frozenset()
        for part in parts:
            types = None if types is None or part.types is None else types | part.types
        tests = tuple(p.test for p in parts)
        return EventMatch(types, lambda e: any(t(e) for t in tests),
                          " or ".join(p.text for p in parts))
    return _match_one(spec)


def digest32(*parts: str) -> str:
    """32 hex chars of sha256 over the parts joined by a unit separator."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def format_ms(millis: int) -> str:
    """1_800_000 -> '30m' (largest exact unit)."""
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
