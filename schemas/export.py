"""Write the JSON Schema files of the wire contract (`touchflow schemas export`)."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from schemas.models import Action, DeadLetter, DecisionRecord, ErasureNotice, TouchpointEvent

__all__ = ["MODELS", "export_schemas", "render_schemas"]

MODELS: dict[str, type[BaseModel]] = {
    "touchpoint_event.v1.json": TouchpointEvent,
    "action.v1.json": Action,
    "decision_record.v1.json": DecisionRecord,
    "dead_letter.v1.json": DeadLetter,
    "erasure_notice.v1.json": ErasureNotice,
}


def render_schemas() -> dict[str, bytes]:
    """File name -> pretty JSON Schema bytes, deterministic."""
    out: dict[str, bytes] = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://touchflow.dev/schemas/{name}"
        out[name] = orjson.dumps(
            schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        )
    return out


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema file into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_schemas().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
