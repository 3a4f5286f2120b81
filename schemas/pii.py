"""Personal data in event payloads: where it is (detection) and how a dead letter hides it.

Detection looks at every string of `properties` and `context`, at any depth, dict keys
included, for two kinds of personal data, whatever the field is called:

* an e-mail address: a character that may end a local part, "@", then a domain of one to
  eight dot-separated labels and an alphabetic top-level label (`jane@example.com`, also
  inside a sentence or a URL query, also percent-encoded `jane%40example.com`);
* a phone number: 9 to 15 digits (E.164's maximum), written with an optional leading "+",
  an optional parenthesised area code, and spaces, dashes, dots or parentheses between digit
  groups (`+49 151 2345 6789`, `(415) 555-2671`, `06.12.34.56.78`, `+14155552671`).
  Not a phone, to keep order numbers, SKUs, timestamps and prices flowing: a bare run of
  digits without "+" (order numbers, epoch times); a number glued to a letter, "_", "-",
  "/", "." or "#" before it (`SKU-415555267`, `/p/123456789`, `#123-456-789`); a date
  (`2026-03-01 16:00`, `01.03.2026 ...`); a price (one "." and two final decimals:
  `1 299 999.00`); an IPv4 address. Fewer than 9 digits is never a phone, which misses the
  7- and 8-digit national numbers of a few countries unless written with "+".

Every string is NFKC-normalised first when it is not ASCII, so full-width and small "@"
(U+FF20, U+FE6B) and full-width or styled digits count as their ASCII forms; any Unicode
decimal digit counts as a digit. The patterns have bounded repetitions and no nested
unbounded quantifiers, and the e-mail pattern is anchored at its "@", so a string costs
time linear in its length (no catastrophic backtracking on a 1 MiB string of digits or "@").

The fast path of `decode_event`: when the raw bytes hold no "@", no backslash (no \\u
escape), no "%" (no percent-encoding) and only ASCII (`looks_plain`, memchr-fast), no string
can hold an e-mail address, and `may_hold_phone` only looks for a phone-shaped run in the
strings of 9 characters or more (shorter ones cannot hold 9 digits), without building paths;
only when it finds one does `find_personal` walk again, to say where (one regex over the
whole raw event cost more than the decode; docs/decisions.md, "Personal-data detection").

Redaction (`redact`) replaces each string (value or key) that holds personal data, whole,
by `[redacted:<kind>:<16 hex>]`, the hex being a salted digest (HMAC-SHA256) of the
original: equal values stay recognisable to someone holding the salt, the value itself is
gone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from typing import Any
from urllib.parse import unquote

from schemas.codec import dumps_str_keys

__all__ = [
    "MAX_PHONE_DIGITS",
    "MIN_PHONE_DIGITS",
    "Finding",
    "digest",
    "find_personal",
    "looks_plain",
    "marker",
    "may_hold_phone",
    "redact",
    "scan_text",
]

MIN_PHONE_DIGITS = 9
MAX_PHONE_DIGITS = 15
_LABELS = {"email": "a raw e-mail address", "phone": "a raw phone number"}

# "@" preceded by a character a local part may end with; then the domain.
_EMAIL = re.compile(r"@(?<=[^\s@<>()\[\]\\,;:\"'/?&=]@)(?:[\w-]{1,63}\.){1,8}[^\W\d_]{2,24}")
# A phone-shaped run: 8 to 21 digits with at most three separators between two digits,
# never glued to a word character or an id-like prefix ("+" and "(" before it are fine).
# It starts with a digit so that the engine skips to digits instead of trying every position.
_PHONE = re.compile(r"\d(?<![\w#./\-]\d)(?:[ \-.()]{0,3}\d){7,20}(?![\w/\-]|\.\d)")
# `may_hold_phone`: bytes as classes (digit "9", a character that glues a digit to an id
# "x", any other " "), and the digits that must follow a start.
_CLASSES = bytes(
    ord("9") if chr(byte).isdigit() and byte < 128
    else ord("x") if (chr(byte).isalpha() and byte < 128) or chr(byte) in "_#./-"
    else ord(" ")
    for byte in range(256))
_PHONE_RUN = re.compile(rb"[0-9](?:[ \-.()]{0,3}[0-9]){8}")
_SEPARATORS = re.compile(r"[ \-.()]+")
_YEAR = range(1900, 2100)


def looks_plain(raw: bytes) -> bool:
    """True when no string of this JSON text can hold an e-mail address or a non-ASCII or
    percent-encoded phone number (then `may_hold_phone` is the whole check)."""
    return 64 not in raw and 92 not in raw and 37 not in raw and raw.isascii()


def may_hold_phone(*values: Any) -> bool:
    """Whether some string or key of `values` may hold a phone number, for the values of a
    `looks_plain` event. In their compact JSON, every run the phone pattern accepts starts
    with a digit after a character other than a word character or `#./-` (a string's
    opening quote included), then has eight more digits at most three separators apart.
    Such starts are found with one `translate` and `find` (C speed, no regex over the whole
    text), and only they are tried (a JSON number is
    one, and fails unless it has 9 digits or more; the walk then decides)."""
    data = dumps_str_keys(values)
    classes = data.translate(_CLASSES)
    start = classes.find(b" 9")
    while start >= 0:
        if _PHONE_RUN.match(data, start + 1) is not None:
            return True
        start = classes.find(b" 9", start + 2)
    return False


def scan_text(text: str) -> str | None:
    """"email" or "phone" if `text` holds one (see the module docstring), else None."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if "%" in text:
        text = unquote(text)
    if "@" in text and _EMAIL.search(text) is not None:
        return "email"
    if len(text) >= MIN_PHONE_DIGITS:
        for match in _PHONE.finditer(text):
            start = match.start()
            plus = text[start - 1:start] == "+" or text[start - 2:start] == "+ "
            if _is_phone(match.group(), plus):
                return "phone"
    return None


