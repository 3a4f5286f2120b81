"""The W3C trace context Touchflow copies from an event onto its action records."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["trace_id", "traceparent"]


def traceparent(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The `traceparent` header of a Kafka record (aiokafka's `record.headers`), or None."""
    for name, value in headers or ():
        if name == "traceparent":
            return value.decode("ascii", "replace")
    return None


def trace_id(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The 32-hex-digit trace id of a record's `traceparent`, or None when it has none."""
    parent = traceparent(headers)
    if parent is None or len(parent) < 55 or parent[2] != "-":
        return None
    return parent[3:35]
