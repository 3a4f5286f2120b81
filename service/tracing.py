"""W3C trace context (`traceparent`, `tracestate`) carried from an input record to the records
it causes (actions, audit records, forwards, dead letters), so a consumer's trace joins the
producer's. Touchflow records no spans of its own: it passes the headers on unchanged and
never invents one (docs/decisions.md)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TRACEPARENT", "TRACESTATE", "trace_headers", "valid_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_HEX = frozenset(b"0123456789abcdef")
_MAX_TRACESTATE = 512  # the W3C limit a propagator must carry at least


def valid_traceparent(value: bytes) -> bool:
    """True for a W3C `traceparent` this service can pass on: `version-traceid-parentid-flags`
    in lowercase hex, trace id and parent id not all zeros, version not `ff` (a later version
    may append fields after the flags, as the specification allows)."""
    if len(value) < 55 or (len(value) > 55 and value[55:56] != b"-"):
        return False
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return False
    if not all(set(part) <= _HEX for part in (version, trace_id, parent_id, flags)):
        return False
    if version == b"ff" or (version == b"00" and len(value) != 55):
        return False
    return trace_id != b"0" * 32 and parent_id != b"0" * 16


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
