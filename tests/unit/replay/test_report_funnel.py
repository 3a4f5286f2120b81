"""The report's decision funnel per action and its customers who received nothing
(service/replay/funnel.py, html_funnel.py), for a replay and side by side in a comparison."""

from __future__ import annotations

from pathlib import Path

from service.cli import main
from service.domain.rules import load_rulebook
from service.replay.funnel import NO_CANDIDATE, FunnelTally
from service.replay.html_report import render_report
from service.replay.runner import replay_file
from tests.events import at_minute, log_line

RULES = """\
version: "{version}"
actions:
  offer: {{channel: call_center, consent: exempt, once: true, value: 50,
          when: [{{event: {{type: app_opened}}}}]}}
  sms_ping: {{channel: sms, value: 20, when: [{{event: {{type: app_opened}}}}]}}
  banner: {{channel: web, consent: exempt, value: 10, when: [{{event: {{type: app_opened}}}}]}}
  sms_followup: {{channel: sms, when: [{{event: {{type: texted}}}}]}}
contact_policy:
  cap: {{max: {cap}, within: 24h}}
  consent_by_channel: {{sms: opt_in}}
arbitration:
  max_per_event: 5
"""


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    log = tmp_path / "log.jsonl"
    sends = [("f1", "fay", "app_opened", 8), ("f2", "fay", "app_opened", 9),
             ("f3", "fay", "app_opened", 10), ("i1", "ivy", "texted", 8),
             ("i2", "ivy", "texted", 9), ("h1", "hal", "page_viewed", 8)]
    log.write_bytes(b"\n".join([
        log_line(event_id, customer, etype, at=at_minute(0, hour=hour), channel="mobile")
        for event_id, customer, etype, hour in sends
    ]) + b"\n")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(RULES.format(version="cap-2", cap=2))
    b.write_text(RULES.format(version="cap-3", cap=3))
    return log, a, b


def test_funnel_counts_each_policy_in_order_and_the_unreached(tmp_path: Path) -> None:
    """Three app opens in a day under a cap of two: the once-only offer is eligible 3 times,
    removed twice by once_only, sent once; the SMS is removed by no_consent every time; the
    banner loses two to the cap. ivy's candidates all lack consent and hal never had one: both
    received nothing, with those reasons; fay is not listed."""
    log, rules, _ = _files(tmp_path)
    result = replay_file(log, load_rulebook(rules), observe=True)
    tally = result.stats.funnel
    assert dict(tally.by_action["offer"]) == {"eligible": 3, "once_only": 2, "sent": 1}
    assert dict(tally.by_action["sms_ping"]) == {"eligible": 3, "no_consent": 3}
    assert dict(tally.by_action["banner"]) == {"eligible": 3, "contact_cap": 2, "sent": 1}
    assert tally.policies() == ["once_only", "no_consent", "contact_cap"]
    assert tally.unreached() == [("customer_id:ivy", 2, "no_consent"),
                                 ("customer_id:hal", 1, NO_CANDIDATE)]


def test_reason_is_what_stopped_the_best_candidate_and_ties_go_by_policy_order() -> None:
    """An event's reason is what stopped its best-ranked candidate (the first audit record),
    not the arbitration that followed a holdout; over a customer's events the most common
    wins, a tie going to the policy checked first; unknown policies are listed last."""
    tally = FunnelTally()

    def stop(action: str, policy: str) -> dict[str, str]:
        return {"kind": "action", "action": action, "outcome": "suppressed",
                "suppressed_by": policy}

    tally.observe("held", [], [stop("a", "experiment_holdout"), stop("b", "arbitration"),
                               stop("c", "arbitration"), {"kind": "merge"}])
    tally.observe("k", [], [stop("a", "contact_cap"), stop("b", "context")])
    tally.observe("k", [], [stop("a", "context")])
    tally.observe("k", [], [stop("b", "zz_new_policy")])
    tally.observe("k", [], [])
    assert tally.unreached() == [("k", 4, "context"), ("held", 1, "experiment_holdout")]
    assert tally.policies() == ["context", "arbitration", "contact_cap", "experiment_holdout",
                                "zz_new_policy"]


def test_report_has_the_funnel_and_unreached_sections(tmp_path: Path) -> None:
    """The replay report draws the funnel (a bar per action, a table with a column per policy
    in order) and the unreached customers with their reason."""
    log, rules, _ = _files(tmp_path)
    result = replay_file(log, load_rulebook(rules), observe=True)
    html = render_report([result], source="log")
    assert "<h2>Decision funnel per action</h2>" in html
    assert "<title>Decision funnel</title>" in html
    heads = html[html.index("<th>action</th><th class=\"n\">eligible</th>"):]
    assert heads.index("once_only") < heads.index("no_consent") < heads.index("contact_cap")
    assert "<b>2</b> of 3 customers received nothing" in html
    assert "customer_id:ivy" in html and NO_CANDIDATE in html
    assert 'class="pair"' not in html


def test_comparison_report_shows_a_and_b_side_by_side(tmp_path: Path) -> None:
    """`replay --compare --report`: the funnel and unreached sections have one column for A
    and one for B, each with its own numbers (B's higher cap loses one banner less)."""
    log, a, b = _files(tmp_path)
    report = tmp_path / "r.html"
    assert main(["replay", "--rules", str(a), "--compare", str(b), "--input", str(log),
                 "--output", str(tmp_path / "c.jsonl"), "--report", str(report),
                 "--no-progress"]) == 0
    html = report.read_text()
    funnel = html[html.index("Decision funnel per action"):html.index(
        "Customers who received nothing")]
    assert funnel.count('<div class="pair">') == 1
    assert "<h3>A: cap-2+" in funnel and "<h3>B: cap-3+" in funnel
    assert funnel.count("<title>Decision funnel</title>") == 2
    assert "banner: 2 removed by contact_cap" in funnel
    assert "banner: 1 removed by contact_cap" in funnel
