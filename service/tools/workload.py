"""Seeded, realistic multichannel customer journeys: the simulator's and the benchmarks' traffic.

Pure and deterministic: everything comes from one ``random.Random(seed)`` and the ``start``
datetime you pass in (no wall clock, no global random), so the same arguments always give the
same events, byte for byte once encoded.

Each customer has a persona (browser, buyer, store-goer, churner, researcher, deal hunter,
anonymous visitor), a stable UTC offset, a home store, and a journey made of sessions: a web
visit (page views, searches, product views, cart, checkout), an app open, a store trip
(store_entered -> store_visit -> purchase), a call, an e-mail or SMS click that leads to a
visit. Sessions of all customers are merged into one stream in non-decreasing event time.
Some visitors start anonymous and are later linked by an ``identified`` event; a few send
``consent_changed``.

``malformed_samples()`` is the separate corpus of bad messages for dead-letter tests.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import accumulate, islice
from random import Random
from typing import Any

from schemas.codec import dumps

__all__ = [
    "PERSONAS",
    "event_log",
    "journeys",
    "malformed_cases",
    "malformed_samples",
]

CATEGORIES: tuple[str, ...] = (
    "phones", "tablets", "laptops", "audio", "tv", "cameras", "gifts", "grocery", "fashion",
    "home",
)
_PRICE_MU = {  # lognormal mu of the price per category (exp(mu) ~ median price)
    "phones": 6.2, "tablets": 5.9, "laptops": 6.7, "audio": 4.6, "tv": 6.4, "cameras": 6.0,
    "gifts": 3.4, "grocery": 1.8, "fashion": 3.9, "home": 4.2,
}
_QUERIES = {
    "phones": ("5g phone", "phone case", "foldable"), "tablets": ("tablet 11 inch", "stylus"),
    "laptops": ("ultrabook", "gaming laptop", "usb-c dock"), "audio": ("earbuds", "soundbar"),
    "tv": ("oled tv", "65 inch"), "cameras": ("mirrorless", "action cam"),
    "gifts": ("gift card", "birthday gift"), "grocery": ("organic milk", "coffee beans"),
    "fashion": ("rain jacket", "sneakers"), "home": ("air purifier", "robot vacuum"),
}
_CONTENT = (("wp-cloud", "whitepaper"), ("eb-5g-guide", "ebook"), ("cs-retail", "case_study"),
            ("wb-smart-home", "webinar"), ("wp-security", "whitepaper"))
_CAMPAIGNS = ("cmp-spring-sale", "cmp-new-phone", "cmp-loyalty", "cmp-winback", "cmp-tv-week")
_CALL_REASONS = ("complaint", "order_status", "billing", "sales")
_STORES = tuple(f"store-{i:03d}" for i in range(1, 41))
_PRODUCTS_PER_CATEGORY = 300
#: (UTC offset in minutes, weight): stable per customer.
_OFFSETS = ((540, 4), (60, 3), (0, 2), (-300, 3), (-480, 1), (330, 1))
_LOCALES = {540: "ja-JP", 60: "de-DE", 0: "en-GB", -300: "en-US", -480: "en-US", 330: "en-IN"}
_DEVICES = ("ios", "android", "desktop-chrome", "desktop-safari", "desktop-edge")

#: persona -> (weight, session kind weights: web, app, store, call, email, sms, push)
PERSONAS: dict[str, tuple[float, tuple[float, ...]]] = {
    "browser": (30, (8, 2, 0.3, 0.1, 1, 0.2, 0.5)),
    "buyer": (20, (6, 2, 2, 0.3, 1, 0.3, 0.5)),
    "store_goer": (15, (1, 3, 5, 0.3, 0.5, 0.3, 1)),
    "churner": (10, (2, 1, 0.5, 3, 1.5, 0.2, 0.3)),
    "researcher": (10, (6, 0.5, 0.2, 0.5, 2, 0.1, 0.1)),
    "deal_hunter": (10, (3, 1, 1, 0.1, 3, 2, 2)),
    "anonymous": (5, (1, 0, 0, 0, 0, 0, 0)),
}
_SESSION_KINDS = ("web", "app", "store", "call", "email", "sms", "push")
# Cumulative weights for rng.choices (same draws as weights=, computed once).
_PERSONA_NAMES = tuple(PERSONAS)
_PERSONA_CUM = tuple(accumulate(w for w, _ in PERSONAS.values()))
_SESSION_CUM = {name: tuple(accumulate(kinds)) for name, (_, kinds) in PERSONAS.items()}
_OFFSET_VALUES = tuple(o for o, _ in _OFFSETS)
_OFFSET_CUM = tuple(accumulate(w for _, w in _OFFSETS))
_HORIZON_S = 14 * 24 * 3600.0  # customers' journeys spread over two weeks of event time
_Step = tuple[str, str, dict[str, Any]]  # (channel, type, properties)


@dataclass(slots=True)
class _Customer:
    index: int
    customer_id: str
    anonymous_id: str
    persona: str
    tz: timezone
    offset_s: int
    locale: str
    device: str
    home_store: str
    favourite: str
    remaining: int
    known: bool  # False until an `identified` event links anonymous_id to customer_id
    sessions: int = 0
    cart: list[tuple[str, float]] = field(default_factory=list)
    pending: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)


def _tz(offset_min: int) -> timezone:
    return UTC if offset_min == 0 else timezone(timedelta(minutes=offset_min))


def _new_customer(rng: Random, index: int, mean: float) -> _Customer:
    persona = rng.choices(_PERSONA_NAMES, cum_weights=_PERSONA_CUM)[0]
    offset = rng.choices(_OFFSET_VALUES, cum_weights=_OFFSET_CUM)[0]
    # Heavy-tailed activity: most customers do little, a few do a lot (mean ~ `mean`).
    remaining = max(1, round(rng.expovariate(1.0 / mean)))
    anonymous = persona == "anonymous"
    return _Customer(
        index=index,
        customer_id=f"c-{index:06d}",
        anonymous_id=f"a-{rng.getrandbits(48):012x}",
        persona=persona,
        tz=_tz(offset),
        offset_s=offset * 60,
        locale=_LOCALES[offset],
        device=rng.choice(_DEVICES),
        home_store=rng.choice(_STORES),
        favourite=rng.choice(CATEGORIES),
        remaining=remaining,
        known=not anonymous and rng.random() >= 0.12,
    )


def _daytime(rng: Random, c: _Customer, t: float, start_s: float) -> float:
    """Move a session that would begin in the customer's local night (23:00-07:00) to the
    next morning, most of the time: people sleep, and the contact policy's quiet hours
    should mostly meet awake customers."""
    local = (start_s + t + c.offset_s) % 86400.0
    if 7 * 3600 <= local < 23 * 3600 or rng.random() < 0.1:
        return t
    until_seven = (7 * 3600 - local) % 86400.0
    return t + until_seven + rng.uniform(0.0, 15 * 3600.0)


def _price(rng: Random, category: str) -> float:
    return round(rng.lognormvariate(_PRICE_MU[category], 0.5), 2)


def _product(rng: Random, c: _Customer) -> tuple[str, str, float]:
    category = c.favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
    number = int(rng.paretovariate(1.2)) % _PRODUCTS_PER_CATEGORY
    return f"p-{category[:3]}-{number:04d}", category, _price(rng, category)


def _web_session(rng: Random, c: _Customer) -> list[_Step]:
    out: list[_Step] = []
    category = c.favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
    out.append(("web", "page_viewed", {"category": category}))
    buying = c.persona in ("buyer", "deal_hunter") or rng.random() < 0.1
    views = 1 + int(rng.expovariate(1 / (4 if buying else 2.5)))
    if rng.random() < 0.35:
        out.append(("web", "search", {"query": rng.choice(_QUERIES[category]),
                                      "category": category}))
    for _ in range(views):
        if rng.random() < 0.3:
            out.append(("web", "page_viewed", {"category": category}))
        product_id, cat, price = _product(rng, c)
        out.append(("web", "product_viewed",
                    {"product_id": product_id, "category": cat, "price": price}))
        if buying and rng.random() < 0.3:
            sku = "sku-" + product_id[2:]
            props: dict[str, Any] = {"sku": sku, "price": price}
            if rng.random() < 0.3:
                props["store_id"] = c.home_store
            c.cart.append((sku, price))
            out.append(("web", "cart_added", props))
    if c.cart and rng.random() < 0.5:
        slot = rng.random() < (0.5 if c.persona == "churner" else 0.75)
        out.append(("web", "checkout_viewed", {"delivery_slot_available": slot}))
    if c.persona == "researcher" and rng.random() < 0.5:
        content_id, kind = rng.choice(_CONTENT)
        out.append(("web", "content_downloaded", {"content_id": content_id, "content_kind": kind}))
    if not c.known and c.persona != "anonymous" and rng.random() < 0.3:
        out.append(("web", "registration_completed", {}))
        out.append(("web", "identified", {}))
    if rng.random() < 0.004:
        out.append(("web", "consent_changed",
                    {"channel": rng.choice(("email", "sms", "mobile")),
                     "granted": rng.random() < 0.5}))
    return out


def _store_trip(rng: Random, c: _Customer) -> list[_Step]:
    store = c.home_store if rng.random() < 0.8 else rng.choice(_STORES)
    out: list[_Step] = []
    if c.device in ("ios", "android") or rng.random() < 0.3:
        out.append(("mobile", "store_entered", {"store_id": store}))
    out.append(("store", "store_visit", {"store_id": store}))
    if c.cart or rng.random() < 0.55:
        items = c.cart[:] if c.cart else [
            ("sku-" + _product(rng, c)[0][2:], _price(rng, c.favourite))
            for _ in range(1 + int(rng.expovariate(0.7)))
        ]
        c.cart.clear()
        amount = round(sum(price for _, price in items), 2)
        out.append(("store", "purchase",
                    {"amount": amount, "store_id": store, "items": [sku for sku, _ in items]}))
    return out


def _session(rng: Random, c: _Customer) -> list[_Step]:
    if c.sessions == 0 and c.known and rng.random() < 0.05:
        # Consent captured at sign-up, most often the SMS opt-in the rulebook asks for.
        channel = "sms" if rng.random() < 0.7 else "email"
        first: list[_Step] = [("web", "consent_changed", {"channel": channel, "granted": True})]
    else:
        first = []
    kind = rng.choices(_SESSION_KINDS, cum_weights=_SESSION_CUM[c.persona])[0]
    if kind == "web":
        return first + _web_session(rng, c)
    out: list[_Step]
    if kind == "app":
        out = [("mobile", "app_opened", {})]
        return first + (out + _web_session(rng, c)[:3] if rng.random() < 0.4 else out)
    if kind == "store":
        return first + _store_trip(rng, c)
    if kind == "call":
        reasons = (4, 1, 3, 1) if c.persona == "churner" else (1, 4, 2, 3)
        props: dict[str, Any] = {"reason": rng.choices(_CALL_REASONS, reasons)[0]}
        if rng.random() < 0.4:
            props["product_id"] = _product(rng, c)[0]
        return [*first, ("call_center", "call", props)]
    campaign = rng.choice(_CAMPAIGNS)
    if kind == "email":
        out = [("email", "email_opened", {"campaign_id": campaign})]
        if rng.random() < 0.35:
            link = rng.choice(("offer", "product", "store-finder", "unsubscribe"))
            out.append(("email", "email_clicked", {"campaign_id": campaign, "link": link}))
            out += _web_session(rng, c)[:4]
        return first + out
    if kind == "sms":
        return [*first, ("sms", "sms_clicked", {"campaign_id": campaign}),
                *_web_session(rng, c)[:3]]
    out = [("mobile", "push_opened", {"campaign_id": campaign}), ("mobile", "app_opened", {})]
    if rng.random() < 0.3:
        out += _store_trip(rng, c)
    return first + out


def _plan(rng: Random, c: _Customer, begin: float) -> None:
    """Fill `c.pending` with the next session's events, times in seconds since start."""
    steps = _session(rng, c)[: c.remaining]
    c.sessions += 1
    t = begin
    pending = []
    for channel, etype, props in steps:
        pending.append((t, channel, etype, props))
        gap = rng.expovariate(1 / 25) if channel == "web" else rng.expovariate(1 / 240)
        t += 1.0 + gap
    pending.reverse()  # pop() from the end is the next event
    c.pending = pending


