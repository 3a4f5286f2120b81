"""Rulebook errors: every problem is reported with file, line and field, and loading fails."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

from service.domain import RulebookError, load_rulebook, parse_rulebook
from service.domain.yamlsrc import Locator, Problem, _read, read_yaml

_ROOT = Path(__file__).resolve().parents[3]

GOOD = dedent("""\
    version: "t-1"
    actions:
      hello:
        channel: web
        when: [{event: {type: page_viewed}}]
    """)


def _problems(text: str) -> list[str]:
    with pytest.raises(RulebookError) as caught:
        parse_rulebook(dedent(text), "rules.yaml")
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def test_good_rulebook_version_has_content_digest() -> None:
    """version = declared version + '+' + 8 hex of the sha256 of the text; digest is full."""
    rulebook = parse_rulebook(GOOD)
    assert rulebook.declared_version == "t-1"
    assert rulebook.version == f"t-1+{rulebook.digest[:8]}" and len(rulebook.digest) == 64
    assert parse_rulebook(GOOD + "# comment\n").version != rulebook.version
    assert "page_viewed" in rulebook.event_types


def test_unknown_key_and_bad_type_name_their_lines() -> None:
    """pydantic errors are mapped back to the YAML line of the offending field."""
    problems = _problems("""\
        version: "t"
        actions:
          hello:
            channel: fax
            when: [{event: {type: page_viewed}}]
            colour: blue
        """)
    assert any(p.startswith("rules.yaml:4: actions.hello.channel: Input should be")
               for p in problems)
    assert any(p.startswith("rules.yaml:6: actions.hello.colour: Extra inputs") for p in problems)


def test_bad_duration_and_missing_actions() -> None:
    """A malformed duration names its field; a rulebook without actions is refused."""
    problems = _problems("""\
        version: "t"
        scores:
          s:
            half_life: soon
            points: [{when: {type: x}, add: 1}]
        """)
    assert any(p.startswith("rules.yaml:4: scores.s.half_life:") and "duration" in p
               for p in problems)
    assert any(": actions: Field required" in p for p in problems)


def test_compile_errors_are_all_reported_with_lines() -> None:
    """Unknown score, segment and pattern references, a bad operator and a bad template path
    are each reported (all of them, not just the first) at their own line."""
    problems = _problems("""\
        version: "t"
        segments:
          vip: {score: nope, gte: 1}
        actions:
          a:
            channel: web
            when:
              - {pattern: missing}
              - event: {type: x, properties: {n: {bigger: 3}}}
            payload: {x: "{trait.unknown}"}
        """)
    joined = "\n".join(problems)
    assert "rules.yaml:3: segments.vip.score: 'score.nope': there is no score named 'nope'" \
        in joined
    assert "rules.yaml:8: actions.a.when[0].pattern: there is no pattern named 'missing'" in joined
    assert "rules.yaml:10: actions.a.payload.x:" in joined
    assert len(problems) >= 3


def test_yaml_syntax_error_and_duplicate_key() -> None:
    """Broken YAML reports its line; a duplicate key (PyYAML would silently keep one) is an
    error."""
    assert _problems("version: [\n")[0].startswith("rules.yaml:2: <document>: not valid YAML")
    problems = _problems(GOOD + "version: again\n")
    assert problems[0] == "rules.yaml:6: version: duplicate key (first one wins)"


def test_segment_cycle_is_an_error() -> None:
    """Segments that refer to each other in a cycle are refused with the cycle spelled out."""
    problems = _problems(GOOD + dedent("""\
        segments:
          a: {segment: b}
          b: {segment: a}
        """))
    assert any("cycle: a -> b -> a" in p for p in problems)


def test_load_rulebook_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a RulebookError naming the path, not an OSError."""
    with pytest.raises(RulebookError) as caught:
        load_rulebook(tmp_path / "nope.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}:0: <document>: cannot read")


def test_pattern_and_trait_shape_errors() -> None:
    """A count pattern without `when`, a sequence with `when`, and a sum trait without a field
    are each reported at their field."""
    problems = _problems(GOOD + dedent("""\
        patterns:
          p: {kind: count, within: 5m}
          q: {kind: sequence, within: 5m, when: {type: a}, first: {type: a}, then: {type: b}}
        traits:
          t: {kind: sum}
        """))
    joined = "\n".join(problems)
    assert "rules.yaml:7: patterns.p.when: a count pattern needs when" in joined
    assert "rules.yaml:8: patterns.q.when: not used by a sequence pattern" in joined
    assert "rules.yaml:10: traits.t.field: a sum trait needs the event field it reads" in joined


@pytest.mark.parametrize("path", sorted(str(p.relative_to(_ROOT)) for p in [
    *_ROOT.glob("examples/*/*.yaml"), *_ROOT.glob("tests/data/*.yaml")]))
def test_libyaml_and_the_python_parser_read_every_shipped_file_alike(path: str) -> None:
    """Rulebooks and case files are read with libyaml's parser when PyYAML has it: every
    shipped one gives the same values, the same line of every path and the same problems as
    with the pure-Python parser."""
    text = (_ROOT / path).read_text()
    assert _same(_read(text, path, yaml.CSafeLoader), _read(text, path, yaml.SafeLoader))


def _same(a: tuple[Any, Locator, list[Problem]], b: tuple[Any, Locator, list[Problem]]) -> bool:
    return a[0] == b[0] and a[1].lines == b[1].lines and a[2] == b[2]


def test_a_document_libyaml_refuses_is_reported_in_the_python_parser_s_words() -> None:
    """Invalid YAML read through `read_yaml` gives the pure-Python parser's message, line and
    all, whichever parser read it first."""
    expected = _read("version: [\n", "rules.yaml", yaml.SafeLoader)[2]
    assert read_yaml("version: [\n", "rules.yaml")[2] == expected
    assert expected and "not valid YAML" in expected[0].message
