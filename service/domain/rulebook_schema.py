"""The rulebook's JSON Schema, for editors (`touchflow schemas export` writes it).

The shape comes from the pydantic models (model.py); conditions and event matchers are free
values there (rules.py compiles them), so their grammar (conditions.py, fields.py) is added
here as `$defs/Condition` and `$defs/EventMatcher` and put in place of the fields that hold
them. Durations are described as the strings a rulebook writes (`30m`), defaults included.
A condition subject this module has no details for still validates (any operands), so a new
subject never makes a correct rulebook fail in an editor.
"""

from __future__ import annotations

from typing import Any

from schemas.codec import dumps_pretty
from service.domain.conditions import ConditionCompiler
from service.domain.fields import OPS, format_ms
from service.domain.model import DURATION_SCHEMA, RulebookModel

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
        elif with_paths and name in _COMPARABLE:
            out[name] = {"anyOf": [{"not": {"type": "object"}}, path_operand], **text}
        else:
            out[name] = text
    return out


def _subject(name: str, arg: dict[str, Any], extra: dict[str, Any] | None = None,
             ops: bool = False, description: str = "") -> dict[str, Any]:
    properties: dict[str, Any] = {name: arg}
    if ops:
        properties.update(_ops(with_paths=True))
    properties.update(extra or {})
    out = {"type": "object", "properties": properties, "required": [name],
           "additionalProperties": False}
    if description:
        out["description"] = description
    return out


def _condition_defs() -> dict[str, Any]:
    name = {"type": "string"}
    crosses = {"crosses": {"type": "number", "description": "true only on the event that "
                           "takes the value from below this to at or above it"}}
    known: dict[str, dict[str, Any]] = {
        "event": _subject("event", _REF_MATCHER, description="the event matches"),
        "score": _subject("score", name, crosses, ops=True, description="a score's value"),
        "trait": _subject("trait", name, crosses, ops=True,
                          description="a trait's value (no operator: it is truthy)"),
        "segment": _subject("segment", name, description="a named condition holds"),
        "pattern": _subject("pattern", name, description="the pattern fired on this event"),
        "value": _subject("value", name, crosses, ops=True,
                          description="any field path (event.*, trait.*, score.*, ...)"),
        "context": _subject("context", name, {"for_any": name, "missing": {"type": "boolean"}},
                            ops=True, description="reference data under a key template"),
        "signal": _subject("signal", name, {"key": {}},
                           description="a cross-customer signal is active for the key"),
        "not": _subject("not", _REF_CONDITION),
        "any": _subject("any", {"type": "array", "items": _REF_CONDITION, "minItems": 1}),
        "all": _subject("all", {"type": "array", "items": _REF_CONDITION, "minItems": 1}),
    }
    subjects = list(ConditionCompiler.SUBJECTS)
    choices = [known.get(s) or {"type": "object", "required": [s]} for s in subjects]
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
            "description": "A condition (conditions.py): a mapping naming one subject, or a "
                           "list meaning all of them.",
            "anyOf": [{"type": "array", "items": _REF_CONDITION, "minItems": 1}, *choices],
        },
        "EventMatcher": {
            "description": "An event matcher: type, channel, properties, context; a list "
                           "means any of them.",
            "anyOf": [one_match, {"type": "array", "items": one_match, "minItems": 1}],
        },
    }


def _readable_defaults(node: Any) -> None:
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
