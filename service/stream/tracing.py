"""W3C trace context (`traceparent`, `tracestate`) carried from an input record to the records
it causes (actions, audit records, forwards, dead letters), so a consumer's trace joins the
producer's. Touchflow records no spans of its own: it passes the headers on unchanged and
never invents one (docs/decisions.md)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TRACEPARENT", "TRACESTATE", "trace_headers", "valid_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_DASH = ord("-")
_HEX_AND_DASH = b"0123456789abcdef-"
_ZERO_TRACE = b"0" * 32
_ZERO_PARENT = b"0" * 16
_MAX_TRACESTATE = 512  # the W3C limit a propagator must carry at least


def valid_traceparent(value: bytes) -> bool:
    """True for a W3C `traceparent` this service can pass on: `version-traceid-parentid-flags`
    in lowercase hex, trace id and parent id not all zeros, version not `ff` (a later version
    may append fields after the flags, as the specification allows)."""
    size = len(value)
    if size < 55 or value[2] != _DASH or value[35] != _DASH or value[52] != _DASH:
        return False
    head = value[:55]
    # translate() deletes the allowed bytes in C: anything left is not lowercase hex.
    if head.translate(None, _HEX_AND_DASH) or head.count(b"-") != 3:
        return False
    version = value[:2]
    if version == b"ff" or (size > 55 and (version == b"00" or value[55] != _DASH)):
        return False
    return value[3:35] != _ZERO_TRACE and value[36:52] != _ZERO_PARENT


def trace_headers(headers: Sequence[tuple[str, bytes]] | None
                  ) -> list[tuple[str, bytes]] | None:
    """The trace context headers of an input record, to copy onto what it causes; None when it
    has no valid `traceparent` (then `tracestate` is dropped too, as the specification asks)."""
    if not headers:
        return None
    parent: bytes | None = None
    state: bytes | None = None
    for name, value in headers:
        if name == TRACEPARENT:
            parent = value
        elif name == TRACESTATE:
            state = value
    if parent is None or not valid_traceparent(parent):
        return None
    out = [(TRACEPARENT, parent)]
    if state and len(state) <= _MAX_TRACESTATE:
        out.append((TRACESTATE, state))
    return out
