"""The report's decision funnel per action and its customers-who-received-nothing section;
with two results (a comparison), A and B side by side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from html import escape

from service.replay.funnel import POLICY_ORDER, FunnelTally

__all__ = ["FUNNEL_CSS", "funnel_chart", "funnel_sections"]

_SENT = "#16a34a"
_POLICY_COLORS = ("#f59e0b", "#ef4444", "#8b5cf6", "#0ea5e9", "#64748b", "#ec4899",
                  "#a16207", "#14b8a6")
_SHOWN_ACTIONS = 20
_SHOWN_CUSTOMERS = 20
FUNNEL_CSS = """
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
.pair>div{min-width:0}.pair h3{font-size:15px;margin:0 0 8px}
.scroll{overflow-x:auto;max-width:100%}
table.funnel th{overflow-wrap:anywhere;font-size:12px}
table.funnel td,table.funnel th{padding:5px 6px}
"""


def _colors(policies: Sequence[str]) -> dict[str, str]:
    return {p: _POLICY_COLORS[i % len(_POLICY_COLORS)] for i, p in enumerate(policies)}


def funnel_chart(tally: FunnelTally, policies: Sequence[str], title: str,
                 width: int = 880) -> str:
    """One row per action (most eligible first): a bar as long as its eligible candidates,
    split into those sent and those each policy removed, in the order policies are checked."""
    actions = sorted(tally.by_action, key=lambda a: (-tally.by_action[a]["eligible"], a))
    actions = actions[:_SHOWN_ACTIONS]
    if not actions:
        return '<p class="muted">No candidate actions.</p>'
    colors = _colors(policies)
    top = max(tally.by_action[a]["eligible"] for a in actions)
    left, right, row_h = min(190, width // 3), 64, 24
    plot_w = width - left - right
    height = 16 + len(actions) * row_h
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for row, name in enumerate(actions):
        counts = tally.by_action[name]
        y = 8 + row * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">'
                     f"{escape(name[:28])}</text>")
        x = float(left)
        for part, color in [("sent", _SENT), *colors.items()]:
            value = counts.get(part, 0)
            if not value:
                continue
            w = plot_w * value / top
            label = "sent" if part == "sent" else f"removed by {part}"
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="18" '
                         f'fill="{color}"><title>{escape(name)}: {value:,} {label}</title>'
                         "</rect>")
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{counts["eligible"]:,}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(p)}</span>'
                     for p, c in [("sent", _SENT), *colors.items()])
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _funnel_table(tally: FunnelTally, policies: Sequence[str]) -> str:
    head = "".join(f'<th class="n">- {escape(p)}</th>' for p in policies)
    rows = []
    for name in sorted(tally.by_action, key=lambda a: (-tally.by_action[a]["eligible"], a)):
        counts = tally.by_action[name]
        cells = "".join(f'<td class="n">{counts.get(p, 0):,}</td>' for p in policies)
        rows.append(f"<tr><td><code>{escape(name)}</code></td>"
                    f'<td class="n">{counts["eligible"]:,}</td>{cells}'
                    f'<td class="n">{counts["sent"]:,}</td></tr>')
    return (f'<div class="scroll"><table class="funnel"><tr><th>action</th>'
            f'<th class="n">eligible</th>{head}'
            f'<th class="n">sent</th></tr>{"".join(rows)}</table></div>')


def _reason_bars(rows: list[tuple[str, int, str]], width: int) -> str:
    reasons = Counter(reason for _, _, reason in rows)
    if not reasons:
        return '<p class="muted">Every customer received at least one action.</p>'
    top = max(reasons.values())
    left, row_h = min(190, width // 3), 22
    plot_w = width - left - 64
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f'<svg viewBox="0 0 {width} {12 + len(ordered) * row_h}" width="100%" '
             'role="img" xmlns="http://www.w3.org/2000/svg"><title>Customers who received '
             "nothing, by most common reason</title>"]
    for row, (reason, count) in enumerate(ordered):
        y = 6 + row * row_h
        w = plot_w * count / top
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">'
                     f"{escape(reason[:28])}</text><rect x=\"{left}\" y=\"{y}\" "
                     f'width="{w:.1f}" height="16" fill="#64748b"><title>{escape(reason)}: '
                     f"{count:,} customers</title></rect>"
                     f'<text x="{left + w + 6:.1f}" y="{y + 13}">{count:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _unreached(tally: FunnelTally, width: int) -> str:
    rows = tally.unreached()
    total = len(tally.events)
    lines = "".join(f"<tr><td><code>{escape(customer)}</code></td><td class=n>{events:,}</td>"
                    f"<td>{escape(reason)}</td></tr>"
                    for customer, events, reason in rows[:_SHOWN_CUSTOMERS])
    shown = f"the {_SHOWN_CUSTOMERS} with most events" if len(rows) > _SHOWN_CUSTOMERS \
        else "all"
    table = ("" if not rows else
             f'<p class="muted">{shown}:</p><div class="scroll"><table><tr><th>customer</th>'
             f'<th class="n">events</th><th>most common reason</th></tr>{lines}</table></div>')
    return (f"<p><b>{len(rows):,}</b> of {total:,} customers received nothing.</p>"
            f"{_reason_bars(rows, width)}{table}")


def funnel_sections(tallies: Sequence[FunnelTally], names: Sequence[str]) -> str:
    """The two sections; one column per result (A and B side by side in a comparison)."""
    rank = {p: i for i, p in enumerate(POLICY_ORDER)}
    found = {p for tally in tallies for p in tally.policies()}
    policies = sorted(found, key=lambda p: (rank.get(p, len(rank)), p))  # same columns A, B
    paired = len(tallies) > 1
    width = 440 if paired else 880

    def columns(render: Callable[[FunnelTally], str]) -> str:
        cells = [render(t) for t in tallies]
        if not paired:
            return cells[0]
        return '<div class="pair">' + "".join(
            f"<div><h3>{escape(n)}</h3>{c}</div>" for n, c in zip(names, cells, strict=True)
        ) + "</div>"

    funnel = columns(lambda t: funnel_chart(t, policies, "Decision funnel", width)
                     + _funnel_table(t, policies))
    unreached = columns(lambda t: _unreached(t, width))
    return ("<h2>Decision funnel per action</h2><section><p class=muted>Eligible candidates, "
            "then those each policy removed, in the order the policies are checked, then "
            f"those sent.</p>{funnel}</section>"
            "<h2>Customers who received nothing</h2><section><p class=muted>Customers (by the "
            "identifier that keys their events) with no action sent over the whole log, and "
            "the policy that stopped their candidates most often.</p>"
            f"{unreached}</section>")
