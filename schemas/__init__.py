"""Touchflow wire contract v1: the vocabulary (every closed set of words, once), pydantic
models, the fast event decoder, the one JSON codec, PII detection, the JSON Schema and AsyncAPI
export.

The lowest room: imports nothing from `service` (tests/unit/test_layers.py keeps it so)."""

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
