"""Pydantic v2 models of wire contract v1: the source of the JSON Schema files in jsonschema/.

Required fields are fixed by DESIGN.md; optional fields may be added in later minor versions.
The worker does not validate through these models on its hot path (see schemas/event.py), but
every message it writes is shaped by them and the tests check that against these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "Channel",
    "DeadLetter",
    "DecisionRecord",
    "Identity",
    "TouchpointEvent",
]

SCHEMA_VERSION = "1"

Channel = Literal["web", "mobile", "store", "call_center", "email", "sms", "social"]
_HexDigest = Field(pattern=r"^[0-9a-f]{64}$")


class Identity(BaseModel):
    """Identifiers of the person behind an event; at least one must be present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str | None = Field(None, min_length=1, max_length=200)
    anonymous_id: str | None = Field(None, min_length=1, max_length=200)
    email_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    phone_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    loyalty_id: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _at_least_one(self) -> Identity:
        if not any(
            (self.customer_id, self.anonymous_id, self.email_sha256, self.phone_sha256,
             self.loyalty_id)
        ):
            raise ValueError("identity carries no identifier")
        return self


class TouchpointEvent(BaseModel):
    """A touchpoint on `<prefix>.events` (and responses on `<prefix>.responses`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="TouchpointEvent")

    event_id: str = Field(min_length=1, max_length=200, description="Unique id; the dedup key.")
    occurred_at: AwareDatetime = Field(description="Event time with a UTC offset; the only clock.")
    channel: Channel
    type: str = Field(min_length=1, max_length=200, description="e.g. content_downloaded")
    identity: Identity
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    schema_version: str | None = None


class Action(BaseModel):
    """A next-best action on `<prefix>.actions` and `<prefix>.actions.<channel>`."""

    model_config = ConfigDict(extra="allow", frozen=True, title="Action")

    action_id: str = Field(
        min_length=1,
        description="Deterministic digest of (customer, action, trigger event, rulebook version);"
        " consumers deduplicate on it.",
    )
    customer_id: str = Field(description="The profile key the action is for.")
    action: str
    channel: Channel
    score: float
    reasons: list[str] = Field(description="Why this action was chosen, most important first.")
    trigger_event_id: str
    rulebook_version: str
    decided_at: AwareDatetime = Field(description="Event time of the trigger (not wall time).")
    expires_at: AwareDatetime
    payload: dict[str, Any] = Field(default_factory=dict)
    experiment: dict[str, str] | None = None
    legal_basis: Literal["consent", "service", "legitimate_interest"] = Field(
        "consent", description="Why Touchflow may contact the customer this way: `consent` "
        "(given for the channel and purpose), `service` (a transactional message, e.g. an "
        "order status or a delay apology) or `legitimate_interest` (for `purpose`; the "
        "customer may object).")
    purpose: str | None = Field(None, description="The purpose the action serves, if named.")


class DecisionRecord(BaseModel):
    """An audit record on `<prefix>.decisions`: one per candidate action considered, sent or not,
    plus profile-level records (e.g. erasure)."""

    model_config = ConfigDict(extra="allow", frozen=True, title="DecisionRecord")

    decision_id: str = Field(description="Deterministic digest, unique per record.")
    kind: Literal["action", "erasure", "merge", "identity_refused", "response", "attribution"] = (
        "action"
    )
    customer_id: str
    trigger_event_id: str
    rulebook_version: str
    decided_at: AwareDatetime
    outcome: Literal["sent", "suppressed", "held_out", "erased", "ignored", "merged", "refused",
                     "shown", "accepted", "declined", "converted"] = Field(
        description="`ignored` (kind erasure, suppressed_by `erased`): an input dated at or "
        "before its customer's erasure; the record names the customer only as "
        "`erased:<key digest>`.")
    action: str | None = None
    channel: Channel | None = None
    action_id: str | None = None
    suppressed_by: str | None = Field(
        None, description="Policy that suppressed it: contact_cap, no_consent, quiet_hours,"
        " cooldown, once_only, context, arbitration, experiment_holdout, ..."
    )
    score: float | None = None
    arm: Literal["treated", "holdout"] | None = Field(
        None, description="For response and attribution records: whether the action was sent "
        "(treated) or held out by an experiment (holdout)."
    )
    reasons: list[str] = Field(default_factory=list)
    legal_basis: Literal["consent", "service", "legitimate_interest"] | None = Field(
        None, description="Why Touchflow may contact the customer this way: `consent` "
        "(given for the channel and purpose), `service` (a transactional message, e.g. an "
        "order status or a delay apology) or `legitimate_interest` (for `purpose`; the "
        "customer may object).")
    purpose: str | None = Field(None, description="The purpose the action serves, if named.")


class ErasedIdentifier(BaseModel):
    """One identifier an erasure removed."""

    model_config = ConfigDict(frozen=True, title="ErasedIdentifier")

    field: str = Field(description="The identifier's name, e.g. customer_id, anonymous_id.")
    value: str = Field(description="The identifier itself, for the consumer to erase by.")
    digest: str = Field(description="Its key digest, as tombstones name it.")


class ErasureNotice(BaseModel):
    """A record on `<prefix>.erasures` (Kafka key: `key_digest`): a customer was erased, and
    services that keep what Touchflow sent them about this customer should erase it too."""

    model_config = ConfigDict(extra="allow", frozen=True, title="ErasureNotice")

    key_digest: str = Field(description="BLAKE2b-128 (hex) of the erased profile key.")
    identifiers: list[ErasedIdentifier] = Field(
        description="The profile key and every identifier linked into it.")
    erased_ms: int = Field(description="Inputs dated at or before this time (epoch ms) are "
                           "ignored from now on: the erasure's time or the profile's newest "
                           "event, whichever is later.")
    requested_at: AwareDatetime = Field(description="occurred_at of the erasure event.")
    trigger_event_id: str


class DeadLetter(BaseModel):
    """A rejected message on `<prefix>.deadletter`: the original bytes and why."""

    model_config = ConfigDict(extra="allow", frozen=True, title="DeadLetter")

    reason: str = Field(description="Short code, e.g. invalid_json, unknown_channel.")
    error: str = Field(description="Readable sentence naming the field, never its value.")
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key_b64: str | None = None
    value_b64: str = Field(description="The original message value, base64.")
    value_truncated: bool = False
    worker: str | None = None
