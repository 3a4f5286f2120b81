"""The table of condition subjects (subjects.py) is the one source of the condition grammar:
the compiler, the rulebook's JSON Schema and the docs derive from it, and each entry is
documented and exemplified."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

from schemas.event import Event
from service.domain import Rulebook, decide, parse_rulebook
from service.domain.cond import Cond
from service.domain.fields import OPS
from service.domain.rulebook_schema import rulebook_schema
from service.domain.subjects import SUBJECTS, Subject

ROOT = Path(__file__).resolve().parents[3]


def _subject_schemas() -> dict[str, dict[str, Any]]:
    """The schema's `Condition` choices that name a subject, by subject."""
    choices = rulebook_schema()["$defs"]["Condition"]["anyOf"]
    return {choice["required"][0]: choice for choice in choices if choice["type"] == "object"}


def test_every_subject_has_a_doc_a_schema_fragment_and_a_valid_example() -> None:
    """Each entry has a one-line doc, a schema for its value, a description for each of its
    other keys, and an example naming it that the rulebook schema accepts (and that a
    misspelt key makes it reject)."""
    import jsonschema

    schema = rulebook_schema()
    condition = jsonschema.Draft202012Validator({"$defs": schema["$defs"],
                                                 "$ref": "#/$defs/Condition"})
    for name, subject in SUBJECTS.items():
        assert subject.name == name
        assert subject.doc and "\n" not in subject.doc, name
        assert subject.arg, name
        for key, fragment in subject.keys.items():
            assert fragment.get("description"), f"{name}.{key} has no description"
        example = yaml.safe_load(subject.example)
        assert isinstance(example, dict) and name in example, name
        assert not list(condition.iter_errors(example)), (name, subject.example)
        assert list(condition.iter_errors({**example, "colour": 1})), name


def test_the_schema_condition_keys_equal_the_table() -> None:
    """The rulebook schema offers exactly the table's subjects, and for each exactly its own
    key, the operators if it takes them, and its other keys."""
    found = _subject_schemas()
    assert list(found) == list(SUBJECTS)
    for name, subject in SUBJECTS.items():
        keys = set(found[name]["properties"])
        expected = {name} | set(subject.keys) | (set(OPS) if subject.ops else set())
        assert keys == expected, name
        assert found[name]["additionalProperties"] is False
        assert found[name]["description"] == subject.doc


def _conditions(node: object) -> Iterator[Mapping[str, object]]:
    """Every condition mapping in a condition (through not, any, all and lists)."""
    if isinstance(node, list):
        for item in node:
            yield from _conditions(item)
    elif isinstance(node, dict):
        yield node
        for key in ("not", "any", "all"):
            if key in node:
                yield from _conditions(node[key])


def _example_uses() -> set[str]:
    """Subjects and their keys used by the conditions of the example rulebooks."""
    used: set[str] = set()
    for path in sorted(ROOT.glob("examples/*/rulebook.yaml")):
        book = yaml.safe_load(path.read_text())
        roots: list[object] = list(book.get("segments", {}).values())
        for action in book["actions"].values():
            roots += [action.get("when"), action.get("suppress_unless")]
        for cond in _conditions(roots):
            used.update(key for key in cond if key in SUBJECTS or key not in OPS)
    return used


def _test_uses(word: str) -> bool:
    """Whether a rulebook written in a test uses `word` as a key of a flow mapping."""
    pattern = re.compile(r"[{,\[]\s*" + re.escape(word) + r":\s")
    for path in (ROOT / "tests").rglob("*"):
        if path.suffix in (".py", ".yaml") and pattern.search(
                path.read_text(encoding="utf-8", errors="replace")):
            return True
    return False


def test_every_subject_and_key_has_an_example_in_a_rulebook_or_a_test() -> None:
    """Each subject, and each key a subject takes besides the operators, appears in an
    example rulebook's conditions or in a rulebook some other test compiles."""
    in_examples = _example_uses()
    missing = [word for name, subject in SUBJECTS.items() for word in (name, *subject.keys)
               if word not in in_examples and not _test_uses(word)]
    assert not missing


