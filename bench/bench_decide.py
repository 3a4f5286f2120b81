"""Micro-benchmark of the pure core: `decide()` events per second on one core.

    .venv/bin/python bench/bench_decide.py [--events 200000] [--customers 5000]
        [--rules examples/default/rulebook.yaml] [--seed 7] [--log bench.jsonl]

Generates a seeded, realistic event mix (the simulator's types, customers with sessions,
time moving forward with some late and duplicate events), decodes it once, then times only
the `decide()` loop over it, the way the worker and replay call it (profiles kept in a dict).
Prints a small table: events/s, µs/event, actions and decision records per event, duplicates,
and the mean serialised profile size.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.event import Event, parse_event
from service.domain import Profile, decide, load_rulebook

CATEGORIES = ["phones", "tablets", "cameras", "laptops", "audio", "tv", "gifts", "grocery"]
STORES = [f"store-{i}" for i in range(1, 9)]
WEB = [("page_viewed", 30), ("product_viewed", 30), ("search", 8), ("cart_added", 5),
       ("checkout_viewed", 2), ("content_downloaded", 1), ("registration_completed", 0.2)]
OTHER = [("mobile", "app_opened", 8), ("mobile", "push_opened", 1.5),
         ("mobile", "store_entered", 1),
         ("store", "purchase", 1.5), ("store", "store_visit", 1), ("call_center", "call", 0.8),
         ("email", "email_opened", 4), ("email", "email_clicked", 1), ("sms", "sms_clicked", 0.3),
         ("web", "consent_changed", 0.3)]


def _properties(rng: random.Random, etype: str, channel: str) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    if etype == "page_viewed":
        return {"category": category}
    if etype == "product_viewed":
        return {"product_id": f"p-{rng.randrange(200)}", "category": category,
                "price": round(rng.lognormvariate(4, 1), 2)}
    if etype == "search":
        return {"query": "gift", "category": category}
    if etype == "cart_added":
        return {"sku": f"sku-{rng.randrange(100)}", "price": round(rng.lognormvariate(4, 1), 2),
                "store_id": rng.choice(STORES)}
    if etype == "checkout_viewed":
        return {"delivery_slot_available": rng.random() < 0.7}
    if etype == "content_downloaded":
        return {"content_id": f"c-{rng.randrange(20)}", "content_kind": "whitepaper"}
    if etype in ("push_opened", "email_opened", "sms_clicked"):
        return {"campaign_id": f"cmp-{rng.randrange(10)}"}
    if etype == "email_clicked":
        return {"campaign_id": f"cmp-{rng.randrange(10)}", "link": "offer"}
    if etype in ("store_entered", "store_visit"):
        return {"store_id": rng.choice(STORES)}
    if etype == "purchase":
        return {"amount": round(rng.lognormvariate(4.5, 0.8), 2), "store_id": rng.choice(STORES),
                "items": [f"sku-{rng.randrange(100)}" for _ in range(rng.randint(1, 4))]}
    if etype == "call":
        return {"reason": rng.choice(["complaint", "order_status", "billing", "sales"])}
    if etype == "consent_changed":
        return {"channel": rng.choice(["sms", "email"]), "granted": rng.random() < 0.7}
    return {}


def generate(count: int, customers: int, seed: int) -> list[dict[str, Any]]:
    """A seeded event log: sessions of web browsing plus other channels, ~1% late/duplicate."""
    rng = random.Random(seed)
    types = [(("web", t), w) for t, w in WEB] + [((c, t), w) for c, t, w in OTHER]
    choices = [ct for ct, _ in types]
    weights = [w for _, w in types]
    offsets = {f"c-{i}": rng.choice([0, 60, 540, -300]) for i in range(customers)}
    clock = 1_772_400_000_000  # 2026-03-01
    out: list[dict[str, Any]] = []
    while len(out) < count:
        heavy = rng.random() < 0.3  # 30% of sessions come from the 5% most active customers
        customer = f"c-{rng.randrange(max(customers // 20, 1) if heavy else customers)}"
        for _ in range(rng.randint(1, 12)):  # a session
            clock += rng.randint(1_000, 40_000)
            channel, etype = rng.choices(choices, weights)[0]
            ts = clock - (rng.randint(60_000, 3_600_000) if rng.random() < 0.01 else 0)
            offset = offsets[customer]
            seconds = ts // 1000 + offset * 60
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            sign = "+" if offset >= 0 else "-"
            stamp += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
            event = {"event_id": f"e-{len(out)}", "occurred_at": stamp, "channel": channel,
                     "type": etype, "identity": {"customer_id": customer},
                     "properties": _properties(rng, etype, channel)}
            out.append(event)
            if rng.random() < 0.01:
                out.append(event)  # a redelivery
    return out[:count]


def run(events: list[Event], rulebook: Any, context: dict[str, Any]) -> dict[str, float]:
    """Time the decide loop; return counters."""
    from service.ops.gcpolicy import GcPolicy

    profiles: dict[str, Profile | None] = {}
    actions = decisions = duplicates = 0
    gc.collect()
    # the worker's garbage-collection regime (service/ops/gcpolicy.py): survivors frozen between
    # batches of 1,000 events, so the collector does not rescan the profiles over and over
    collector = GcPolicy()
    started = time.perf_counter()
    for number, event in enumerate(events):
        key = event.key()
        outcome = decide(profiles.get(key), event, context, rulebook)
        profiles[key] = outcome.profile
        actions += len(outcome.actions)
        decisions += len(outcome.decisions)
        duplicates += outcome.duplicate
        if not number % 1000:
            collector.after_batch()
    seconds = time.perf_counter() - started
    collector.close()
    sizes = [len(p.to_bytes()) for p in profiles.values() if p is not None]
    return {"seconds": seconds, "actions": actions, "decisions": decisions,
            "duplicates": duplicates, "profiles": len(sizes),
            "profile_bytes": sum(sizes) / max(len(sizes), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--rules", default="examples/default/rulebook.yaml")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--log", help="also write the generated log here (JSONL)")
    args = parser.parse_args(argv)
    rulebook = load_rulebook(args.rules)
    raw = generate(args.events, args.customers, args.seed)
    if args.log:
        Path(args.log).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in raw))
    events = [parse_event(e) for e in raw]
    best: dict[str, float] | None = None
    for _ in range(args.repeat):
        result = run(events, rulebook, {})
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    n = len(events)
    rows = [
        ("rulebook", rulebook.version),
        ("events", f"{n}"),
        ("customers (profiles)", f"{int(best['profiles'])}"),
        ("decide() events/s", f"{n / best['seconds']:,.0f}"),
        ("µs per event", f"{best['seconds'] / n * 1e6:.2f}"),
        ("actions per event", f"{best['actions'] / n:.2%}"),
        ("decision records per event", f"{best['decisions'] / n:.2%}"),
        ("duplicates", f"{int(best['duplicates'])}"),
        ("mean profile bytes", f"{best['profile_bytes']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
