"""Erasure tombstones through the per-input step (driven by replay's in-process driver): what an
erasure leaves (a tombstone per identifier, by digest), what it ignores (inputs dated at or
before it), and that no order of erasure, login, link and merge records and late or redelivered
events brings the erased customer's identifiers or history back."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import Event
from service.domain.erasure import Tombstones, key_digest
from service.domain.rules import Rulebook, load_rulebook
from service.domain.step import Control
from service.replay.replayer import Replayer
from tests.events import chained_identities, keyed_event

RULES = Path(__file__).resolve().parents[2] / "data" / "rulebook.yaml"
_RULEBOOK: Rulebook = load_rulebook(RULES)
PERSON = {"customer_id": "cust-erase-1", "loyalty_id": "loy-erase-1",
          "anonymous_id": "anon-erase-1"}


def _ms(minute: int) -> int:
    return 1_772_442_000_000 + minute * 60_000


def _tombstone(replayer: Replayer, key: str) -> int:
    held = [t for t in replayer.tombstones.values() if t.erased_ms(key) >= 0]
    return held[0].erased_ms(key) if held else -1


def test_an_event_dated_before_the_erasure_is_ignored_even_after_a_fresh_start() -> None:
    """A redelivered ping and a late new ping dated before the erasure change nothing and are
    audited `ignored`/`erased` naming the customer by digest only; a ping after the erasure
    starts a fresh profile (one point) that still ignores pre-erasure events."""
    replayer = Replayer(_RULEBOOK)
    for n in range(3):
        replayer.apply(keyed_event(f"p{n}", "ping", n, customer_id="c-1"))
    erased = replayer.apply(keyed_event("bye", "erasure_requested", 10, customer_id="c-1"))
    assert erased.effects is not None and erased.effects.notice is not None
    assert b"customer_id:c-1" not in replayer.profiles
    assert _tombstone(replayer, "customer_id:c-1") == _ms(10)
    for again in (keyed_event("p1", "ping", 1, customer_id="c-1"),
                  keyed_event("late", "ping", 9, customer_id="c-1")):
        outcome = replayer.apply(again)
        assert outcome.effects is not None and outcome.effects.ignored
        [record] = outcome.decisions
        assert (record["outcome"], record["suppressed_by"]) == ("ignored", "erased")
        assert record["customer_id"] == "erased:" + key_digest("customer_id:c-1")
        assert b"customer_id:c-1" not in replayer.profiles
    replayer.apply(keyed_event("new", "ping", 11, customer_id="c-1"))
    fresh = replayer.profiles[b"customer_id:c-1"]
    assert fresh.scores["pings"] == 1.0 and fresh.erased_ms == _ms(10)
    late = replayer.apply(keyed_event("later", "ping", 8, customer_id="c-1"))
    assert late.effects is not None and late.effects.ignored
    assert replayer.profiles[b"customer_id:c-1"].scores["pings"] == 1.0


def test_the_tombstone_covers_every_event_the_profile_applied() -> None:
    """An erasure stamped earlier than the newest event applied (producer clocks differ)
    tombstones up to that newest event: its redelivery cannot rebuild the profile."""
    replayer = Replayer(_RULEBOOK)
    replayer.apply(keyed_event("p-late-clock", "ping", 30, customer_id="c-2"))
    replayer.apply(keyed_event("bye", "erasure_requested", 20, customer_id="c-2"))
    assert _tombstone(replayer, "customer_id:c-2") == _ms(30)
    outcome = replayer.apply(keyed_event("p-late-clock", "ping", 30, customer_id="c-2"))
    assert outcome.effects is not None and outcome.effects.ignored


def _drain(replayer: Replayer) -> None:
    queue: deque[tuple[bytes, Event | Control]] = deque(replayer.undelivered)
    replayer.undelivered.clear()
    while queue:
        key, item = queue.popleft()
        if isinstance(item, Control):
            replayer.apply_control(key, item.kind, item.body)
        else:
            replayer.apply_at(key, item)
        queue.extend(replayer.undelivered)
        replayer.undelivered.clear()


def test_an_erasure_between_a_login_and_its_link_record_is_not_undone_by_the_merge() -> None:
    """Login (customer + cookie), then the erasure reaches the customer before the link record
    reaches the cookie: the merge that the link sends back is dropped (audited ignored), and
    the cookie's redirect is erased too: nothing of either identifier remains."""
    replayer = Replayer(_RULEBOOK, deliver=False)
    replayer.apply(keyed_event("a1", "ping", 1, anonymous_id="a-3"))
    replayer.apply(keyed_event("login", "identified", 2, customer_id="c-3", anonymous_id="a-3"))
    link = replayer.undelivered.pop()
    replayer.apply(keyed_event("bye", "erasure_requested", 3, customer_id="c-3"))
    replayer.undelivered.append(link)
    _drain(replayer)
    assert replayer.profiles == {}
    assert _tombstone(replayer, "customer_id:c-3") == _ms(3)
    assert _tombstone(replayer, "anonymous_id:a-3") == _ms(3)


def test_erasing_the_end_of_a_chain_erases_every_alias() -> None:
    """anonymous -> loyalty card -> customer: erasing the customer removes all three keys and
    leaves a tombstone for each."""
    replayer = Replayer(_RULEBOOK)
    replayer.apply(keyed_event("a1", "ping", 1, anonymous_id="a-4"))
    replayer.apply(keyed_event("l1", "identified", 2, loyalty_id="L-4", anonymous_id="a-4"))
    replayer.apply(keyed_event("c1", "identified", 3, customer_id="c-4", loyalty_id="L-4"))
    assert replayer.profiles[b"customer_id:c-4"].scores["pings"] == 1.0
    replayer.apply(keyed_event("bye", "erasure_requested", 4, customer_id="c-4"))
    assert replayer.profiles == {}
    for key in ("customer_id:c-4", "loyalty_id:L-4", "anonymous_id:a-4"):
        assert _tombstone(replayer, key) == _ms(4)


