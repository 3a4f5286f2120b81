"""The documented scenarios in examples/, replayed through decide() and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter

from schemas.models import Action, DecisionRecord
from service.domain import load_rulebook
from tests.unit.domain.replaykit import EXAMPLES, load_example, run_events

SCENARIOS = ["lead_scoring", "flight_delay", "phone_retail", "grocery_store", "contact_fatigue",
             "product_issue", "stock_restock"]


@pytest.mark.parametrize("name", [*SCENARIOS, "default"])
def test_every_example_has_rulebook_and_readme(name: str) -> None:
    """Each example folder ships a valid rulebook and a README (events too, except default)."""
    folder = EXAMPLES / name
    load_rulebook(folder / "rulebook.yaml")
    assert (folder / "README.md").read_text().strip()
    if name != "default":
        assert (folder / "events.jsonl").stat().st_size > 0


@pytest.mark.parametrize("name", SCENARIOS)
def test_example_output_matches_the_wire_contract(name: str) -> None:
    """Every action and decision record of every scenario validates against schemas/models."""
    replay = run_events(*_example(name))
    actions = TypeAdapter(list[Action]).validate_python(replay.actions)
    TypeAdapter(list[DecisionRecord]).validate_python(replay.decisions)
    assert actions, "each scenario sends something"


def _example(name: str):  # type: ignore[no-untyped-def]
    rulebook, events, context = load_example(name)
    return rulebook, events, context


def test_lead_scoring() -> None:
    """Points add up to 34 at the promotion-pack click; one callback per 30 days; no double
    counting of a redelivered forum event; a 14-point lead gets nothing."""
    replay = run_events(*_example("lead_scoring"))
    assert replay.audit("acme-ann") == [
        ("l-7", "sales_callback", "sent", None),
        ("l-8", "sales_callback", "suppressed", "cooldown"),
        ("l-9", "sales_callback", "sent", None),
    ]
    first = replay.actions[0]
    assert first["channel"] == "call_center" and first["payload"]["lead_score"] == 34.0
    assert first["reasons"][0].startswith("lead_score 34 >= 25 (points: registration +2")
    bob = replay.profiles["customer_id:bolt-bob"]
    assert bob is not None and bob.scores["lead_score"] == 17.0  # 2 + 10 + 5, forum once
    assert replay.sent("bolt-bob") == []
    assert [e.event_id for e, o in replay.outcomes if o.duplicate] == ["l-21"]


def test_flight_delay() -> None:
    """Apology to everyone delayed >= 60 min, by sms when consented and not night-time for
    the passenger, else by e-mail (the skipped channel audited); wifi for heavy users, else
    duty-free coupon for frequent duty-free shoppers, never both; a Taipei passenger's UTC-stamped
    night-time delay gets e-mail and a coupon deferred to 07:00 Taipei; nothing for a 30-minute
    delay."""
    replay = run_events(*_example("flight_delay"))
    channels = {(a["customer_id"], a["action"]): a["channel"] for a in replay.actions}
    assert replay.sent("heavy-hana") == ["apology", "wifi_voucher"]
    assert replay.sent("dutyfree-dan") == ["apology", "dutyfree_coupon_25"]
    assert replay.sent("both-bea") == ["apology", "wifi_voucher"]
    assert ("delay-both-bea", "dutyfree_coupon_25", "suppressed", "arbitration") in \
        replay.audit("both-bea")
    assert replay.sent("plain-pat") == ["apology"]
    assert replay.sent("short-sam") == []
    assert [channels[(who, "apology")] for who in ("heavy-hana", "dutyfree-dan", "plain-pat",
                                                    "taipei-tao")] == ["sms", "email", "sms",
                                                                       "email"]
    skips = {d["customer_id"]: d["skipped_channels"] for d in replay.decisions
             if d.get("skipped_channels")}
    assert [(s["channel"], s["reason"]) for s in skips["dutyfree-dan"]] == [("sms", "no_consent")]
    assert [(s["channel"], s["reason"]) for s in skips["taipei-tao"]] == [("sms", "quiet_hours")]
    assert "local time 23:30 (Asia/Taipei)" in skips["taipei-tao"][0]["why"]
    [coupon] = [a for a in replay.actions if a["customer_id"] == "taipei-tao"
                and a["action"] == "dutyfree_coupon_25"]
    assert coupon["not_before"] == "2026-03-07T07:00:00+08:00"
    assert all("not_before" not in a for a in replay.actions if a is not coupon)


def test_phone_retail() -> None:
    """Three top-phone views in 30 min -> compare link; no slot -> pickup; tablets stop phone
    offers; order-status call -> brief; slow views get nothing; a late view still counts."""
    replay = run_events(*_example("phone_retail"))
    assert replay.sent("pia") == [
        "camera_compare_link", "store_pickup_offer", "tablet_offer", "order_status_brief",
    ]
    brief = replay.actions[3]
    assert brief["payload"]["order_id"] == "o-77" and brief["channel"] == "call_center"
    assert replay.sent("sol") == []
    assert [a["trigger_event_id"] for a in replay.actions if a["customer_id"] == "lou"] == ["p-31"]


def test_grocery_store() -> None:
    """Cart items in stock at the entered store -> coupon; out of stock -> suppressed (context);
    birthday search -> gifts in the customer's own tier, suppressed when that box is out."""
    replay = run_events(*_example("grocery_store"))
    assert replay.sent("gus") == ["in_store_cart_coupon", "gift_suggestions"]
    gift = next(a for a in replay.actions if a["action"] == "gift_suggestions")
    assert gift["payload"] == {"list": "birthday-gifts-premium", "tier": "premium"}
    assert replay.audit("kim") == [
        ("g-12", "in_store_cart_coupon", "suppressed", "context"),
        ("g-13", "gift_suggestions", "suppressed", "context"),
    ]
    reasons = [d["reasons"][0] for d in replay.decisions if d["customer_id"] == "kim"]
    assert reasons[0] == "context stock:sku-kale:store-2 = 0 (needs > 0)"


