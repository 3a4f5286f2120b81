"""The one module that owns JSON: orjson in, orjson out, with one set of options everywhere.

Output is deterministic: the same Python value always gives the same bytes (dict order is the
construction order, which the decision core keeps deterministic), so replay output is
byte-identical run after run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "dumps_line", "dumps_pretty", "dumps_str_keys", "loads"]

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_NON_STR_KEYS

#: Decode JSON bytes or text. orjson's own function, not a wrapper: the event decoder calls
#: it once per event.
loads: Callable[[bytes | bytearray | memoryview | str], Any] = orjson.loads

#: Compact JSON of a value whose keys are all strings (a decoded event's parts, a stored
#: profile): orjson's own function, about a quarter cheaper than `dumps` on a profile (no
#: non-string-key option); a non-string key raises TypeError. Same bytes as `dumps` otherwise.
dumps_str_keys: Callable[[Any], bytes] = orjson.dumps


def dumps(value: Any) -> bytes:
    """Encode one value as compact UTF-8 JSON bytes."""
    return orjson.dumps(value, option=_OPTIONS)


def dumps_line(value: Any) -> bytes:
    """Encode one value as a JSONL line (compact JSON plus a newline)."""
    return orjson.dumps(value, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def dumps_pretty(value: Any, *, sort_keys: bool = True) -> bytes:
    """Encode one value for people and editors: indented by two spaces, keys sorted (unless
    `sort_keys` is false: construction order), ending in a newline."""
    option = _OPTIONS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(value, option=option | orjson.OPT_SORT_KEYS if sort_keys else option)
