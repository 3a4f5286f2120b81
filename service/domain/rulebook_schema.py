"""The rulebook's JSON Schema, for editors (`touchflow schemas export` writes it).

The shape comes from the pydantic models (model.py); conditions and event matchers are free
values there (rules.py compiles them), so their grammar (the table of subjects.py, fields.py)
is added here as `$defs/Condition` and `$defs/EventMatcher` and put in place of the fields
that hold them. Durations are described as the strings a rulebook writes (`30m`), defaults
included.
"""

from __future__ import annotations

from typing import Any

from schemas.codec import dumps_pretty
from service.domain.fields import OPS, format_ms
from service.domain.model import DURATION_SCHEMA, RulebookModel
from service.domain.subjects import SUBJECTS, Subject

__all__ = ["RULEBOOK_SCHEMA_FILE", "render_rulebook_schema", "rulebook_schema"]

RULEBOOK_SCHEMA_FILE = "rulebook.schema.json"
_MATCHER_FIELDS = {("PointSpec", "when"), ("TraitSpec", "when"), ("TraitSpec", "clear_when"),
                   ("PatternSpec", "when"), ("PatternSpec", "first"), ("PatternSpec", "then"),
                   ("Attribution", "conversions"), ("SignalSpec", "when")}
_CONDITION_FIELDS = {("ActionSpec", "when"), ("ActionSpec", "suppress_unless")}
_REF_MATCHER = {"$ref": "#/$defs/EventMatcher"}
_REF_CONDITION = {"$ref": "#/$defs/Condition"}
_NAMES = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                   "minItems": 1}]}
_COMPARABLE = ("eq", "ne", "gt", "gte", "lt", "lte")
_ORDERED = ("gt", "gte", "lt", "lte")


def _ops(with_paths: bool) -> dict[str, Any]:
    path_operand = {"type": "object", "properties": {"path": {"type": "string"}},
                    "required": ["path"], "additionalProperties": False,
                    "description": "the value of another field path, e.g. trait.max_price"}
    out: dict[str, Any] = {}
    for name, symbol in OPS.items():
        text = {"description": f"the value {symbol} this"}
        if name in ("in", "not_in"):
            out[name] = {"type": "array", **text}
        elif name == "exists":
            out[name] = {"type": "boolean", "description": "the field is set (true) or not"}
        elif name in _ORDERED:  # a number, or with paths another field
            number = {"type": "number"}
            out[name] = {"anyOf": [number, path_operand], **text} if with_paths \
                else {**number, **text}
        elif with_paths and name in _COMPARABLE:
            out[name] = {"anyOf": [{"not": {"type": "object"}}, path_operand], **text}
        else:
            out[name] = text
    return out


def _subject(subject: Subject) -> dict[str, Any]:
    """A subject's mapping: its own value, its operators and its other keys (subjects.py)."""
    properties: dict[str, Any] = {subject.name: dict(subject.arg)}
    if subject.ops:
        properties.update(_ops(with_paths=subject.paths))
    properties.update({key: dict(schema) for key, schema in subject.keys.items()})
    return {"type": "object", "properties": properties, "required": [subject.name],
            "additionalProperties": False, "description": subject.doc}


def _condition_defs() -> dict[str, Any]:
    choices = [_subject(subject) for subject in SUBJECTS.values()]
    value_spec = {"anyOf": [{"type": ["string", "number", "boolean", "null"]},
                            {"type": "array"},
                            {"type": "object", "properties": _ops(with_paths=False),
                             "additionalProperties": False, "minProperties": 1}]}
    one_match = {"type": "object", "additionalProperties": False,
                 "properties": {"type": _NAMES, "channel": _NAMES,
                                "properties": {"type": "object",
                                               "additionalProperties": value_spec},
                                "context": {"type": "object",
                                            "additionalProperties": value_spec}}}
    return {
        "Condition": {
            "description": "A condition (subjects.py): a mapping naming one subject, or a "
                           "list meaning all of them.",
            "anyOf": [{"type": "array", "items": _REF_CONDITION, "minItems": 1}, *choices],
        },
        "EventMatcher": {
            "description": "An event matcher: type, channel, properties, context; a list "
                           "means any of them.",
            "anyOf": [one_match, {"type": "array", "items": one_match, "minItems": 1}],
        },
    }


def _readable_defaults(node: object) -> None:
    """Duration defaults as a rulebook writes them (86400000 -> '1d')."""
    if isinstance(node, dict):
        if node.get("x-duration") and isinstance(node.get("default"), int):
            node["default"] = format_ms(node["default"])
        for value in node.values():
            _readable_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _readable_defaults(value)


def rulebook_schema() -> dict[str, Any]:
    """The rulebook's JSON Schema (draft 2020-12) as a dict."""
    schema = RulebookModel.model_json_schema()
    defs = schema["$defs"]
    for (model, field) in sorted(_MATCHER_FIELDS | _CONDITION_FIELDS):
        prop = defs.get(model, {}).get("properties", {}).get(field)
        if prop is None:
            continue
        keep = {k: v for k, v in prop.items() if k in ("title", "description")}
        ref = _REF_CONDITION if (model, field) in _CONDITION_FIELDS else _REF_MATCHER
        optional = "default" in prop
        prop.clear()
        prop.update(keep)
        if optional:
            prop["anyOf"] = [ref, {"type": "null"}]
            prop["default"] = None
        else:
            prop.update(ref)
    schema["properties"]["segments"]["additionalProperties"] = _REF_CONDITION
    defs.update(_condition_defs())
    _readable_defaults(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://touchflow.dev/schemas/{RULEBOOK_SCHEMA_FILE}"
    schema["description"] = ("A Touchflow rulebook (examples/README.md). Validation here is "
                             "a help for editors; `touchflow rules check` is the authority.")
    assert DURATION_SCHEMA["x-duration"]
    return schema


def render_rulebook_schema() -> bytes:
    """The schema as pretty, deterministic JSON bytes."""
    return dumps_pretty(rulebook_schema())