def _is_phone(candidate: str, plus: bool) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS:
        return False
    body = candidate
    groups = [g for g in _SEPARATORS.split(body) if g]
    separators = {ch for ch in body if not ch.isdigit()}
    if not plus and not separators:
        return False  # a bare number: an order number, an epoch time
    if "." in separators:
        dots = body.count(".")
        cents = body.rsplit(".", 1)[1]
        if dots == 1 and len(cents) == 2 and cents.isdigit():
            return False  # a price: one decimal point, two decimals
        if separators == {"."} and len(groups) == 4 and all(len(g) <= 3 for g in groups):
            return False  # an IPv4 address
    return plus or not _is_date(groups)


def _is_date(groups: list[str]) -> bool:
    """A date first: year-month-day or day-month-year (time or more after it)."""
    if len(groups) < 3 or not all(g.isdigit() for g in groups[:3]):
        return False
    a, b, c = (int(g) for g in groups[:3])
    if len(groups[0]) == 4:
        return a in _YEAR and 1 <= b <= 12 and 1 <= c <= 31
    if len(groups[2]) == 4:
        return c in _YEAR and 1 <= min(a, b) <= 12 and max(a, b) <= 31  # d-m-y or m-d-y
    return False


class Finding:
    """Personal data found: its kind ("email"/"phone"), where, and whether it is a dict key."""

    __slots__ = ("in_key", "kind", "path")

    def __init__(self, kind: str, path: str, in_key: bool) -> None:
        self.kind, self.path, self.in_key = kind, path, in_key

    def sentence(self) -> str:
        """What was found where, naming the field path only, never the value."""
        if self.in_key:
            return f"{self.path} has a key that holds {_LABELS[self.kind]}"
        return f"{self.path} holds {_LABELS[self.kind]}"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _step(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` for a key that is not a plain name (cut at 64 chars)."""
    if _NAME.fullmatch(key):
        return f"{path}.{key}"
    shown = key[:64].replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{shown}{"..." if len(key) > 64 else ""}"]'


def find_personal(value: Any, where: str) -> Finding | None:
    """The first string (value or key, depth first) of `value` that holds personal data.

    Iterative (orjson accepts nesting deeper than Python's recursion limit)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            kind = scan_text(node)
            if kind is not None:
                return Finding(kind, path, False)
        elif isinstance(node, dict):
            children = []
            for key, item in node.items():
                kind = scan_text(key)
                if kind is not None:
                    return Finding(kind, path, True)
                children.append((item, _step(path, key)))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{index}]")
                         for index, item in reversed(list(enumerate(node))))
    return None


def digest(salt: bytes, value: str | bytes) -> str:
    """16 hex characters of HMAC-SHA256(salt, value): a pseudonym of `value`."""
    data = value.encode() if isinstance(value, str) else value
    return hmac.new(salt, data, hashlib.sha256).hexdigest()[:16]


def marker(kind: str, salt: bytes, value: str | bytes) -> str:
    """What replaces a personal value: `[redacted:<kind>:<digest>]`."""
    return f"[redacted:{kind}:{digest(salt, value)}]"


def redact(value: Any, salt: bytes) -> tuple[Any, int]:
    """A copy of a JSON value with every string or key holding personal data replaced by its
    marker, and how many were replaced. Iterative, like `find_personal`."""
    count = 0

    def clean(text: str) -> str:
        nonlocal count
        kind = scan_text(text)
        if kind is None:
            return text
        count += 1
        return marker(kind, salt, text)

    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        node, parent, slot = stack.pop()
        if isinstance(node, str):
            parent[slot] = clean(node)
        elif isinstance(node, dict):
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, item in node.items():
                new_key = clean(key)
                copy[new_key] = None
                stack.append((item, copy, new_key))
        elif isinstance(node, list):
            items: list[Any] = [None] * len(node)
            parent[slot] = items
            stack.extend((item, items, index) for index, item in enumerate(node))
        else:
            parent[slot] = node
    return root[0], count
