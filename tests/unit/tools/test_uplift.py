"""`touchflow report`: Wilson and Newcombe intervals, and the control-group table of the
`learning` example (treated conversion beats the holdout, with an interval that says so)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.cli import main
from service.tools.uplift import newcombe, tally, wilson

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "learning"


def test_wilson_matches_published_values() -> None:
    """Wilson 95 % intervals for 0/10, 5/10 and 81/263 (values from Newcombe 1998)."""
    zero = wilson(0, 10)
    assert zero.value == 0.0 and zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=1e-4)
    half = wilson(5, 10)
    assert (half.low, half.high) == (pytest.approx(0.2366, abs=1e-4),
                                     pytest.approx(0.7634, abs=1e-4))
    big = wilson(81, 263)
    assert (big.low, big.high) == (pytest.approx(0.2553, abs=1e-4),
                                   pytest.approx(0.3662, abs=1e-4))
    assert wilson(0, 0).value is None


def test_newcombe_difference_matches_published_example() -> None:
    """Newcombe's method 10 for 56/70 - 48/80 gives 0.2 [0.0524, 0.3339] (Newcombe 1998)."""
    diff = newcombe(wilson(56, 70), wilson(48, 80))
    assert diff.value == pytest.approx(0.2)
    assert (diff.low, diff.high) == (pytest.approx(0.0524, abs=1e-4),
                                     pytest.approx(0.3339, abs=1e-4))


def test_tally_counts_each_action_id_once() -> None:
    """Repeated response/attribution records for one action id (redelivered audit records)
    count once; held-out responses do not count as acceptance."""
    records = [
        {"kind": "action", "outcome": "sent", "action": "a", "action_id": "1"},
        {"kind": "action", "outcome": "held_out", "action": "a", "action_id": "2"},
        {"kind": "response", "outcome": "accepted", "action": "a", "action_id": "1",
         "arm": "treated"},
        {"kind": "response", "outcome": "accepted", "action": "a", "action_id": "1",
         "arm": "treated"},
        {"kind": "attribution", "outcome": "converted", "action": "a", "action_id": "2",
         "arm": "holdout"},
    ]
    stats = tally(records)["a"]
    assert (stats.sent, stats.held_out, len(stats.accepted), len(stats.converted_holdout)) == (
        1, 1, 1, 1)


def test_report_on_the_learning_example_shows_uplift(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying the learning example, the best offer's treated conversion rate beats the
    holdout's and the uplift interval excludes zero; the table and the JSON agree."""
    out = tmp_path / "report.json"
    code = main(["report", "--rules", str(EXAMPLE / "rulebook.yaml"), "--input",
                 str(EXAMPLE / "events.jsonl"), "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "offer_points" in table and "(all actions)" in table
    figures = orjson.loads(out.read_bytes())["offer_points"]
    assert figures["held_out"] > 100 and figures["sent"] > 1000
    assert figures["uplift"]["low"] > 0.05
    assert figures["conversion_holdout"]["high"] < figures["conversion_treated"]["low"]


def test_report_reads_audit_files_and_refuses_no_input(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """`--audit FILE` reads JSONL audit records (bad lines are reported, not fatal); with no
    input the command says what to give and exits 2."""
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(b'{"kind": "action", "outcome": "sent", "action": "a", "action_id": "1"}\n'
                      b"not json\n")
    assert main(["report", "--audit", str(audit)]) == 0
    captured = capsys.readouterr()
    assert "a " in captured.out and f"{audit}:2: not JSON" in captured.err
    assert main(["report"]) == 2
    assert "--audit" in capsys.readouterr().err
