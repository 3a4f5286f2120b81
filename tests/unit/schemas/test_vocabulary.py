"""The closed sets of schemas/vocabulary.py say the same wherever they surface: the exported
wire schemas, the rulebook's schema, the AsyncAPI document, the consumer kit, the event
decoder and the rulebook compiler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import orjson
import pytest
from pydantic import ValidationError

import schemas.event as event_module
import touchflow_consumer.action as consumer_kit
from schemas.asyncapi import asyncapi_document
from schemas.event import EventError, parse_event
from schemas.export import render_schemas
from schemas.models import DecisionRecord, Identity, SkippedChannel, TouchpointEvent
from schemas.vocabulary import (
    CHANNEL_SKIP_REASONS,
    CHANNELS,
    CORE_EVENT_TYPES,
    HASHED_IDENTIFIERS,
    IDENTIFIER_FIELDS,
    IDENTITY_CONTROL_KINDS,
    LEGAL_BASES,
    RECORD_OUTCOMES,
    RESPONSES,
    SUCCESS_RESPONSES,
    SUPPRESSION_REASONS,
    Arm,
    Channel,
    LegalBasis,
    RecordKind,
    RecordOutcome,
)
from service.domain import RulebookError, parse_rulebook
from service.domain.model import ActionSpec
from service.domain.rulebook_schema import rulebook_schema

#: wire field name -> the words its enum must list, in this order
WIRE_ENUMS: dict[str, tuple[str, ...]] = {
    "channel": get_args(Channel),
    "legal_basis": get_args(LegalBasis),
    "kind": get_args(RecordKind),
    "outcome": get_args(RecordOutcome),
    "arm": get_args(Arm),
}


def _enums(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Any]]]:
    """Every `enum` in a JSON Schema document, with the keys leading to it."""
    if isinstance(node, dict):
        if "enum" in node:
            yield path, node["enum"]
        for key, value in node.items():
            yield from _enums(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _enums(value, (*path, str(index)))


def _field(path: tuple[str, ...]) -> str:
    """The property an enum constrains: the key after the last `properties`."""
    index = len(path) - 1 - path[::-1].index("properties")
    return path[index + 1]


def test_every_enum_of_the_wire_schemas_is_its_vocabulary_set() -> None:
    """Each enum in the exported wire schemas is the vocabulary set of its field, word for
    word and in order; a new enum field must be added here (and to the vocabulary)."""
    seen: set[str] = set()
    for name, content in render_schemas().items():
        for path, enum in _enums(orjson.loads(content)):
            field = _field(path)
            assert field in WIRE_ENUMS, f"{name}: {'/'.join(path)} is not in the vocabulary"
            assert tuple(enum) == WIRE_ENUMS[field], f"{name}: {'/'.join(path)}"
            seen.add(field)
    assert seen == set(WIRE_ENUMS)


def test_rulebook_schema_and_asyncapi_list_the_vocabulary_channels_and_bases() -> None:
    """Any enum of the rulebook's schema or the AsyncAPI document that names a channel, a
    legal basis or an identity control kind lists exactly that set."""
    sets = [set(CHANNELS), set(LEGAL_BASES), set(IDENTITY_CONTROL_KINDS)]
    found = 0
    for document in (rulebook_schema(), asyncapi_document()):
        for path, enum in _enums(document):
            for words in sets:
                if words & set(enum):
                    assert set(enum) == words, "/".join(path)
                    found += 1
    assert found >= 8  # 5 channel places and the basis in the rulebook; 2 in AsyncAPI


def test_identity_model_has_the_identifier_fields() -> None:
    """The `Identity` model's fields are the identifier fields; the hashed ones are checked as
    hex digests; the exported schema requires at least one, in priority order."""
    assert set(Identity.model_fields) == set(IDENTIFIER_FIELDS)
    schema = Identity.model_json_schema()
    assert [branch["required"][0] for branch in schema["anyOf"]] == list(IDENTIFIER_FIELDS)
    for name in IDENTIFIER_FIELDS:
        with pytest.raises(ValidationError):
            Identity.model_validate({name: "a" * 65 if name in HASHED_IDENTIFIERS else ""})


def test_descriptions_list_every_reason() -> None:
    """The wire schema names every suppression reason and every reason a channel of a
    preference list is skipped for (they are open strings there, documented here)."""
    suppressed_by = DecisionRecord.model_fields["suppressed_by"].description or ""
    assert all(reason in suppressed_by for reason in SUPPRESSION_REASONS)
    skipped = SkippedChannel.model_fields["reason"].description or ""
    assert all(reason in skipped for reason in CHANNEL_SKIP_REASONS)
    assert set(SUPPRESSION_REASONS) >= CHANNEL_SKIP_REASONS


def test_responses_are_outcomes() -> None:
    """A response record's outcome is the response, so every response is a record outcome."""
    assert SUCCESS_RESPONSES <= RESPONSES <= RECORD_OUTCOMES


def test_consumer_kit_agrees() -> None:
    """The consumer kit (standalone, no Touchflow import) accepts the same channels and legal
    bases as the wire contract."""
    assert consumer_kit.CHANNELS == CHANNELS
    assert consumer_kit.LEGAL_BASES == LEGAL_BASES


def _event(channel: str, identity: dict[str, str]) -> dict[str, Any]:
    return {"event_id": "e-1", "occurred_at": "2026-03-01T10:00:00Z", "channel": channel,
            "type": "page_viewed", "identity": identity}


def test_decoder_accepts_exactly_the_channels_and_identifiers() -> None:
    """The event decoder accepts every vocabulary channel and no other; every identifier field
    keys a profile by itself, and the first in priority order wins; it knows the model's
    top-level fields."""
    for channel in CHANNELS:
        assert parse_event(_event(channel, {"customer_id": "c-1"})).channel == channel
    with pytest.raises(EventError) as caught:
        parse_event(_event("fax", {"customer_id": "c-1"}))
    assert caught.value.reason == "unknown_channel"
    every = {name: "f" * 64 if name in HASHED_IDENTIFIERS else "x-1" for name in IDENTIFIER_FIELDS}
    for name, value in every.items():
        assert parse_event(_event("web", {name: value})).key() == f"{name}:{value}"
    assert parse_event(_event("web", every)).key().startswith(IDENTIFIER_FIELDS[0] + ":")
    assert set(TouchpointEvent.model_fields) == event_module._TOP_FIELDS


def test_rulebook_validation_uses_the_vocabulary() -> None:
    """The rulebook accepts every channel and legal basis and refuses others; the core event
    types are always read; a signal may not group by any identifier field."""
    for channel in CHANNELS:
        assert ActionSpec.model_validate({"channel": channel, "when": []}).channel == channel
    for basis in LEGAL_BASES:
        assert ActionSpec.model_validate({"channel": "web", "when": [], "basis": basis})
    with pytest.raises(ValidationError):
        ActionSpec.model_validate({"channel": "fax", "when": []})
    rulebook = parse_rulebook('version: "v"\nactions:\n  a: {channel: web, when: '
                              '[{event: {type: x}}]}\n')
    assert rulebook.event_types >= CORE_EVENT_TYPES
    for name in IDENTIFIER_FIELDS:
        with pytest.raises(RulebookError, match="other than a customer identifier"):
            parse_rulebook(f'version: "v"\nactions:\n  a: {{channel: web, when: '
                           f'[{{event: {{type: x}}}}]}}\nsignals:\n  s: {{when: {{type: x}}, '
                           f'by: identity.{name}, within: 1h, at_least: 2}}\n')