def _format_time(start: datetime, seconds: float, tz: timezone) -> str:
    moment = (start + timedelta(seconds=seconds)).astimezone(tz)
    text = moment.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if tz is UTC else text


def _event(c: _Customer, seq: int, seed: int, stamp: str, channel: str, etype: str,
           props: dict[str, Any], session: int) -> dict[str, Any]:
    if etype == "identified":
        c.known = True
        identity = {"customer_id": c.customer_id, "anonymous_id": c.anonymous_id}
    elif not c.known:
        identity = {"anonymous_id": c.anonymous_id}
    elif channel == "web":
        identity = {"customer_id": c.customer_id, "anonymous_id": c.anonymous_id}
    else:
        identity = {"customer_id": c.customer_id}
    context: dict[str, Any] = {"session_id": f"s-{c.index:06d}-{session:04d}",
                               "device": c.device, "locale": c.locale}
    if channel in ("web", "mobile"):
        context["app_version" if channel == "mobile" else "page"] = (
            "5.12.0" if channel == "mobile" else f"/{props.get('category', 'home')}"
        )
    if "campaign_id" in props:
        context["campaign_id"] = props["campaign_id"]
    return {
        "event_id": f"e-{seed:x}-{seq:09d}",
        "occurred_at": stamp,
        "channel": channel,
        "type": etype,
        "identity": identity,
        "properties": props,
        "context": context,
    }