def test_the_readme_table_is_the_table() -> None:
    """The conditions table in examples/README.md is what scripts/conditions_doc.py renders
    from the table now (run `python scripts/conditions_doc.py` after editing subjects.py)."""
    from scripts.conditions_doc import BEGIN, END, TARGET, render

    text = TARGET.read_text()
    block = text.partition(BEGIN + "\n")[2].partition(END)[0]
    assert block == render(), "run: python scripts/conditions_doc.py"
    assert all(f"`{s.example}`" in block for s in SUBJECTS.values())


def test_a_new_subject_is_one_entry(monkeypatch: pytest.MonkeyPatch,
                                    event: Callable[..., Event]) -> None:
    """Adding an entry is all it takes: a rulebook using the new subject compiles and decides
    with it, its misuse is reported with file, line and field, and the schema offers it."""

    def compile_channel(_: object, arg: object, spec: Mapping[str, object]) -> Cond:
        return Cond(lambda env: env.event.channel == arg, lambda env: [f"on {arg}"], f"on {arg}")

    monkeypatch.setitem(SUBJECTS, "on_channel", Subject(
        "on_channel", "the event came on this channel", compile_channel, {"type": "string"},
        "{on_channel: sms}"))
    text = dedent("""\
        version: "t"
        actions:
          nudge: {channel: web, consent: exempt, when: [{on_channel: store}]}
        """)
    book = parse_rulebook(text, "t.yaml")
    assert decide(None, event("page_viewed", channel="store"), {}, book).actions
    assert not decide(None, event("page_viewed", channel="web"), {}, book).actions
    with pytest.raises(Exception, match=r"t.yaml:3: actions.nudge.when\[0\].on_channel: a "
                                        r"on_channel condition takes no operators"):
        parse_rulebook(text.replace("{on_channel: store}", "{on_channel: store, gt: 1}"),
                       "t.yaml")
    assert "on_channel" in _subject_schemas()


def test_all_holds_only_when_every_part_does(rulebook_from: Callable[[str], Rulebook],
                                             event: Callable[..., Event]) -> None:
    """`{all: [...]}` (e.g. under `any`) holds when every one of its conditions does; its
    reason lists each; `{all: []}` is refused with its line."""
    book = rulebook_from(dedent("""\
        version: "all-1"
        actions:
          offer:
            channel: web
            consent: exempt
            when:
              - any:
                  - {all: [{event: {type: page_viewed}}, {value: event.properties.n, gte: 2}]}
                  - {event: {type: purchase}}
        """))
    assert not decide(None, event("page_viewed", n=1), {}, book).actions
    [action] = decide(None, event("page_viewed", n=3), {}, book).actions
    assert action["reasons"][:2] == ["event page_viewed", "event.properties.n = 3 >= 2"]
    assert decide(None, event("purchase"), {}, book).actions
    with pytest.raises(Exception, match=r"test.yaml:6: actions.a.when\[0\].all: needs a "
                                        r"non-empty list of conditions"):
        rulebook_from(dedent("""\
            version: "all-2"
            actions:
              a:
                channel: web
                consent: exempt
                when: [{all: []}]
            """))


@pytest.mark.parametrize(("condition", "valid"), [
    ("{context: 'stock:{item}', gt: 0}", True),
    ("{context: 'stock:{item}', gt: {path: event.properties.cap}}", False),
    ("{context: 'stock:{item}', gt: lots}", False),
    ("{value: event.properties.price, lt: {path: event.properties.cap}}", True),
    ("{score: lead_score, gte: {path: event.properties.floor}}", True),
    ("{score: lead_score, gte: high}", False),
    ("{event: {type: page_viewed, properties: {n: {gte: {path: trait.x}}}}}", False),
])
def test_the_schema_and_the_compiler_agree_on_operands(condition: str, valid: bool) -> None:
    """An operand the compiler refuses the rulebook schema refuses too, and the other way
    round: ordered comparisons take a number, or `{path: P}` only where the subject compares
    two fields (score, trait, value)."""
    import jsonschema

    schema = rulebook_schema()
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"],
                                                 "$ref": "#/$defs/Condition"})
    text = dedent(f"""\
        version: "ops"
        scores:
          lead_score: {{points: [{{name: visit, when: {{type: page_viewed}}, add: 1}}]}}
        actions:
          a: {{channel: web, consent: exempt, when: [{condition}]}}
        """)
    try:
        parse_rulebook(text, "ops.yaml")
        compiled = True
    except Exception:
        compiled = False
    assert (validator.is_valid(yaml.safe_load(condition)), compiled) == (valid, valid)
