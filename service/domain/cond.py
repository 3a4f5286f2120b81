"""What a compiled condition is (`Cond`) and what it reads when it runs (`Env`), with the small
combinators the condition compilers share (conditions.py, subjects.py, localconds.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from schemas.event import Event
from service.domain.fields import fmt
from service.domain.profile import Profile

__all__ = ["Cond", "Env", "EnvGetter", "EnvTest", "ObjectTemplate", "conjunction", "text_of"]


class Env:
    """What one evaluation sees: the event, the updated profile, context data, fired patterns."""

    __slots__ = ("context", "event", "fired", "item", "prior", "profile", "segments")

    def __init__(self, event: Event, profile: Profile, context: Mapping[str, object],
                 fired: frozenset[str] | set[str]) -> None:
        self.event = event
        self.profile = profile
        self.context = context
        self.fired = fired
        self.segments: dict[str, bool] = {}
        self.item: object = None  # the list element a `for_any` context condition is looking at
        # each crossing's value before this event (only for rulebooks with one, else None)
        self.prior: tuple[object, ...] | None = None


#: a field path compiled: the value it reads (a JSON value from the event, profile or context)
EnvGetter = Callable[[Env], object]
EnvTest = Callable[[Env], bool]
#: a JSON object template compiled (a payload): the object it builds
ObjectTemplate = Callable[[Env], dict[str, object]]


class Cond:
    """A compiled condition: `test(env)` and, for reasons, `explain(env)` -> lines."""

    __slots__ = ("explain", "test", "text")

    def __init__(self, test: EnvTest, explain: Callable[[Env], list[str]], text: str) -> None:
        self.test = test
        self.explain = explain
        self.text = text


def conjunction(tests: tuple[EnvTest, ...]) -> EnvTest:
    """All of `tests` (two or three unrolled: the common cases, one call less each)."""
    if len(tests) == 2:
        first, second = tests
        return lambda env: first(env) and second(env)
    if len(tests) == 3:
        one, two, three = tests
        return lambda env: one(env) and two(env) and three(env)
    return lambda env: all(t(env) for t in tests)


def text_of(value: object) -> str:
    """A value as a reason shows it ('' for unset)."""
    if value is None:
        return ""
    return fmt(value)
