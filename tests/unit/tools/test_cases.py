"""`touchflow rules test`: persona regression cases next to a rulebook (service/tools/cases.py)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from service.cli import main
from service.tools.cases import load_cases, run_cases, run_files

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "rulebook.yaml").exists())

RULEBOOK = dedent("""\
    version: "cases-1"
    scores:
      lead: {points: [{when: {type: download}, add: 10}]}
    actions:
      callback:
        channel: call_center
        when: [{score: lead, crosses: 25}]
      sms_nudge:
        channel: sms
        when: [{event: {type: download}}, {score: lead, gte: 10}]
    arbitration: {max_per_event: 2}
    contact_policy: {consent_by_channel: {sms: opt_in}}
    """)


def _write(tmp_path: Path, cases: str) -> Path:
    (tmp_path / "rulebook.yaml").write_text(RULEBOOK)
    path = tmp_path / "cases.yaml"
    path.write_text(dedent(cases))
    return path


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_ships_cases_and_they_pass(folder: Path) -> None:
    """Each example folder has a cases.yaml, and every case in it passes against the
    example's rulebook (the CI runs what `touchflow rules test examples/*/cases.yaml` runs)."""
    path = folder / "cases.yaml"
    assert path.exists(), f"{folder.name} ships no cases.yaml"
    results = run_cases(load_cases(path))
    assert results
    failed = {r.name: r.diff for r in results if not r.passed}
    assert not failed


def test_a_failing_case_exits_1_with_a_diff_of_expected_and_actual(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case whose expectation is wrong fails the command (exit 1) and prints, under the
    case's name and line, a unified diff: the expected line removed, the actual one added;
    a passing case in the same file is counted as passed."""
    path = _write(tmp_path, """\
        cases:
          - name: the third download crosses 25
            events:
              - {type: download, at: "2026-03-02T10:00:00Z"}
              - {type: download, at: "2026-03-02T10:05:00Z"}
              - {type: download, at: "2026-03-02T10:10:00Z"}
              - {type: download, at: "2026-03-02T10:15:00Z"}
            expect:
              actions: [{action: callback, event: the-third-download-crosses-25-3}]
              suppressed:
                - {action: sms_nudge, reason: no_consent}
                - {action: sms_nudge, reason: no_consent}
                - {action: sms_nudge, reason: no_consent}
                - {action: sms_nudge, reason: no_consent}
          - name: a wrong expectation
            events:
              - {type: download, at: "2026-03-02T10:00:00Z"}
            expect:
              actions: [sms_nudge]
        """)
    assert main(["rules", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {path}:15: a wrong expectation" in out
    assert "    -sms_nudge" in out and "    +++ actual actions" in out
    assert f"{path}: 1 of 2 cases passed" in out


def test_a_malformed_cases_file_exits_2_with_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case with an invalid event or without expectations stops with exit 2 and one
    line naming the file, the line and the field, no traceback."""
    path = _write(tmp_path, """\
        cases:
          - name: bad channel
            events:
              - {type: download, at: "2026-03-02T10:00:00Z", channel: fax}
            expect: {actions: []}
        """)
    assert main(["rules", "test", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"touchflow: {path}:4: cases[0].events[0]: not a valid event")
    assert "Traceback" not in err
    missing = _write(tmp_path, """\
        cases:
          - name: no expectations
            events: [{type: download, at: "2026-03-02T10:00:00Z"}]
        """)
    out, errors, code = run_files([str(missing)])
    assert code == 2 and not out
    assert errors == [f"touchflow: {missing}:2: cases[0].expect: needs `actions` and/or "
                      "`suppressed` lists"]
