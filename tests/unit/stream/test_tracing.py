"""W3C trace context: which `traceparent` headers the worker passes on (stream/tracing.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.stream.tracing import trace_headers, valid_traceparent

GOOD = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_valid_traceparent_is_passed_on_with_its_state() -> None:
    """A valid traceparent and its tracestate are copied as they came; other headers are not."""
    headers = [("x-other", b"1"), ("traceparent", GOOD), ("tracestate", b"vendor=abc")]
    assert trace_headers(headers) == [("traceparent", GOOD), ("tracestate", b"vendor=abc")]


def test_no_or_invalid_traceparent_gives_nothing() -> None:
    """No header, an all-zero trace id or parent id, version ff, uppercase hex, a short value
    or a tracestate without a traceparent: nothing is passed on (no trace is invented)."""
    assert trace_headers(None) is None
    assert trace_headers([]) is None
    assert trace_headers([("tracestate", b"a=b")]) is None
    for bad in (
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        GOOD.upper(),
        GOOD[:-1],
        GOOD + b"-extra",  # version 00 has exactly four fields
        b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ):
        assert not valid_traceparent(bad), bad
        assert trace_headers([("traceparent", bad), ("tracestate", b"a=b")]) is None


def test_future_version_may_append_fields() -> None:
    """A later version with fields after the flags is accepted, as the specification asks."""
    later = b"01" + GOOD[2:] + b"-what-comes-next"
    assert valid_traceparent(later)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8),
       st.integers(0, 255))
def test_every_well_formed_version_00_value_is_valid(trace: bytes, parent: bytes,
                                                     flags: int) -> None:
    """Any version-00 value with nonzero ids is accepted; zero ids are refused."""
    value = f"00-{trace.hex()}-{parent.hex()}-{flags:02x}".encode()
    expected = any(trace) and any(parent)
    assert valid_traceparent(value) == bool(expected)
