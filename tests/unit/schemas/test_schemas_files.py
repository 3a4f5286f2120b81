"""The JSON Schema files in schemas/jsonschema are generated from the models and up to date."""

from __future__ import annotations

from pathlib import Path

from schemas.export import render_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas" / "jsonschema"


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


def test_rulebook_schema_file_is_not_stale_and_every_example_validates() -> None:
    """schemas/jsonschema/rulebook.schema.json equals what the rulebook models generate now,
    is a valid draft 2020-12 schema, and every example rulebook validates against it (what
    an editor checks as the file is typed)."""
    import jsonschema
    import orjson
    import yaml

    from service.domain.rulebook_schema import RULEBOOK_SCHEMA_FILE, render_rulebook_schema

    path = SCHEMA_DIR / RULEBOOK_SCHEMA_FILE
    assert path.exists(), f"{path} missing: run `touchflow schemas export`"
    assert path.read_bytes() == render_rulebook_schema(), \
        f"{path} is stale: run `touchflow schemas export`"
    schema = orjson.loads(path.read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    examples = sorted((SCHEMA_DIR.parents[1] / "examples").glob("*/rulebook.yaml"))
    assert len(examples) >= 5
    for rulebook in examples:
        errors = [f"{list(e.absolute_path)}: {e.message}"
                  for e in validator.iter_errors(yaml.safe_load(rulebook.read_text()))]
        assert not errors, f"{rulebook}: {errors[:3]}"


def test_rulebook_schema_rejects_what_an_editor_should_flag() -> None:
    """The schema catches a misspelt condition subject, a duration given as a bare number and
    an unknown event-matcher key, and accepts crossings, path comparisons and windows."""
    import copy

    import jsonschema

    from service.domain.rulebook_schema import rulebook_schema

    validator = jsonschema.Draft202012Validator(rulebook_schema())
    base = {"version": "x", "actions": {"a": {"channel": "web", "when": [{"score": "s"}]}}}

    def errors(change: dict[str, object], where: str = "a") -> int:
        book = copy.deepcopy(base)
        if where == "a":
            book["actions"]["a"].update(change)  # type: ignore[index]
        else:
            book.update(change)
        return len(list(validator.iter_errors(book)))

    assert errors({}) == 0
    assert errors({"when": [{"scroe": "s"}]}) > 0
    assert errors({"expires": 30}) > 0
    assert errors({"when": [{"score": "s", "crosses": 25}]}) == 0
    assert errors({"when": [{"value": "event.properties.p", "lt": {"path": "trait.x"}}]}) == 0
    window = {"kind": "count", "within": "7d", "when": {"type": "v"}}
    assert errors({"traits": {"t": window}}, "book") == 0
    assert errors({"traits": {"t": {**window, "when": {"typo": "v"}}}}, "book") > 0
