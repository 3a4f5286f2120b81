"""The JSON Schema files in schemas/jsonschema are generated from the models and up to date."""

from __future__ import annotations

from pathlib import Path

from schemas.export import render_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def test_schema_files_are_not_stale() -> None:
    """Every exported schema file equals what the models generate now (run `make schemas`)."""
    for name, content in render_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{path} missing: run `touchflow schemas export`"
        assert path.read_bytes() == content, f"{path} is stale: run `touchflow schemas export`"


def test_contract_required_fields() -> None:
    """The action schema requires the contract's fixed fields."""
    import orjson

    action = orjson.loads(render_schemas()["action.v1.json"])
    assert set(action["required"]) >= {
        "action_id", "customer_id", "action", "channel", "score", "reasons",
        "trigger_event_id", "rulebook_version", "decided_at", "expires_at",
    }