def test_contact_fatigue() -> None:
    """Five qualify on each app open; the top three by value go out, the rest and everything
    later that day are suppressed by contact_cap; the next day three go out again."""
    replay = run_events(*_example("contact_fatigue"))
    top = ["premium_upgrade", "loyalty_bonus", "newsletter"]
    assert replay.sent("fay") == top + top
    day1 = [(t, a, s) for t, a, _, s in replay.audit("fay") if t in ("c-1", "c-2")]
    assert [s for _, _, s in day1].count("contact_cap") == 7
    assert all(d["reasons"][0].startswith("contact cap 3 per 1d") for d in replay.decisions
               if d["suppressed_by"] == "contact_cap")


def test_examples_folder_documents_context_files() -> None:
    """The examples README explains the context.jsonl convention the tests rely on."""
    text = (EXAMPLES / "README.md").read_text()
    assert "context.jsonl" in text and Path(EXAMPLES / "grocery_store" / "context.jsonl").exists()


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXAMPLES.glob("*/context.jsonl")))
def test_example_context_holds_from_before_the_first_event(name: str) -> None:
    """Every line of an example's context.jsonl carries a valid_from, and each key's first
    version holds from before the example's first event: published on the topic today (record
    timestamp now), it still applies (later versions are the example's point, as in
    stock_restock)."""
    _, events, context = load_example(name)
    first = min(event.ts_ms for event in events)
    lines = (EXAMPLES / name / "context.jsonl").read_bytes().splitlines()
    assert all(b'"valid_from"' in line for line in lines if line.strip())
    assert all(context.versions(key)[0][0] < first for key in context.names())


def test_product_issue() -> None:
    """Short stock suppresses the promotion; the 4th complaint call about phone-x within an
    hour fires one `product_issue` message and pauses phone-x's promotion for 6 hours only."""
    from service.replay.runner import Replayer

    rulebook, events, context = load_example("product_issue")
    replayer = Replayer(rulebook, context)
    sent, suppressed, operations = [], [], []
    for item in events:
        outcome = replayer.apply(item)
        sent += [a["trigger_event_id"] for a in outcome.actions]
        suppressed += [(d["trigger_event_id"], d["reasons"][0]) for d in outcome.decisions
                       if d["outcome"] == "suppressed"]
        operations += outcome.operations
    assert sent == ["p-1", "p-11", "p-13"]
    assert [event_id for event_id, _ in suppressed] == ["p-2", "p-10"]
    assert "stock:phone-z = 3 (needs >= 10)" in suppressed[0][1]
    assert "signal product_issue active for phone-x" in suppressed[1][1]
    [message] = operations
    assert (message["signal"], message["key"], message["count"], message["trigger_event_id"]) \
        == ("product_issue", "phone-x", 4, "p-9")
    assert message["first_at"] == "2026-05-04T09:20:00+00:00"


def test_stock_restock() -> None:
    """One log across a stock-out and a restock: views before 10:00 and from 14:00 get the
    banner, the three in between are suppressed by context (stock 0 then)."""
    replay = run_events(*_example("stock_restock"))
    sent = [a["trigger_event_id"] for a in replay.actions]
    assert sent == ["s-1", "s-2", "s-6", "s-7", "s-8"]
    suppressed = [r["trigger_event_id"] for r in replay.decisions
                  if r.get("suppressed_by") == "context"]
    assert suppressed == ["s-3", "s-4", "s-5"]
