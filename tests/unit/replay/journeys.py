"""A seeded event log the default rulebook acts on, shared by the equivalence tests."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.events import wire

__all__ = ["journey_log"]


def journey_log(path: Path, n: int = 3000, customers: int = 150) -> Path:
    """A seeded retail journey log the default rulebook acts on (carts that stall at checkout,
    complaint calls, purchases, store visits), by day in Tokyo, so quiet hours do not mute it."""
    rng = random.Random(20260302)
    base = 1_772_409_600_000  # 2026-03-02T09:00+09:00
    kinds = [
        ("product_viewed", "web", lambda: {"category": rng.choice(["tv", "audio"]),
                                           "price": rng.choice([40, 120, 400]),
                                           "sku": f"s{rng.randrange(9)}"}),
        ("cart_added", "web", lambda: {"sku": f"s{rng.randrange(9)}", "price": 120}),
        ("checkout_viewed", "web", lambda: {"delivery_slot_available": rng.random() < 0.3}),
        ("call", "call_center", lambda: {"reason": rng.choice(["complaint", "billing"])}),
        ("purchase", "store", lambda: {"amount": rng.choice([60, 220]), "store_id": "st-1"}),
        ("store_entered", "store", lambda: {"store_id": "st-1"}),
        ("email_opened", "email", dict),
    ]
    lines = []
    for i in range(n):
        etype, channel, props = rng.choice(kinds)
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base + i * 3000) // 1000 + 9 * 3600))
        lines.append(wire(etype, event_id=f"g-{i}", at=at + "+09:00", channel=channel,
                          customer=f"c-{rng.randrange(customers)}", props=props()))
    # The awkward cases production meets: redeliveries, bad input, an erasure, late consent.
    for i in range(0, n, 97):
        lines.insert(i + 1, lines[i])
    lines.insert(n // 3, b'{"event_id": "bad-1", "channel": "fax"}')
    lines.insert(n // 2, b"not json at all")
    lines.insert(n // 2, wire("erasure_requested", event_id="erase-1",
                              at="2026-03-02T12:00:00+09:00", customer="c-7"))
    lines.insert(n // 4, wire("consent_changed", event_id="consent-1",
                              at="2026-03-02T10:00:00+09:00", channel="sms", customer="c-3",
                              props={"channel": "sms", "granted": True}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def scenarios(tmp: Path) -> dict[str, tuple[Path, Path, Path | None]]:
    """Every example with a log (rulebook, events, context or None), plus `default-journeys`:
    the default rulebook over `journey_log`, for volume and the awkward cases."""
    root = Path(__file__).resolve().parents[3]
    out: dict[str, tuple[Path, Path, Path | None]] = {}
    for folder in sorted((root / "examples").iterdir()):
        events = folder / "events.jsonl"
        if (folder / "rulebook.yaml").exists() and events.exists():
            context = folder / "context.jsonl"
            out[folder.name] = (folder / "rulebook.yaml", events,
                                context if context.exists() else None)
    out["default-journeys"] = (root / "examples" / "default" / "rulebook.yaml",
                               journey_log(tmp / "journeys.jsonl"), None)
    return out


SCENARIO_NAMES = (
    "contact_fatigue", "flight_delay", "grocery_store", "known_after_login", "learning",
    "lead_scoring", "phone_retail", "stock_restock", "default-journeys",
)
