"""The AsyncAPI 3 document of every topic Touchflow reads and writes (`touchflow schemas
export` writes it as asyncapi.yaml next to the JSON Schema files).

Each message's payload is a reference to the JSON Schema file generated from the same pydantic
model (schemas/export.py `MODELS`), so the two cannot disagree. The document describes the
worker: `receive` operations are what it consumes, `send` operations what it produces.
"""

from __future__ import annotations

from typing import Any

import yaml

from schemas.export import MODELS
from schemas.models import SCHEMA_VERSION
from schemas.vocabulary import CHANNELS, IDENTITY_CONTROL_KINDS

__all__ = ["ASYNCAPI_FILE", "asyncapi_document", "render_asyncapi"]

ASYNCAPI_FILE = "asyncapi.yaml"
_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
_KAFKA = "0.5.0"  # Kafka bindings version

_TRACE_HEADERS = {
    "type": "object",
    "properties": {
        "traceparent": {"type": "string", "description": "W3C trace context. On an event: "
                        "optional. On what the event caused (actions, audit records, dead "
                        "letters): copied from the event when it carried a valid one."},
        "tracestate": {"type": "string", "description": "W3C trace state, carried with "
                       "traceparent."},
    },
}

# message name -> (JSON Schema file, title, summary, what the Kafka key holds)
_MESSAGES: dict[str, tuple[str, str, str, str]] = {
    "TouchpointEvent": ("touchpoint_event.v1.json", "Touchpoint event",
                        "One customer touchpoint on any channel; event_id is the dedup key.",
                        "Any identifier of the person (e.g. the customer id), or none; "
                        "keying by the profile key keeps one customer's events in order."),
    "Action": ("action.v1.json", "Next-best action",
               "One decision to act; deduplicate on action_id, drop after expires_at.",
               "customer_id of the action."),
    "DecisionRecord": ("decision_record.v1.json", "Audit record",
                       "One candidate action considered (sent, suppressed, held out) or a "
                       "profile-level record (merge, erasure, response, attribution).",
                       "The profile key the record is about."),
    "DeadLetter": ("dead_letter.v1.json", "Dead letter",
                   "A rejected input message: the original bytes, where it was and why.",
                   "The original message's key."),
    "ErasureNotice": ("erasure_notice.v1.json", "Erasure notice",
                      "A customer was erased: erase what Touchflow sent you about them too.",
                      "key_digest of the erased profile key."),
    "ContextRecord": ("context_record.v1.json", "Context record",
                      "Reference data in force from valid_from (stock, pauses, ...).",
                      "Optional: the context key when the value is the bare entry."),
    "OperationsSignal": ("operations_signal.v1.json", "Signal fired",
                         "A cross-customer signal crossed its threshold (one per episode).",
                         "The signal's group."),
    "IdentityControl": ("identity_control.v1.json", "Identity control record",
                        "Link, merge or erase between the partitions of one person's keys "
                        "(header tf-ctl).", "The profile key addressed."),
    "SignalFeedRecord": ("signal_feed.v1.json", "Signal feed record",
                         "An event counted by a signal, routed to the group's partition.",
                         "<signal>\\x1f<group>."),
}

# channel id -> (address, description, messages, internal)
_CHANNELS: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "events": ("{prefix}.events", "Touchpoint events from every channel.",
               ("TouchpointEvent",), False),
    "responses": ("{prefix}.responses", "Responses to actions (action_response events) and "
                  "other events, same format as events.", ("TouchpointEvent",), False),
    "context": ("{prefix}.context", "Reference data versioned in event time; the worker "
                "also writes the pauses fired signals set.", ("ContextRecord",), False),
    "actions": ("{prefix}.actions", "Every action, all channels.", ("Action",), False),
    "channelActions": ("{prefix}.actions.{channel}", "The actions of one channel "
                       "(TOUCHFLOW_CHANNEL_TOPICS, on by default).", ("Action",), False),
    "decisions": ("{prefix}.decisions", "The audit trail: every candidate decision, sent or "
                  "not, and identity, erasure, response and attribution records.",
                  ("DecisionRecord",), False),
    "deadletter": ("{prefix}.deadletter", "Malformed input with the reason.",
                   ("DeadLetter",), False),
    "operations": ("{prefix}.operations", "Cross-customer signals that fired.",
                   ("OperationsSignal",), False),
    "erasures": ("{prefix}.erasures", "One record per erased customer, for the services "
                 "that keep what Touchflow sent them.", ("ErasureNotice",), False),
    "repartition": ("{app_id}-{prefix}.events-by-profile", "Internal: events forwarded to the "
                    "partition owning their profile, and identity control records.",
                    ("TouchpointEvent", "IdentityControl"), True),
    "signalFeed": ("{app_id}-{prefix}.signal-feed", "Internal: events counted by signals, "
                   "keyed by group.", ("SignalFeedRecord",), True),
    "changelog": ("{app_id}-{prefix}.profiles-changelog", "Internal, compacted: the durable "
                  "copy of each profile (binary, versioned format; header gen: the consumer "
                  "group generation). Not a contract: never read it from another service.",
                  ("ProfileChangelog",), True),
}

