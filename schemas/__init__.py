"""Touchflow wire contract v1: pydantic models, the fast event decoder and the orjson codec."""

from schemas.event import Event, EventError, decode_event, parse_event
from schemas.vocabulary import CHANNELS, IDENTIFIER_FIELDS

__all__ = [
    "CHANNELS",
    "IDENTIFIER_FIELDS",
    "Event",
    "EventError",
    "decode_event",
    "parse_event",
]