def test_a_late_login_of_an_erased_customer_erases_the_identifiers_it_names() -> None:
    """The login that would link a cookie to an already erased customer arrives late (dated
    before the erasure): it is ignored, and the cookie's own anonymous history is erased."""
    replayer = Replayer(_RULEBOOK)
    replayer.apply(keyed_event("a1", "ping", 1, anonymous_id="a-5"))
    replayer.apply(keyed_event("bye", "erasure_requested", 5, customer_id="c-5"))
    assert b"anonymous_id:a-5" in replayer.profiles
    replayer.apply(keyed_event("login", "identified", 2, customer_id="c-5", anonymous_id="a-5"))
    assert replayer.profiles == {}
    assert _tombstone(replayer, "anonymous_id:a-5") == _ms(5)


def test_tombstones_expire_after_max_lateness_plus_the_margin() -> None:
    """A tombstone is dropped (pending None, for the store and changelog) once the partition's
    event time passes the erasure by the horizon, and not a millisecond earlier."""
    tombs = Tombstones()
    tombs.mark("customer_id:c-6", 1_000)
    tombs.pending.clear()
    tombs.advance(1_000 + 500, 500)
    assert tombs.erased_ms("customer_id:c-6") == 1_000 and not tombs.pending
    tombs.advance(1_000 + 501, 500)
    assert tombs.erased_ms("customer_id:c-6") == -1
    assert tombs.pending == {key_digest("customer_id:c-6"): None}


_STORY, _BYE = chained_identities(PERSON)
_INPUTS = [keyed_event(eid, etype, minute, **who) for eid, etype, minute, who in _STORY]
_ERASURE = keyed_event(*_BYE[:3], **_BYE[3])


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(range(len(_INPUTS) + 1)),
       redeliver=st.lists(st.integers(0, len(_INPUTS) - 1), max_size=4),
       picks=st.lists(st.integers(0, 10), min_size=40, max_size=40),
       other=st.booleans())
def test_no_order_brings_an_erased_customer_back(order: list[int], redeliver: list[int],
                                                 picks: list[int], other: bool) -> None:
    """Whatever the order of the customer's events (pings under three identifiers, two logins
    chaining cookie -> loyalty card -> customer), the erasure, producer redeliveries, and the
    link/merge/erase records and forwards delivered in any order across keys (in order per
    key, as Kafka does): once everything is delivered, no profile holds any byte of the
    customer's identifiers, and each identifier has a tombstone. Another customer's profile
    is untouched."""
    replayer = Replayer(_RULEBOOK, deliver=False)
    if other:
        replayer.apply(keyed_event("o1", "ping", 1, customer_id="someone-else"))
    log = [([*_INPUTS, _ERASURE])[i] for i in order] + [_INPUTS[i] for i in redeliver]
    pending: dict[bytes, deque[Event | Control]] = {}
    turns = iter(picks)

    def collect() -> None:
        for key, item in replayer.undelivered:
            pending.setdefault(key, deque()).append(item)
        replayer.undelivered.clear()

    def deliver_one(pick: int) -> None:
        keys = sorted(key for key, queue in pending.items() if queue)
        key = keys[pick % len(keys)]
        item = pending[key].popleft()
        if isinstance(item, Control):
            replayer.apply_control(key, item.kind, item.body)
        else:
            replayer.apply_at(key, item)
        collect()

    for event in log:
        replayer.apply(event)
        collect()
        for _ in range(next(turns, 0) % 3):
            if any(pending.values()):
                deliver_one(next(turns, 0))
    for _ in range(1000):
        if not any(pending.values()):
            break
        deliver_one(next(turns, 0))
    assert not any(pending.values())
    stored = b"".join(key + profile.to_bytes() for key, profile in replayer.profiles.items())
    for value in PERSON.values():
        assert value.encode() not in stored
    for name, value in PERSON.items():
        assert _tombstone(replayer, f"{name}:{value}") >= _ms(20)
    if other:
        assert replayer.profiles[b"customer_id:someone-else"].scores["pings"] == 1.0




def test_a_merge_reaching_an_alias_that_was_merged_meanwhile_goes_on_to_its_profile() -> None:
    """cookie -> card and card -> customer logins whose link records cross: the cookie's merge
    reaches the card after the card became a redirect; it is passed on to the customer, so the
    cookie's history counts there and the customer's profile lists the cookie (which its
    erasure then follows)."""
    replayer = Replayer(_RULEBOOK, deliver=False)
    replayer.apply(keyed_event("a1", "ping", 1, anonymous_id="a-7"))
    replayer.apply(keyed_event("l1", "identified", 2, loyalty_id="L-7", anonymous_id="a-7"))
    cookie_link = replayer.undelivered.pop()
    replayer.apply(keyed_event("c1", "identified", 3, customer_id="c-7", loyalty_id="L-7"))
    _drain(replayer)  # the card is merged into the customer first
    replayer.undelivered.append(cookie_link)
    _drain(replayer)
    customer = replayer.profiles[b"customer_id:c-7"]
    assert customer.scores["pings"] == 1.0
    assert sorted(customer.links) == ["anonymous_id:a-7", "loyalty_id:L-7"]
