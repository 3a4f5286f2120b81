"""The JSON codec (schemas/codec.py): its encoders agree byte for byte where their inputs
overlap, and each keeps its own promise (non-string keys, pretty files, JSONL lines)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import JSONDecodeError, dumps, dumps_line, dumps_pretty, dumps_str_keys, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_encoders_agree_on_string_keyed_values(value: Any) -> None:
    """For JSON values (string keys only) the fast encoder gives the same bytes as `dumps`,
    a line is those bytes and a newline, and everything decodes back to the value."""
    assert dumps_str_keys(value) == dumps(value)
    assert dumps_line(value) == dumps(value) + b"\n"
    assert loads(dumps(value)) == value
    assert loads(dumps_pretty(value)) == value
    assert dumps_pretty(value).endswith(b"\n")


def test_non_string_keys_only_through_dumps() -> None:
    """`dumps` writes integer keys as strings; `dumps_str_keys` refuses them (TypeError)."""
    assert dumps({1: "a"}) == b'{"1":"a"}'
    with pytest.raises(TypeError):
        dumps_str_keys({1: "a"})


def test_pretty_sorts_keys_unless_asked_not_to() -> None:
    """Schema files are sorted for stable diffs; a profile export keeps construction order."""
    assert dumps_pretty({"b": 1, "a": 2}) == b'{\n  "a": 2,\n  "b": 1\n}\n'
    assert dumps_pretty({"b": 1, "a": 2}, sort_keys=False) == b'{\n  "b": 1,\n  "a": 2\n}\n'


def test_bad_json_raises_the_codec_error() -> None:
    """`loads` of malformed bytes raises the codec's JSONDecodeError (a ValueError)."""
    with pytest.raises(JSONDecodeError):
        loads(b"{")
    assert issubclass(JSONDecodeError, ValueError)
