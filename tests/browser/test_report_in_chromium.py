"""The HTML backtest reports (`touchflow replay --report`, with and without `--compare`)
rendered in headless Chromium: no console error, no chart wider than the page or with a label
cut off, no table wider than its box, every section present and drawn, A and B side by side
in a comparison. Screenshots
are kept under tmp/artifacts/ (or $TOUCHFLOW_ARTIFACTS) for a human to look at.

Skipped where no Chromium is installed (.ci/run installs Debian's chromium-headless-shell)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.browser.chromium import Page, find_chromium, open_page

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "learning"
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no Chromium on PATH (apt-get install chromium-headless-shell; CI installs it)")
WIDTHS = (1280, 720)
REPLAY_SECTIONS = ("Actions per hour", "Actions by action", "Suppression reasons",
                   "Score distribution", "Decision funnel per action",
                   "Customers who received nothing", "Totals")
COMPARE_SECTIONS = ("What changed, per action", "Changed decisions", *REPLAY_SECTIONS)

# Measured in the page: the document must not scroll sideways; each chart (and every label
# in it) must lie inside the page and inside its own box; each h2 must be followed by a drawn,
# non-empty section; the side-by-side columns of a comparison.
MEASURE = """(() => {
  const page = document.documentElement.clientWidth;
  const out = {page, scroll: document.documentElement.scrollWidth, bad: [], sections: [],
               empty: [], pairs: []};
  document.querySelectorAll('svg').forEach((svg, i) => {
    const box = svg.getBoundingClientRect();
    const name = (svg.querySelector('title') || {}).textContent || 'chart ' + i;
    if (box.width <= 0 || box.height <= 0) out.bad.push(name + ': not drawn');
    if (box.left < -0.5 || box.right > page + 0.5)
      out.bad.push(name + ': ' + box.left + '..' + box.right + ' outside the page ' + page);
    svg.querySelectorAll('text').forEach(t => {
      const b = t.getBoundingClientRect();
      if (b.left < box.left - 1 || b.right > box.right + 1)
        out.bad.push(name + ': label "' + t.textContent + '" cut off');
    });
  });
  document.querySelectorAll('.scroll').forEach(box => {
    if (box.scrollWidth > box.clientWidth + 1)
      out.bad.push('table wider than its box: ' + box.scrollWidth + ' > ' + box.clientWidth);
  });
  document.querySelectorAll('h2').forEach(h => {
    const title = h.textContent;
    out.sections.push(title);
    const s = h.nextElementSibling;
    if (!s || s.tagName !== 'SECTION' || s.getBoundingClientRect().height < 10
        || !s.textContent.trim()) out.empty.push(title);
  });
  document.querySelectorAll('.pair').forEach(p => {
    out.pairs.push([...p.children].map(c => {
      const b = c.getBoundingClientRect();
      return [Math.round(b.left), Math.round(b.top), Math.round(b.width)];
    }));
  });
  return out;
})()"""


def _artifacts() -> Path:
    return Path(os.environ.get("TOUCHFLOW_ARTIFACTS", ROOT / "tmp" / "artifacts"))


async def _check(page: Page, report: Path, name: str, sections: tuple[str, ...]
                 ) -> list[dict[str, Any]]:
    """Load `report` at each width, screenshot it, and fail on what the browser reported."""
    found = []
    for width in WIDTHS:
        page.report.errors.clear()
        await page.load(report.as_uri(), width)
        measured = await page.evaluate(MEASURE)
        shot = await page.screenshot(_artifacts() / f"{name}-{width}.png")
        print(f"screenshot: {shot}")
        assert page.report.errors == [], f"{name} at {width}px: {page.report.errors}"
        assert measured["scroll"] <= measured["page"], \
            f"{name} at {width}px scrolls sideways: {measured['scroll']} > {measured['page']}"
        assert measured["bad"] == [], f"{name} at {width}px: {measured['bad']}"
        for title in sections:
            assert any(s.startswith(title) for s in measured["sections"]), \
                f"{name}: section {title!r} missing"
        assert measured["empty"] == [], f"{name} at {width}px: empty {measured['empty']}"
        found.append(measured)
    return found


def _log(tmp_path: Path, lines: int = 2000) -> Path:
    """The first `lines` events of the learning example (experiments, learning, responses):
    enough for every chart, small enough to keep the pages and screenshots light."""
    path = tmp_path / "events.jsonl"
    with (EXAMPLE / "events.jsonl").open("rb") as source:
        path.write_bytes(b"".join(line for _, line in zip(range(lines), source, strict=False)))
    return path


def _chromium() -> str:
    if CHROMIUM is None:
        pytest.fail("CI must have Chromium: .ci/run installs chromium-headless-shell")
    return CHROMIUM


async def test_checker_catches_errors_overflow_and_missing_sections(tmp_path: Path) -> None:
    """The browser check itself fails on a page with a console error, an uncaught exception,
    a chart wider than the page, a table wider than its box and a heading without its section
    (so the report checks below can fail)."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!doctype html><html><body><h2>Lonely</h2><p>no section</p>"
        '<svg width="3000" height="50" xmlns="http://www.w3.org/2000/svg"><title>wide</title>'
        '<rect width="3000" height="50"/></svg><div class="scroll" style="overflow-x:auto;'
        'width:100px"><table><tr><td>' + "x" * 80 + "</td></tr></table></div>"
        "<script>console.error('boom'); throw new Error('kaput');</script></body></html>")
    async with open_page(_chromium()) as page:
        await page.load(broken.as_uri(), 800)
        measured = await page.evaluate(MEASURE)
        errors = list(page.report.errors)
    assert any("boom" in e for e in errors) and any("kaput" in e for e in errors), errors
    assert measured["scroll"] > measured["page"]
    assert any(b.startswith("wide:") for b in measured["bad"])
    assert any(b.startswith("table wider than its box") for b in measured["bad"])
    assert measured["empty"] == ["Lonely"]


