"""The generated per-event-type steps (compiled.py) against the interpreter (scoring.py)."""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import CHANNELS, Event
from service.domain import Profile, Rulebook, load_rulebook, parse_rulebook
from service.domain.scoring import apply_points
from tests.events import unchecked_event

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# Every option the points and traits compilers branch on, in one rulebook.
EXOTIC_TEXT = dedent("""\
    version: "compiled-1"
    scores:
      plain: {points: [{when: {type: a}, add: 1}, {when: {channel: sms}, add: 2}]}
      limited:
        cap: 9
        floor: -3
        points:
          - {name: once, when: {type: a, properties: {flag: true}}, add: 4, max_times: 1}
          - {name: second, when: {type: [a, b]}, add: -2.5, nth: 2}
          - {name: scaled, when: {type: c}, add: 0.1, per: properties.amount}
          - {name: deep, when: {type: c}, add: 3, per: properties.basket.total}
      fading:
        half_life: 90m
        floor: 0
        points:
          - {when: [{type: a, channel: web}, {type: b, properties: {reason: [x, y]}}], add: 7}
          - {when: {type: c, properties: {amount: {gte: 10, lt: 500}}}, add: 1.5}
      slow:
        half_life: 2d
        points: [{when: {type: [a, c]}, add: 11}]
    traits:
      last_reason: {kind: last, field: properties.reason}
      first_channel_count: {kind: count, when: {channel: [web, store]}}
      total: {kind: sum, field: properties.amount, when: {type: c}}
      top: {kind: max, field: properties.amount}
      low: {kind: min, field: properties.amount, when: {type: c, properties: {flag: false}}}
      avg: {kind: mean, field: properties.amount, bands: {small: 0, big: 100}}
      seen:
        kind: distinct
        field: properties.sku
        when: {type: [a, b]}
        clear_when: {type: c, properties: {flag: true}}
        max_items: 2
      wiped:
        kind: distinct
        field: properties.sku
        clear_when: {type: b}
      nested: {kind: last, field: properties.basket.total}
      typed: {kind: last, field: type, when: {type: b}}
      recent_n: {kind: count, when: {type: a}, within: 2h, keep: 3}
      recent_sum: {kind: sum, field: properties.amount, within: 90m}
      recent_top: {kind: top, field: properties.sku, within: 1d}
      kinds_seen: {kind: distinct_count, field: properties.sku, within: 3h}
      fav:
        kind: top
        field: properties.reason
        max_items: 2
        clear_when: {type: c, properties: {flag: true}}
    actions:
      hello: {channel: web, consent: exempt, when: [{score: plain, gte: 1}]}
    """)
EXOTIC = parse_rulebook(EXOTIC_TEXT, "compiled.yaml")

_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = re.compile(r"properties\.(\w+)|properties: \{(\w+)")


def _books() -> list[tuple[str, Rulebook, str]]:
    """(name, rulebook, its text)."""
    books = [("exotic", EXOTIC, EXOTIC_TEXT)]
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "rulebook.yaml").exists()):
        path = folder / "rulebook.yaml"
        books.append((folder.name, load_rulebook(path), path.read_text()))
    return books


BOOKS = _books()


def _interpret(profile: Profile, event: Event, book: Rulebook) -> None:
    points, traits = book.points, book.traits
    for rule in points.by_type.get(event.type, points.any):
        apply_points(profile, event, rule)
    for trait in traits.by_type.get(event.type, traits.any):
        trait.update(profile, event)


def _compiled(profile: Profile, event: Event, book: Rulebook) -> None:
    step = book.steps.by_type.get(event.type, book.steps.any)
    if step is not None:
        step(profile, event)


def _values(words: list[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-50, 600),
        st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from(words),
    )
    return st.one_of(scalars, st.dictionaries(st.sampled_from(["total", "n"]), scalars,
                                              max_size=2),
                     st.lists(scalars, max_size=2))


@st.composite
def _streams(draw: st.DrawFn, book: Rulebook, text: str) -> list[Event]:
    """Events of one customer; property names and string values come from the rulebook's
    text (the fields it reads, often; any identifier in it, now and then)."""
    types = sorted(book.event_types | {"nobody_names_this"})
    words = sorted(set(_WORDS.findall(text)))
    hot = sorted({a or b for a, b in _FIELDS.findall(text)}
                 | {"amount", "sku", "reason", "flag", "basket"})
    names = st.one_of(st.sampled_from(hot), st.sampled_from(hot), st.sampled_from(words))
    values = _values(words)
    events = []
    clock = 1_772_400_000_000
    for index in range(draw(st.integers(1, 40))):
        # steps of a millisecond too: the decay branches differ at ts == sref - 1
        clock += draw(st.one_of(st.integers(-2, 2),
                                st.integers(-3 * 3_600_000, 6 * 3_600_000)))
        properties = draw(st.dictionaries(names, values, max_size=5))
        channel = draw(st.sampled_from(sorted(CHANNELS)))
        events.append(unchecked_event(draw(st.sampled_from(types)), event_id=f"e-{index}",
                                      ts_ms=clock, channel=channel, properties=properties))
    return events


@pytest.mark.parametrize(("name", "book", "text"), BOOKS, ids=[name for name, _, _ in BOOKS])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_steps_equal_the_interpreter(name: str, book: Rulebook, text: str,
                                              data: st.DataObject) -> None:
    """For every example rulebook (and one using every points and traits option), any event
    stream - types named or not, any channel, properties of any shape, time going back and
    forth across half-lives - leaves scores, rule hits and traits identical to the last bit
    whether applied by the interpreter or by the generated per-type steps."""
    events = data.draw(_streams(book, text))
    expected, actual = Profile("customer_id:c-1"), Profile("customer_id:c-1")
    for event in events:
        _interpret(expected, event, book)
        _compiled(actual, event, book)
        assert repr(actual.scores) == repr(expected.scores), name
        assert actual.hits == expected.hits, name
        assert repr(actual.traits) == repr(expected.traits), name
        assert actual.sref_ms == expected.sref_ms, name


def test_every_event_type_gets_a_step_or_none() -> None:
    """Each type a points rule or trait names has its own step; a type nobody names takes
    the shared one, which here only keeps the wildcard traits."""
    steps = EXOTIC.steps
    assert set(steps.by_type) == {"a", "b", "c"}
    assert steps.any is not None
    assert "# trait last_reason" in steps.sources["*"]
    assert "# points" not in steps.sources["*"].replace("# points plain/rule2", "")
    empty = parse_rulebook(dedent("""\
        version: "e"
        actions:
          hello: {channel: web, consent: exempt, when: [{event: {type: a}}]}
        """), "empty.yaml")
    assert empty.steps.any is None and not empty.steps.by_type
