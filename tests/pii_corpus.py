"""A hostile corpus of personal data in event payloads, shared by the unit, component and
log tests: where each item hides an e-mail address or a phone number, and phone-like or
e-mail-like values that are not personal data and must pass."""

from __future__ import annotations

from typing import Any

LONG = "x" * 400_000


def _full_width(text: str) -> str:
    """`text` with its ASCII digits and signs in their full-width forms (U+FF01...)."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


#: (name, parts of the event (properties, context, or a top-level field), the sentence
#: expected in the rejection)
HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("e-mail in a nested list", {"properties": {"items": [
        {"sku": "SKU-1"}, {"sku": "SKU-2"}, {"contact": "jane.doe@example.com"}]}},
     "properties.items[2].contact holds a raw e-mail address"),
    ("e-mail as a key", {"properties": {"contacts": {"jane.doe@example.com": "primary"}}},
     "properties.contacts has a key that holds a raw e-mail address"),
    ("e-mail with a full-width at", {"context": {"note": "write to jane.doe\uff20example.com"}},
     "context.note holds a raw e-mail address"),
    ("e-mail with a small at", {"context": {"note": "jane.doe\ufe6bexample.com"}},
     "context.note holds a raw e-mail address"),
    ("e-mail percent-encoded in a URL query", {"context": {
        "page_url": "https://shop.example/p/tv?ref=mail&email=jane.doe%40example.com"}},
     "context.page_url holds a raw e-mail address"),
    ("e-mail in a URL query", {"context": {
        "page_url": "https://shop.example/login?next=/cart&user=jane.doe@example.com"}},
     "context.page_url holds a raw e-mail address"),
    ("e-mail at the end of a very long string", {"properties": {
        "blob": LONG + " jane.doe@example.com"}},
     "properties.blob holds a raw e-mail address"),
    ("e-mail deep in nested lists", {"properties": {"deep": [[[[[[["jane.doe@example.com"]]]]]]]}},
     "properties.deep[0][0][0][0][0][0][0] holds a raw e-mail address"),
    ("e-mail under an odd key", {"properties": {"who is it?": "jane.doe@example.com"}},
     'properties["who is it?"] holds a raw e-mail address'),
    ("e-mail as an unknown top-level field", {"jane.doe@example.com": "x"},
     "the event has a key that holds a raw e-mail address"),
    ("e-mail as an identity field name", {"identity": {"jane.doe@example.com": "c-1"}},
     "identity has a key that holds a raw e-mail address"),
    ("E.164 phone nested", {"properties": {"delivery": {"recipients": [
        {"tel": "+44 20 7946 0958"}]}}},
     "properties.delivery.recipients[0].tel holds a raw phone number"),
    ("national phone in a sentence", {"properties": {
        "note": "call me at (415) 555-2671 tomorrow"}},
     "properties.note holds a raw phone number"),
    ("phone in full-width digits", {"context": {"callback": _full_width("+49 151 2345 6789")}},
     "context.callback holds a raw phone number"),
    ("phone as a key", {"properties": {"numbers": {"+14155552671": True}}},
     "properties.numbers has a key that holds a raw phone number"),
    ("phone with dots", {"properties": {"mobile_fr": "06.12.34.56.78"}},
     "properties.mobile_fr holds a raw phone number"),
    ("phone under an innocent name", {"properties": {"ref": "0151-2345 6789"}},
     "properties.ref holds a raw phone number"),
    ("phone at the end of a very long string", {"context": {
        "blob": LONG + " +33 6 12 34 56 78"}},
     "context.blob holds a raw phone number"),
    ("phone percent-encoded in a URL query", {"context": {
        "page_url": "https://shop.example/?tel=%2B14155552671"}},
     "context.page_url holds a raw phone number"),
]

#: Values that look like phone numbers or e-mail addresses and are neither: they must pass.
HARMLESS: dict[str, Any] = {
    "sku": "SKU-415555267",
    "sku_dashed": "ABC-1234-5678-90",
    "order_number": "1234567890123",
    "order_hash": "#123-456-789",
    "order_ref": "ORD-2026-000123456",
    "iso_time": "2026-03-01T16:00:00Z",
    "iso_time_space": "2026-03-01 16:00:00+09:00",
    "date_eu": "01.03.2026 16:00",
    "date_us": "03/01/2026",
    "price": "1 299 999.00",
    "price_plain": "1299999.99",
    "price_small": "12.99",
    "ip": "192.168.100.200",
    "uuid": "550e8400-e29b-41d4-a716-446655440000",
    "epoch_ms": "1767225600000",
    "version": "5.12.0",
    "url_path": "https://shop.example/p/123456789?page=2",
    "handle": "@jane_doe",
    "local_only": "user@localhost",
    "session": "s-000451-0001",
    "numbers": [1767225600000, 12.99, 415_555_2671],
    "long": "x" * 150_000,
    "long_digits": "1" * 150_000,
}
