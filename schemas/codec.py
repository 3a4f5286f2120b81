"""The one module that owns JSON: orjson in, orjson out, with one set of options everywhere.

Output is deterministic: the same Python value always gives the same bytes (dict order is the
construction order, which the decision core keeps deterministic), so replay output is
byte-identical run after run.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "dumps_line", "loads"]

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Encode one value as compact UTF-8 JSON bytes."""
    return orjson.dumps(value, option=_OPTIONS)


def dumps_line(value: Any) -> bytes:
    """Encode one value as a JSONL line (compact JSON plus a newline)."""
    return orjson.dumps(value, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON bytes or text."""
    return orjson.loads(data)