async def test_replay_report_renders_cleanly(tmp_path: Path) -> None:
    """`touchflow replay --report` over the learning example: clean in Chromium at 1280 and
    720 pixels, with every section."""
    report = tmp_path / "replay.html"
    assert main(["replay", "--rules", str(EXAMPLE / "rulebook.yaml"), "--input",
                 str(_log(tmp_path)), "--output", str(tmp_path / "a.jsonl"),
                 "--report", str(report), "--no-progress"]) == 0
    async with open_page(_chromium()) as page:
        measured = await _check(page, report, "replay-report", REPLAY_SECTIONS)
    assert all(m["pairs"] == [] for m in measured)


async def test_comparison_report_renders_cleanly_side_by_side(tmp_path: Path) -> None:
    """`touchflow replay --compare --report` (the learning example's offers without learning,
    A holding out 10 % of customers and B 15 %): clean in Chromium, every section, and the
    funnel and unreached sections show A and B in two columns of equal width side by side at
    1280 pixels (B under A at 720, where two columns would not fit their tables)."""
    text = (EXAMPLE / "rulebook.yaml").read_text()
    plain = re.sub(r"\nlearning:\n(  .*\n)+", "\n", text)
    wider = plain.replace("arms: {treated: 0.9, control: 0.1}",
                          "arms: {treated: 0.85, control: 0.15}")
    assert plain != text and wider != plain
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(plain)
    b.write_text(re.sub(r'(?m)^version: .*$', 'version: "wider-control"', wider))
    report = tmp_path / "compare.html"
    assert main(["replay", "--rules", str(a), "--compare", str(b), "--input",
                 str(_log(tmp_path)), "--output", str(tmp_path / "c.jsonl"), "--report",
                 str(report), "--no-progress"]) == 0
    async with open_page(_chromium()) as page:
        measured = await _check(page, report, "compare-report", COMPARE_SECTIONS)
    wide, narrow = measured
    assert len(wide["pairs"]) == len(narrow["pairs"]) == 2
    for (left_a, top_a, width_a), (left_b, top_b, width_b) in wide["pairs"]:
        assert top_a == top_b and left_b > left_a + width_a - 1 and width_a == width_b
    for (left_a, top_a, _), (left_b, top_b, _) in narrow["pairs"]:  # stacked when narrow
        assert left_a == left_b and top_b > top_a