# operation id -> (action, channel id, summary)
_OPERATIONS: dict[str, tuple[str, str, str]] = {
    "receiveEvents": ("receive", "events", "The worker consumes touchpoint events."),
    "receiveResponses": ("receive", "responses", "The worker consumes responses."),
    "receiveContext": ("receive", "context", "Every worker reads the whole context topic."),
    "sendContextPauses": ("send", "context", "A fired signal publishes its pause."),
    "sendActions": ("send", "actions", "One record per action sent."),
    "sendChannelActions": ("send", "channelActions", "The same action on its channel's topic."),
    "sendDecisions": ("send", "decisions", "One audit record per decision."),
    "sendDeadLetters": ("send", "deadletter", "Rejected input, never dropped."),
    "sendOperations": ("send", "operations", "One message per signal episode."),
    "sendErasures": ("send", "erasures", "One notice per erasure."),
    "sendRepartition": ("send", "repartition", "Forwards and identity control records."),
    "receiveRepartition": ("receive", "repartition", "The owning partition applies them."),
    "sendSignalFeed": ("send", "signalFeed", "Events a signal counts."),
    "receiveSignalFeed": ("receive", "signalFeed", "The group's owner counts them."),
    "sendChangelog": ("send", "changelog", "One record per changed profile per batch."),
    "receiveChangelog": ("receive", "changelog", "Recovery of an assigned partition."),
}

_PARAMETERS = {
    "prefix": {"default": "touchpoints", "description": "TOUCHFLOW_TOPIC_PREFIX."},
    "app_id": {"default": "touchflow", "description": "TOUCHFLOW_APP_ID."},
    "channel": {"enum": sorted(CHANNELS), "description": "The action's channel."},
}


def _message(name: str) -> dict[str, Any]:
    if name == "ProfileChangelog":
        return {"name": name, "title": "Profile changelog record",
                "contentType": "application/octet-stream",
                "summary": "A profile's stored bytes (null: removed), keyed by profile key.",
                "payload": {"type": ["string", "null"], "contentEncoding": "binary"},
                "headers": {"type": "object", "properties": {"gen": {
                    "type": "string", "description": "Consumer group generation."}}}}
    file, title, summary, key = _MESSAGES[name]
    headers = _TRACE_HEADERS
    if name == "IdentityControl":
        headers = {"type": "object", "required": ["tf-ctl"], "properties": {
            "tf-ctl": {"enum": list(IDENTITY_CONTROL_KINDS)}}}
    return {
        "name": name, "title": title, "summary": summary, "contentType": "application/json",
        "headers": headers,
        "payload": {"schemaFormat": _SCHEMA_FORMAT, "schema": {"$ref": f"./{file}"}},
        "bindings": {"kafka": {"key": {"type": "string", "description": key},
                               "bindingVersion": _KAFKA}},
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document as a dict (deterministic, ordered for reading)."""
    files = set(MODELS)
    for file, *_ in _MESSAGES.values():
        if file not in files:  # a message without a generated schema would be a broken ref
            raise RuntimeError(f"{file} is not generated by schemas/export.py")
    channels: dict[str, Any] = {}
    for channel_id, (address, description, messages, internal) in _CHANNELS.items():
        params = [p for p in _PARAMETERS if "{" + p + "}" in address]
        channel: dict[str, Any] = {
            "address": address, "description": description,
            "messages": {m[0].lower() + m[1:]: {"$ref": f"#/components/messages/{m}"}
                         for m in messages},
            "tags": [{"name": "internal" if internal else "public"}],
        }
        if params:
            channel["parameters"] = {p: {"$ref": f"#/components/parameters/{p}"}
                                     for p in params}
        channels[channel_id] = channel
    operations: dict[str, Any] = {}
    for op_id, (action, channel_id, summary) in _OPERATIONS.items():
        refs = [{"$ref": f"#/channels/{channel_id}/messages/{key}"}
                for key in channels[channel_id]["messages"]]
        operations[op_id] = {"action": action, "channel": {"$ref": f"#/channels/{channel_id}"},
                             "summary": summary, "messages": refs}
    names = [*_MESSAGES, "ProfileChangelog"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Touchflow",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Streaming next-best-action engine: the topics a Touchflow worker "
            "reads and writes. Delivery is at least once: consumers of the action topics "
            "deduplicate on action_id (the touchflow_consumer package does). Channels tagged "
            "internal belong to the worker; the public ones are the contract (wire contract "
            "v1: required fields fixed, optional fields may be added).",
        },
        "defaultContentType": "application/json",
        "servers": {"dev": {"host": "127.0.0.1:9092", "protocol": "kafka",
                            "description": "`touchflow dev`'s embedded broker."}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {name: _message(name) for name in names},
            "parameters": _PARAMETERS,
        },
    }


def render_asyncapi() -> bytes:
    """The document as YAML bytes, deterministic."""
    text = yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
    return b"# Generated by `touchflow schemas export` from schemas/; do not edit.\n" + \
        text.encode()
