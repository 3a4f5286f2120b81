"""Personal data in event payloads (schemas/pii.py through schemas/event.py): found at any
depth, in keys too, by pattern whatever the field is called, named by its path and never
echoed; phone-like ids, timestamps and prices pass."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import EventError, decode_event
from schemas.pii import find_personal, looks_plain, may_hold_phone, scan_text
from tests.events import event_dict
from tests.pii_corpus import HARMLESS, HOSTILE

BASE = event_dict(event_id="e-1", at="2026-03-02T09:30:00+09:00", customer="c-42")


def _event(**parts: Any) -> bytes:
    """The base event with some top-level fields replaced (hostile sections)."""
    return orjson.dumps({**BASE, **parts})


def _values(node: Any) -> list[str]:
    """Every string and key of a JSON value."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [*node, *(v for item in node.values() for v in _values(item))]
    if isinstance(node, list):
        return [v for item in node for v in _values(item)]
    return []


@pytest.mark.parametrize(("name", "parts", "sentence"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_corpus_is_rejected_naming_the_path_only(
        name: str, parts: dict[str, Any], sentence: str) -> None:
    """Each hidden e-mail address or phone number (nested lists, keys, full-width "@" and
    digits, percent-encoded, at the end of 400 KB strings) is rejected as personal_data
    with a message naming its field path, and no personal value appears in the message."""
    with pytest.raises(EventError) as info:
        decode_event(_event(**parts))
    assert info.value.reason == "personal_data"
    assert str(info.value) == sentence
    for value in _values(parts):
        if scan_text(value) is not None:
            assert value[-30:] not in str(info.value)


def test_phone_like_and_email_like_values_that_are_not_personal_data_pass() -> None:
    """SKUs, order numbers, ISO timestamps, dates, prices, an IP address, a UUID, epoch
    times, a version, a URL with a numeric path, a social handle, `user@localhost`, long
    strings of letters and of digits: accepted, in properties and in context alike."""
    event = decode_event(_event(properties=HARMLESS, context=HARMLESS))
    assert event.properties == HARMLESS
    for name, value in HARMLESS.items():
        if isinstance(value, str):
            assert scan_text(value) is None, name


def test_adversarial_long_strings_take_linear_time() -> None:
    """Strings built to make a naive e-mail or phone pattern backtrack (a megabyte of "@",
    of "a@", of digits, of "1 ", of "(", of dotted labels with no top-level domain) are
    scanned in linear time: this test finishes (within CI's timeout) and finds nothing
    where there is nothing."""
    size = 500_000
    for text in ("@" * size, "a@" * size, "1" * 2 * size, "1 " * size, "(" * size,
                 "@" + "a." * size, "+1" * size, "1-" * size):
        assert scan_text(text) in (None, "phone")
    assert scan_text("1 " * size) == "phone"  # groups of one digit: a phone-shaped run
    assert scan_text("a" * size + "@example.com") == "email"


def test_pii_detection_ignores_numbers_and_booleans() -> None:
    """Only strings and keys are personal data candidates: a JSON number shaped like a
    phone number (an order id) is not one."""
    assert find_personal({"order": 4155552671, "ok": True, "none": None}, "properties") is None


# -- properties ---------------------------------------------------------------------------

_KEYS = st.from_regex(r"[a-z][a-z_]{0,9}", fullmatch=True)
_SKUS = st.from_regex(r"[A-Z]{2,4}-[0-9]{3,12}(-[0-9]{2,6})?", fullmatch=True)
_ORDERS = st.from_regex(r"[0-9]{5,18}", fullmatch=True)
_PRICES = st.builds(lambda units, cents: f"{units}.{cents:02d}",
                    st.integers(0, 10**12), st.integers(0, 99))
_TIMES = st.datetimes(min_value=__import__("datetime").datetime(2000, 1, 1),
                      max_value=__import__("datetime").datetime(2099, 12, 31)).map(
    lambda moment: moment.isoformat(timespec="milliseconds") + "Z")
_WORDS = st.from_regex(r"[a-z]{1,12}( [a-z]{1,12}){0,4}", fullmatch=True)
_HARMLESS = st.one_of(_SKUS, _ORDERS, _PRICES, _TIMES, _WORDS, st.integers(-10**15, 10**15),
                      st.booleans())
_EMAILS = st.builds(
    lambda local, domain, tld, at: f"{local}{at}{domain}.{tld}",
    st.from_regex(r"[a-z0-9][a-z0-9._+]{0,15}", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True), st.sampled_from(["@", "\uff20", "\ufe6b"]))
_PHONES = st.one_of(
    st.builds(lambda cc, rest: f"+{cc} {rest[:3]} {rest[3:7]} {rest[7:]}",
              st.integers(1, 999), st.from_regex(r"[0-9]{8,11}", fullmatch=True)),
    st.builds(lambda a, b, c: f"({a}) {b}-{c}", st.from_regex(r"[2-9][0-9]{2}", fullmatch=True),
              st.from_regex(r"[0-9]{3}", fullmatch=True),
              st.from_regex(r"[0-9]{4}", fullmatch=True)),
    st.builds(lambda digits: "+" + digits, st.from_regex(r"[1-9][0-9]{8,13}", fullmatch=True)),
)
_TREES = st.recursive(
    _HARMLESS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12)


def _plant(tree: Any, where: list[int], value: str, path: str,
           as_key: bool) -> tuple[Any, str]:
    """`tree` with `value` planted (as a value, or as a dict key) at a point chosen by
    `where`, and that point's path: the value's own path, or the path of the dict whose
    key it is."""
    choice = where.pop() if where else 0
    if isinstance(tree, dict) and tree and choice % 3:
        keys = sorted(tree)
        key = keys[choice % len(keys)]
        inner, inner_path = _plant(tree[key], where, value, f"{path}.{key}", as_key)
        return {**tree, key: inner}, inner_path
    if isinstance(tree, list) and tree and choice % 3:
        index = choice % len(tree)
        inner, inner_path = _plant(tree[index], where, value, f"{path}[{index}]", as_key)
        return [*tree[:index], inner, *tree[index + 1:]], inner_path
    if as_key:
        if isinstance(tree, dict):
            return {**tree, value: 1}, path
        if isinstance(tree, list):
            return [*tree, {value: 1}], f"{path}[{len(tree)}]"
        return {value: tree}, path
    if isinstance(tree, dict):
        return {**tree, "planted_here": value}, f"{path}.planted_here"
    if isinstance(tree, list):
        return [*tree, value], f"{path}[{len(tree)}]"
    return {"planted_here": value}, f"{path}.planted_here"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(_KEYS, _TREES, max_size=4), where=st.lists(st.integers(0, 99)),
       planted=st.one_of(_EMAILS.map(lambda v: ("email", v)), _PHONES.map(lambda v: ("phone", v))),
       section=st.sampled_from(["properties", "context"]),
       sentence=st.booleans(), as_key=st.booleans())
def test_planted_personal_data_is_always_found_at_its_path(
        tree: dict[str, Any], where: list[int], planted: tuple[str, str], section: str,
        sentence: bool, as_key: bool) -> None:
    """An e-mail address (any of three "@" forms) or a phone number (E.164 with spaces,
    US national, bare E.164), alone or inside a sentence, planted as a value or as a key
    anywhere in a random nested payload of SKUs, order numbers, prices, timestamps and
    words, is rejected with exactly its path, and the message never echoes it."""
    kind, value = planted
    text = f"contact me: {value} please" if sentence else value
    payload, path = _plant(tree, list(where), text, section, as_key)
    with pytest.raises(EventError) as info:
        decode_event(_event(**{section: payload}))
    label = "e-mail address" if kind == "email" else "phone number"
    holds = "has a key that holds" if as_key else "holds"
    assert str(info.value) == f"{path} {holds} a raw {label}"
    assert value not in str(info.value)


@settings(max_examples=150, deadline=None)
@given(properties=st.dictionaries(_KEYS, _TREES, max_size=5),
       context=st.dictionaries(_KEYS, _TREES, max_size=5))
def test_generated_ids_timestamps_and_prices_are_never_flagged(
        properties: dict[str, Any], context: dict[str, Any]) -> None:
    """No false positive: random nested payloads of SKUs, order numbers (bare digits up to
    18), prices with cents up to 10^12, ISO timestamps and words decode as they are."""
    event = decode_event(_event(properties=properties, context=context))
    assert event.properties == properties and event.context == context


_ASCII_TEXT = st.text(st.sampled_from("0123456789 -.()+#/_abcxyz:,\"'"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(tree=st.recursive(
    st.one_of(_ASCII_TEXT, st.integers(-10**15, 10**15), _PHONES),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_ASCII_TEXT, inner, max_size=3)),
    max_leaves=8))
def test_fast_path_never_misses_a_phone_the_walk_finds(tree: Any) -> None:
    """The fast path's quick look (`may_hold_phone` over the compact JSON of a plain ASCII
    event) answers yes whenever the full walk finds a phone number, on strings made of
    digits, separators and the characters that glue or unglue a number."""
    payload = {"p": tree}
    if looks_plain(orjson.dumps(payload)) and find_personal(payload, "properties"):
        assert may_hold_phone(payload)
