"""A self-contained HTML report of a replay or a comparison: inline SVG charts, no scripts.

Charts: actions per hour per rulebook, actions per action, suppression reasons, the score
distribution of candidate actions, the decision funnel per action and the customers who
received nothing (html_funnel.py); with a comparison, the per-action diff table and every
changed decision with both explanations side by side. The page has no wall-clock time or
timings in it, so the same input gives the same report, byte for byte.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from service.replay.html_funnel import FUNNEL_CSS, funnel_sections
from service.replay.runner import ReplayResult

if TYPE_CHECKING:
    from service.replay.diff import Comparison

__all__ = ["bar_chart", "histogram", "line_chart", "render_report", "write_report"]

COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea")
_W, _H = 880, 280
_ML, _MR, _MT, _MB = 56, 16, 16, 44
_SHOWN_CHANGES = 300
_SHOWN_BAD = 50
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;
margin:0;background:#f8fafc}
main{max-width:980px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:36px 0 10px}
.sub{color:#64748b;margin:0 0 16px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:16px 20px;
margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:6px 10px;border-bottom:1px solid #e2e8f0;text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.kpis{display:flex;gap:14px;flex-wrap:wrap}
.kpi{flex:1;min-width:150px;background:#fff;border:1px solid #e2e8f0;border-radius:10px;
padding:12px 16px}.kpi b{display:block;font-size:24px}.kpi span{color:#64748b;font-size:13px}
.legend span{display:inline-block;margin-right:16px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.gained{color:#15803d;font-weight:600}.lost{color:#b91c1c;font-weight:600}
.changed{color:#a16207;font-weight:600}.muted{color:#64748b}
ul.r{margin:2px 0 0;padding-left:18px}code{font-size:13px}
svg text{font:12px system-ui,sans-serif;fill:#475569}
"""


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def _fmt(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _frame(y_max: float, title: str) -> list[str]:
    parts = [f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    plot_h = _H - _MT - _MB
    for i in range(5):
        value = y_max * i / 4
        y = _MT + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{_ML}" x2="{_W - _MR}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e2e8f0"/>')
        parts.append(f'<text x="{_ML - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{_fmt(value)}</text>")
    return parts


def _legend(names: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{COLORS[i % len(COLORS)]}"></i>'
                    f"{escape(name)}</span>" for i, name in enumerate(names))
    return f'<div class="legend">{items}</div>'


def line_chart(series: Mapping[str, Mapping[int, int]], title: str,
               x_label: str = "hour (UTC)") -> str:
    """One line per series over hourly buckets (epoch ms keys); gaps count as zero."""
    keys = sorted({k for values in series.values() for k in values})
    if not keys:
        return '<p class="muted">No actions.</p>'
    hours = list(range(keys[0], keys[-1] + 1, 3_600_000))
    y_max = _nice_max(max(max(v.values(), default=0) for v in series.values()))
    parts = _frame(y_max, title)
    plot_w, plot_h = _W - _ML - _MR, _H - _MT - _MB
    step = plot_w / max(1, len(hours) - 1)
    label_every = max(1, math.ceil(len(hours) / 8))
    for i, hour in enumerate(hours):
        if i % label_every == 0:
            x = _ML + (i * step if len(hours) > 1 else plot_w / 2)
            stamp = datetime.fromtimestamp(hour / 1000, UTC).strftime("%m-%d %H:00")
            # A label near the right edge ends at its tick, so it is not cut off.
            anchor = "end" if x > _W - _MR - 40 else "middle"
            parts.append(f'<text x="{x:.1f}" y="{_H - _MB + 16}" text-anchor="{anchor}">'
                         f"{stamp}</text>")
    for index, (name, values) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        points = []
        for i, hour in enumerate(hours):
            x = _ML + (i * step if len(hours) > 1 else plot_w / 2)
            y = _MT + plot_h - plot_h * values.get(hour, 0) / y_max
            points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{" ".join(points)}"><title>{escape(name)}</title></polyline>')
        if len(hours) <= 72:
            for point, hour in zip(points, hours, strict=True):
                cx, cy = point.split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"><title>'
                             f"{escape(name)}: {values.get(hour, 0):,}</title></circle>")
    parts.append(f'<text x="{_W - _MR}" y="{_H - 6}" text-anchor="end">{escape(x_label)}'
                 "</text></svg>")
    return _legend(list(series)) + "".join(parts)


def bar_chart(series: Mapping[str, Mapping[str, int]], title: str, limit: int = 15) -> str:
    """Horizontal grouped bars: one group per category (largest first), one bar per series."""
    totals: Counter[str] = Counter()
    for values in series.values():
        totals.update(values)
    categories = [name for name, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    categories = categories[:limit]
    if not categories:
        return '<p class="muted">Nothing to show.</p>'
    n = max(1, len(series))
    bar_h, gap, left = 14, 10, 190
    height = _MT + len(categories) * (n * bar_h + gap) + 10
    x_max = _nice_max(max(totals[c] and max(v.get(c, 0) for v in series.values())
                          for c in categories))
    plot_w = _W - left - 70
    parts = [f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    y = _MT
    for category in categories:
        parts.append(f'<text x="{left - 8}" y="{y + n * bar_h / 2 + 4:.1f}" '
                     f'text-anchor="end">{escape(category[:28])}</text>')
        for index, (name, values) in enumerate(series.items()):
            value = values.get(category, 0)
            width = plot_w * value / x_max
            color = COLORS[index % len(COLORS)]
            parts.append(f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar_h - 2}" '
                         f'fill="{color}" rx="2"><title>{escape(name)} - {escape(category)}: '
                         f"{value:,}</title></rect>")
            parts.append(f'<text x="{left + width + 6:.1f}" y="{y + bar_h - 4}">'
                         f"{value:,}</text>")
            y += bar_h
        y += gap
    parts.append("</svg>")
    return _legend(list(series)) + "".join(parts)


def histogram(series: Mapping[str, Mapping[float, int]], title: str, bins: int = 20) -> str:
    """Shared-bin histogram of score counts, grouped bars per series."""
    values = [v for counts in series.values() for v in counts]
    if not values:
        return '<p class="muted">No scores recorded.</p>'
    low, high = min(values), max(values)
    width = (high - low) / bins if high > low else 1.0
    bins = bins if high > low else 1
    counts: list[list[int]] = []
    for scores in series.values():
        row = [0] * bins
        for score, count in scores.items():
            row[min(bins - 1, int((score - low) / width))] += count
        counts.append(row)
    y_max = _nice_max(max(max(row) for row in counts))
    parts = _frame(y_max, title)
    plot_w, plot_h = _W - _ML - _MR, _H - _MT - _MB
    slot = plot_w / bins
    bar_w = max(1.0, (slot - 4) / max(1, len(counts)))
    for b in range(bins):
        edge = low + b * width
        if bins <= 10 or b % 2 == 0:
            parts.append(f'<text x="{_ML + b * slot + slot / 2:.1f}" y="{_H - _MB + 16}" '
                         f'text-anchor="middle">{_fmt(round(edge, 2))}</text>')
        for index, row in enumerate(counts):
            h = plot_h * row[b] / y_max
            x = _ML + b * slot + 2 + index * bar_w
            name = list(series)[index]
            parts.append(f'<rect x="{x:.1f}" y="{_MT + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{COLORS[index % len(COLORS)]}">'
                         f"<title>{escape(name)}: {row[b]:,} with score "
                         f"{_fmt(round(edge, 2))} to {_fmt(round(edge + width, 2))}</title>"
                         "</rect>")
    parts.append(f'<text x="{_W - _MR}" y="{_H - 6}" text-anchor="end">score</text></svg>')
    return _legend(list(series)) + "".join(parts)


def _names(results: Sequence[ReplayResult]) -> list[str]:
    labels = "AB" if len(results) == 2 else ""
    out = []
    for i, result in enumerate(results):
        version = result.stats.rulebook_version or "?"
        out.append(f"{labels[i]}: {version}" if labels else version)
    return out


def _kpis(results: Sequence[ReplayResult], names: list[str]) -> str:
    stats = results[0].stats
    cells = [("events", stats.events), ("bad records", results[0].bad_records)]
    for name, result in zip(names, results, strict=True):
        cells.append((f"actions {name}", result.stats.actions))
    body = "".join(f"<div class=kpi><b>{value:,}</b><span>{escape(label)}</span></div>"
                   for label, value in cells)
    return f'<div class="kpis">{body}</div>'


def _summary(results: Sequence[ReplayResult], names: list[str]) -> str:
    rows = [("events", "events"), ("decided", "processed"), ("duplicates", "duplicates"),
            ("late (dropped)", "late"),
            ("decide() errors", "errors"), ("actions", "actions"),
            ("audit records", "decisions"), ("profiles erased", "erased")]
    head = "".join(f'<th class="n">{escape(n)}</th>' for n in names)
    body = []
    for label, attr in rows:
        cells = "".join(f'<td class="n">{getattr(r.stats, attr):,}</td>' for r in results)
        body.append(f"<tr><td>{escape(label)}</td>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _side(side: Mapping[str, object]) -> str:
    from service.replay.diff import describe

    reasons = side.get("reasons") or []
    head = describe({**side, "reasons": []})
    items = "".join(f"<li>{escape(str(r))}</li>" for r in reasons)  # type: ignore[attr-defined]
    return escape(head) + (f'<ul class="r">{items}</ul>' if items else "")


def _diff_sections(comparison: Comparison) -> str:
    rows = []
    for name in sorted(comparison.per_action):
        row = comparison.per_action[name]
        rows.append(f"<tr><td><code>{escape(name)}</code></td><td class=n>{row.count_a:,}</td>"
                    f"<td class=n>{row.count_b:,}</td><td class='n gained'>+{row.gained:,}</td>"
                    f"<td class='n lost'>-{row.lost:,}</td><td class='n changed'>"
                    f"{row.changed:,}</td><td class=n>{len(row.customers):,}</td></tr>")
    table = ("<table><tr><th>action</th><th class=n>A</th><th class=n>B</th>"
             "<th class=n>gained</th><th class=n>lost</th><th class=n>changed</th>"
             f"<th class=n>customers affected</th></tr>{''.join(rows)}</table>")
    changes = []
    for change in comparison.changes[:_SHOWN_CHANGES]:
        what = f"<span class='{change.kind}'>{change.kind}</span>"
        if change.fields:
            what += f"<br><span class=muted>{escape(', '.join(change.fields))}</span>"
        changes.append(
            f"<tr><td>{what}</td><td><code>{escape(change.action)}</code><br>"
            f"{escape(change.customer_id)}<br><span class=muted>"
            f"{escape(change.trigger_event_id)} - {escape(change.occurred_at)}</span></td>"
            f"<td>{_side(change.a)}</td><td>{_side(change.b)}</td></tr>")
    shown = (f"first {_SHOWN_CHANGES} of {comparison.total_changes:,}"
             if comparison.total_changes > _SHOWN_CHANGES else f"{comparison.total_changes:,}")
    detail = ("<p class=muted>No decision differs.</p>" if not changes else
              "<table><tr><th>change</th><th>decision</th><th>A explains</th>"
              f"<th>B explains</th></tr>{''.join(changes)}</table>")
    return (f"<h2>What changed, per action</h2><section>{table}<p class=muted>"
            f"{len(comparison.customers):,} customers affected in all.</p></section>"
            f"<h2>Changed decisions ({shown})</h2><section>{detail}</section>")


def _bad_section(result: ReplayResult) -> str:
    if not result.bad_records:
        return ""
    reasons = "".join(f"<tr><td><code>{escape(r)}</code></td><td class=n>{c:,}</td></tr>"
                      for r, c in result.bad_reasons.most_common())
    examples = "".join(f"<tr><td><code>{escape(b.where)}</code></td><td>{escape(b.reason)}"
                       f"</td><td>{escape(b.message)}</td></tr>"
                       for b in result.bad_examples[:_SHOWN_BAD])
    return (f"<h2>Bad input records ({result.bad_records:,}, skipped)</h2><section>"
            f"<table><tr><th>reason</th><th class=n>count</th></tr>{reasons}</table><br>"
            f"<table><tr><th>where</th><th>reason</th><th>message</th></tr>{examples}"
            "</table></section>")


def _capacity_section(results: Sequence[ReplayResult], names: list[str]) -> str:
    """Per capacity constraint of the (first) rulebook: sent per period against the limit,
    a chart for hourly limits, and the periods where it ran out."""
    stats = results[0].stats
    if not stats.capacity_limits:
        return ""
    parts = ["<h2>Capacity</h2><section><p class=muted>Actions sent under each capacity "
             "limit, per period; where a period reached its limit, the actions it covers "
             "fell back or were suppressed (<code>suppressed_by: capacity</code>).</p>"]
    for name, (limit, period_ms) in sorted(stats.capacity_limits.items()):
        spent = stats.capacity_spent.get(name, Counter())
        hours, minutes = divmod(period_ms // 60_000, 60)
        per = ("per " + (f"{hours}h" if not minutes else f"{period_ms // 60_000}m")) \
            if period_ms else "in total"
        parts.append(f"<h3>{escape(name)}: {limit:,} {escape(per)}</h3>")
        if period_ms == 3_600_000 and spent:
            first, last = min(spent), max(spent)
            limits = {hour: limit for hour in range(first, last + 1, period_ms)}
            parts.append(line_chart({f"sent ({names[0]})": spent, "limit": limits},
                                    f"{name}: sent vs limit per hour"))
        full = sorted(start for start, count in spent.items() if count >= limit)
        rows = "".join(
            f"<tr><td>{_period_label(start, period_ms)}</td><td class=n>{spent[start]:,}</td>"
            f"<td class=n>{limit:,}</td></tr>" for start in sorted(spent)[:200])
        parts.append(f"<p>{len(full)} of {len(spent)} period(s) reached the limit.</p>"
                     f"<table><tr><th>period</th><th class=n>sent</th><th class=n>limit</th>"
                     f"</tr>{rows}</table>")
    parts.append("</section>")
    return "".join(parts)


def _period_label(start_ms: int, period_ms: int) -> str:
    if not period_ms:
        return "total"
    return datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_report(results: Sequence[ReplayResult], *, comparison: Comparison | None = None,
                  source: str = "") -> str:
    """The report page as a string."""
    names = _names(results)
    hourly = {n: r.stats.actions_by_hour for n, r in zip(names, results, strict=True)}
    by_action = {n: r.stats.actions_by_name for n, r in zip(names, results, strict=True)}
    suppressed = {n: r.stats.suppressed_by for n, r in zip(names, results, strict=True)}
    scores = {n: (r.stats.candidate_scores or r.stats.action_scores)
              for n, r in zip(names, results, strict=True)}
    title = "Rulebook comparison" if comparison is not None else "Replay report"
    versions = " vs ".join(escape(n) for n in names)
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>Touchflow - {title}</title>'
        f"<style>{_CSS}{FUNNEL_CSS}</style></head><body><main>",
        f"<h1>{title}</h1><p class=sub>{versions} over <code>{escape(source)}</code></p>",
        _kpis(results, names),
    ]
    if comparison is not None:
        parts.append(_diff_sections(comparison))
    parts += [
        f"<h2>Actions per hour</h2><section>{line_chart(hourly, 'Actions per hour')}</section>",
        f"<h2>Actions by action</h2><section>{bar_chart(by_action, 'Actions by action')}"
        "</section>",
        "<h2>Suppression reasons</h2><section><p class=muted>Candidate actions that were not "
        "sent, by the policy that stopped them.</p>"
        f"{bar_chart(suppressed, 'Suppression reasons')}</section>",
        "<h2>Score distribution</h2><section><p class=muted>Scores of every candidate action "
        f"considered.</p>{histogram(scores, 'Score distribution')}</section>",
        funnel_sections([r.stats.funnel for r in results], names),
        _capacity_section(results, names),
        f"<h2>Totals</h2><section>{_summary(results, names)}</section>",
        _bad_section(results[0]),
        "</main></body></html>\n",
    ]
    return "".join(parts)


def write_report(path: Path, results: Sequence[ReplayResult], *,
                 comparison: Comparison | None = None, source: str = "") -> None:
    """Write the HTML report to `path`."""
    path.write_text(render_report(results, comparison=comparison, source=source),
                    encoding="utf-8")
