"""The AsyncAPI 3 document (schemas/jsonschema/asyncapi.yaml): generated from the models,
structurally valid, covering every topic the worker uses; and the identity rule in the event
JSON Schema."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from schemas.asyncapi import ASYNCAPI_FILE, render_asyncapi
from schemas.event import CHANNELS, IDENTIFIER_FIELDS
from schemas.export import MODELS
from service.ops.settings import Settings
from service.stream.topics import TopicNames

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_DIR = ROOT / "schemas" / "jsonschema"


def _doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render_asyncapi())
    return loaded


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _schema(file: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((SCHEMA_DIR / file).read_bytes())
    return loaded


def test_committed_document_is_not_stale() -> None:
    """The committed asyncapi.yaml equals what the models generate now (run
    `touchflow schemas export`)."""
    path = SCHEMA_DIR / ASYNCAPI_FILE
    assert path.exists(), f"{path} missing: run `touchflow schemas export`"
    assert path.read_bytes() == render_asyncapi(), f"{path} is stale: run " \
        "`touchflow schemas export`"


def test_document_has_asyncapi_3_structure() -> None:
    """asyncapi 3.0.0 with info; every channel has an address whose {parameters} are declared;
    every operation is send or receive on a channel that resolves, with messages of that
    channel; every message resolves to a component whose payload is a JSON Schema file
    generated from a model (or the changelog's opaque bytes)."""
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and re.fullmatch(r"\d+\.\d+\.\d+", doc["info"]["version"])
    assert set(doc) <= {"asyncapi", "id", "info", "servers", "defaultContentType", "channels",
                        "operations", "components"}
    for channel_id, channel in doc["channels"].items():
        placeholders = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), channel_id
        for ref in channel.get("parameters", {}).values():
            _resolve(doc, ref["$ref"])
        assert channel["messages"], channel_id
        for message in channel["messages"].values():
            _resolve(doc, message["$ref"])
    for op_id, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), op_id
        channel_ref = operation["channel"]["$ref"]
        _resolve(doc, channel_ref)
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), op_id
            _resolve(doc, message["$ref"])
    for name, message in doc["components"]["messages"].items():
        payload = message["payload"]
        if message["contentType"] == "application/json":
            assert payload["schemaFormat"].startswith("application/schema+json"), name
            file = payload["schema"]["$ref"].removeprefix("./")
            assert file in MODELS and (SCHEMA_DIR / file).exists(), name
            assert _schema(file)["title"] == MODELS[file].__name__, name
        else:
            assert name == "ProfileChangelog"


def test_every_topic_the_worker_uses_has_a_channel() -> None:
    """Each topic name TopicNames derives (public, per-channel and internal), with the default
    prefix and app id, is the address of one channel; the worker both sends and receives the
    internal ones, and consumers get send operations for every public output."""
    doc = _doc()
    params = doc["components"]["parameters"]
    topics = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    names = [*topics.all_public(), topics.repartition, topics.changelog, topics.signal_feed]
    addresses = []
    for channel in doc["channels"].values():
        choices = [channel["address"]]
        for param in channel.get("parameters", {}):
            values = params[param].get("enum") or [params[param]["default"]]
            choices = [c.replace("{" + param + "}", v) for c in choices for v in values]
        addresses.extend(choices)
    for name in names:
        assert addresses.count(name) == 1, name
    assert {f"touchpoints.actions.{c}" for c in CHANNELS} <= set(addresses)
    sends = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in doc["operations"].values()
             if op["action"] == "send"}
    assert {"actions", "channelActions", "decisions", "deadletter", "operations",
            "erasures"} <= sends


def test_action_payload_schema_accepts_what_replay_writes() -> None:
    """The JSON Schema the Action message points to accepts every action the decision core
    writes (replay of the lead-scoring example), and rejects one without its action_id."""
    from service.domain.rules import load_rulebook
    from service.replay.runner import replay_file

    doc = _doc()
    file = doc["components"]["messages"]["Action"]["payload"]["schema"]["$ref"][2:]
    validator = jsonschema.Draft202012Validator(_schema(file),
                                                format_checker=jsonschema.FormatChecker())
    out = io.BytesIO()
    rulebook = load_rulebook(ROOT / "examples" / "lead_scoring" / "rulebook.yaml")
    replay_file(ROOT / "examples" / "lead_scoring" / "events.jsonl", rulebook, output=out)
    actions = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert actions
    for action in actions:
        validator.validate(action)
    broken = {k: v for k, v in actions[0].items() if k != "action_id"}
    assert not validator.is_valid(broken)


EVENT = {"event_id": "e-1", "occurred_at": "2026-03-02T09:30:00+09:00", "channel": "web",
         "type": "page_view"}
SHA = "a" * 64


@pytest.mark.parametrize("identity", [
    {"customer_id": "c-42"}, {"anonymous_id": "a-9"}, {"email_sha256": SHA},
    {"phone_sha256": SHA}, {"loyalty_id": "l-1"}, {"customer_id": "c-1", "anonymous_id": "a-1"},
    {"customer_id": None, "loyalty_id": "l-1"},
])
def test_event_schema_accepts_any_one_identifier(identity: dict[str, Any]) -> None:
    """The event JSON Schema accepts an identity with at least one identifier, whichever."""
    jsonschema.Draft202012Validator(_schema("touchpoint_event.v1.json")).validate(
        {**EVENT, "identity": identity})


@pytest.mark.parametrize("identity", [
    {}, {"customer_id": None}, {name: None for name in IDENTIFIER_FIELDS},
    {"email": "someone@example.com"},
])
def test_event_schema_refuses_an_identity_without_identifier(identity: dict[str, Any]) -> None:
    """The rule "at least one identifier" is in the JSON Schema itself: an empty identity, one
    with only nulls, or only an unknown field is invalid, as the pydantic model says."""
    from pydantic import ValidationError

    from schemas.models import TouchpointEvent

    validator = jsonschema.Draft202012Validator(_schema("touchpoint_event.v1.json"))
    assert not validator.is_valid({**EVENT, "identity": identity})
    with pytest.raises(ValidationError):
        TouchpointEvent.model_validate({**EVENT, "identity": identity})
