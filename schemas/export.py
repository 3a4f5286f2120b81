"""Write the JSON Schema files of the wire contract (`touchflow schemas export`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from schemas.codec import dumps_pretty
from schemas.models import Action, DeadLetter, DecisionRecord, ErasureNotice, TouchpointEvent
from schemas.topic_models import ContextRecord, IdentityControl, OperationsSignal, SignalFeedRecord

__all__ = ["MODELS", "export_schemas", "render_schemas"]

MODELS: dict[str, type[BaseModel]] = {
    "touchpoint_event.v1.json": TouchpointEvent,
    "action.v1.json": Action,
    "decision_record.v1.json": DecisionRecord,
    "dead_letter.v1.json": DeadLetter,
    "erasure_notice.v1.json": ErasureNotice,
    "context_record.v1.json": ContextRecord,
    "operations_signal.v1.json": OperationsSignal,
    "identity_control.v1.json": IdentityControl,
    "signal_feed.v1.json": SignalFeedRecord,
}


def render_schemas() -> dict[str, bytes]:
    """File name -> pretty JSON Schema bytes, deterministic."""
    out: dict[str, bytes] = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://touchflow.dev/schemas/{name}"
        out[name] = dumps_pretty(schema)
    return out


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema file, and the AsyncAPI document that refers to them, into
    `directory`; return the paths written."""
    from schemas.asyncapi import ASYNCAPI_FILE, render_asyncapi

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in [*render_schemas().items(), (ASYNCAPI_FILE, render_asyncapi())]:
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