def journeys(
    seed: int, customers: int, start: datetime, *, events_per_customer_mean: float = 20.0
) -> Iterator[dict[str, Any]]:
    """Yield the journeys of `customers` customers as wire-format event dicts, ordered by time.

    `start` must be timezone-aware; event times lie in about [start, start + 2-4 weeks).
    The stream ends when every customer's journey ends (about customers x mean events).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware, e.g. datetime(2026, 3, 2, tzinfo=UTC)")
    if customers < 1 or events_per_customer_mean <= 0:
        raise ValueError("customers must be >= 1 and events_per_customer_mean > 0")
    rng = Random(seed)
    start_s = start.timestamp()
    people: list[_Customer] = []
    heap: list[tuple[float, int]] = []
    for index in range(customers):
        c = _new_customer(rng, index, events_per_customer_mean)
        people.append(c)
        heap.append((_daytime(rng, c, rng.uniform(0.0, _HORIZON_S * 0.5), start_s), index))
    heapq.heapify(heap)
    seq = 0
    while heap:
        t, index = heap[0]
        c = people[index]
        if not c.pending:
            _plan(rng, c, t)
        t, channel, etype, props = c.pending.pop()
        stamp = _format_time(start, t, c.tz)
        yield _event(c, seq, seed, stamp, channel, etype, props, c.sessions)
        seq += 1
        c.remaining -= 1
        if c.remaining <= 0:
            heapq.heappop(heap)
            people[index] = c  # keep the slot; the customer is done
            continue
        if c.pending:
            heapq.heapreplace(heap, (c.pending[-1][0], index))
        else:
            # Next session after a gap: hours to days, shorter for busy customers.
            mean_gap = _HORIZON_S / max(4.0, events_per_customer_mean / 2)
            later = t + 600.0 + rng.expovariate(1 / mean_gap)
            heapq.heapreplace(heap, (_daytime(rng, c, later, start_s), index))


def event_log(seed: int, n_events: int, customers: int, start: datetime) -> list[bytes]:
    """Exactly `n_events` JSON-encoded events (the earliest of the journeys), for benchmarks."""
    # Enough events per customer that the earliest `n_events` touch most of the customers.
    mean = max(3.0, 1.5 * n_events / customers)
    out = [dumps(e) for e in islice(
        journeys(seed, customers, start, events_per_customer_mean=mean), n_events)]
    epoch = 1
    while len(out) < n_events:  # only with very few customers: continue with a new epoch
        later = start + timedelta(days=60 * epoch)
        out += [dumps(e) for e in islice(
            journeys(seed + epoch, customers, later, events_per_customer_mean=mean),
            n_events - len(out))]
        epoch += 1
    return out


def malformed_cases() -> list[tuple[str, bytes]]:
    """(kind, message) pairs, each a message the worker must dead-letter, never crash on."""
    good = {
        "event_id": "e-bad-1", "occurred_at": "2026-03-02T09:30:00+09:00", "channel": "web",
        "type": "page_viewed", "identity": {"customer_id": "c-000001"},
        "properties": {"category": "phones"}, "context": {},
    }

    def variant(**changes: Any) -> bytes:
        event = dict(good)
        for key, value in changes.items():
            if value is None:
                event.pop(key, None)
            else:
                event[key] = value
        return dumps(event)

    return [
        ("invalid_json", b'{"event_id": "e-1", "channel": "web",'),
        ("invalid_utf8", b'{"event_id": "e-\xff\xfe", "channel": "web"}'),
        ("not_an_object", b'["web", "page_viewed"]'),
        ("empty", b""),
        ("unknown_channel", variant(channel="fax")),
        ("missing_identity", variant(identity=None)),
        ("empty_identity", variant(identity={})),
        ("wrong_type_channel", variant(channel=42)),
        ("wrong_type_properties", variant(properties=["phones"])),
        ("wrong_type_event_id", variant(event_id=1001)),
        ("raw_email_identity", variant(identity={"customer_id": "jane.doe@example.com"})),
        ("raw_email_property", variant(properties={"email": "jane.doe@example.com"})),
        ("timestamp_without_offset", variant(occurred_at="2026-03-02T09:30:00")),
        ("timestamp_garbage", variant(occurred_at="yesterday")),
        ("year_out_of_range", variant(occurred_at="1970-01-01T00:00:00Z")),
        ("year_far_future", variant(occurred_at="2999-03-02T09:30:00+09:00")),
        ("unknown_field", variant(customer="c-000001")),
        ("oversized", variant(properties={"blob": "x" * (1024 * 1024 + 10)})),
        ("deep_nesting", b'{"event_id": "e-1", "properties": {"x": ' + b"[" * 5000
         + b"]" * 5000 + b"}}"),
    ]


def malformed_samples() -> list[bytes]:
    """Bad messages of many kinds (invalid JSON/UTF-8, wrong types, PII, bad times, huge)."""
    return [raw for _, raw in malformed_cases()]
