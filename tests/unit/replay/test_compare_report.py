"""Comparing two rulebooks (service/replay/diff.py) and the HTML report (html_report.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from service.cli import main
from service.domain.rules import load_rulebook
from service.replay.diff import compare_stream, format_table
from service.replay.html_report import bar_chart, histogram, line_chart
from service.replay.reader import LogFile, decode_lines
from tests.events import log_line


def _log(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_compare_lists_lost_actions_with_both_explanations(
    write_rulebook: Callable[..., Path], tmp_path: Path
) -> None:
    """A (callback at interest 20) vs B (at 30): the callback on each customer's second page
    view is lost under B, with A's reasons beside the audit record explaining B's refusal;
    actions both send (the newsletter) are not reported; the table counts per action."""
    log = _log(tmp_path, [
        log_line("e-1", "c-1"), log_line("e-2", "c-1", minute=1), log_line("e-3", "c-1", minute=2),
        log_line("e-4", "c-2", "signed_up", minute=3),
    ])
    a = load_rulebook(write_rulebook("rules-a", 20))
    b = load_rulebook(write_rulebook("rules-b", 30))
    comparison = compare_stream(decode_lines(LogFile(log), print), a, b)
    kinds = [(c.kind, c.action, c.trigger_event_id) for c in comparison.changes]
    assert ("lost", "sales_callback", "e-2") in kinds
    lost = next(c for c in comparison.changes if c.trigger_event_id == "e-2")
    assert lost.a["outcome"] == "sent" and lost.a["reasons"]
    assert lost.b["outcome"] != "sent"
    assert lost.customer_id == "c-1" or lost.customer_id.endswith("c-1")
    row = comparison.per_action["sales_callback"]
    assert (row.count_a, row.count_b, row.lost) == (2, 1, 1)
    assert comparison.per_action["newsletter"].count_a == 1
    assert not any(c.action == "newsletter" for c in comparison.changes)
    table = format_table(comparison)
    assert re.search(r"sales_callback\s+2\s+1\s+0\s+-1", table)
    assert "A: sent via call_center" in table and "rules-a" in table and "rules-b" in table


def test_compare_of_a_rulebook_with_itself_finds_nothing(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path]
) -> None:
    """Same rules under another version name: no decision differs (action ids and versions
    are not compared), so the diff is empty."""
    log = write_log()
    comparison = compare_stream(
        decode_lines(LogFile(log), print), load_rulebook(write_rulebook("v1", 20)),
        load_rulebook(write_rulebook("v2", 20)))
    assert comparison.total_changes == 0 and comparison.a.stats.actions > 0
    assert "No decision differs." in format_table(comparison)


def test_compare_cli_prints_table_writes_changes_and_report(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`replay --compare B --output CHANGES --report R.html`: the table on stdout, each changed
    decision as a JSON line with both sides, and an HTML report holding the diff and charts."""
    changes, report = tmp_path / "changes.jsonl", tmp_path / "report.html"
    code = main(["replay", "--rules", str(write_rulebook("rules-a", 20)), "--compare",
                 str(write_rulebook("rules-b", 30)), "--input", str(write_log()),
                 "--output", str(changes), "--report", str(report), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "sales_callback" in out and "changed decisions" in out
    records = [orjson.loads(x) for x in changes.read_bytes().splitlines()]
    assert records and {"kind", "customer_id", "trigger_event_id", "action", "a", "b"} <= set(
        records[0])
    html = report.read_text()
    assert "Changed decisions" in html and "customers affected" in html
    assert html.count("<svg") >= 4


def test_html_report_is_self_contained_with_svg_charts(
    write_rulebook: Callable[..., Path], write_log: Callable[..., Path], tmp_path: Path
) -> None:
    """`--report`: one HTML file with inline SVG charts (actions per hour, per action,
    suppression reasons, scores), no script and no external resource, identical across runs."""
    report = tmp_path / "r.html"
    args = ["replay", "--rules", str(write_rulebook()), "--input", str(write_log()),
            "--output", str(tmp_path / "a.jsonl"), "--report", str(report), "--no-progress"]
    assert main(args) == 0
    html = report.read_text()
    assert main(args) == 0
    assert report.read_text() == html
    assert html.startswith("<!doctype html>")
    for title in ("Actions per hour", "Actions by action", "Suppression reasons",
                  "Score distribution"):
        assert f"<title>{title}</title>" in html
    assert "<polyline" in html and "<rect" in html
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html


def test_chart_helpers_draw_every_series_and_survive_empty_input() -> None:
    """Charts get one colour per series, escape labels, and say so when there's no data."""
    hourly = line_chart({"A": {0: 3, 7_200_000: 5}, "B": {3_600_000: 1}}, "per hour")
    assert hourly.count("<polyline") == 2 and "#2563eb" in hourly and "#ea580c" in hourly
    bars = bar_chart({"A": {"<cap>": 2}}, "reasons")
    assert "&lt;cap&gt;" in bars and "<cap>" not in bars
    assert histogram({"A": {1.0: 2, 9.5: 1}}, "scores").count("<rect") == 20
    assert "No actions" in line_chart({"A": {}}, "t")
    assert "No scores" in histogram({}, "t")


def test_compare_shows_a_deferral_the_other_rulebook_does_not_make(tmp_path: Path) -> None:
    """Rulebook B defers what A sends at once (a time zone puts 09:00+09:00 inside B's quiet
    hours 08:00-10:00 only): the action is 'changed', and B's side carries its not_before."""
    text = ('version: "VERSION"\nactions:\n  hello:\n    channel: sms\n    consent: exempt\n'
            "    when: {event: {type: page_viewed}}\ncontact_policy:\n  quiet_hours: {sms: "
            '{start: "START", end: "10:00", mode: defer}}\n')
    for name, start in (("a", "09:30"), ("b", "08:00")):
        (tmp_path / f"{name}.yaml").write_text(text.replace("VERSION", name).replace(
            "START", start))
    log = _log(tmp_path, [log_line("e-1", "c-1", time_zone="Asia/Tokyo")])
    comparison = compare_stream(decode_lines(LogFile(log), print),
                                load_rulebook(tmp_path / "a.yaml"),
                                load_rulebook(tmp_path / "b.yaml"))
    [change] = comparison.changes
    assert change.kind == "changed" and "not_before" not in change.a
    assert change.b["not_before"] == "2026-03-02T10:00:00+09:00"
    assert "not_before" in change.fields
