"""Pydantic v2 models of wire contract v1: the source of the JSON Schema files in jsonschema/.

Required fields are fixed by DESIGN.md; optional fields may be added in later minor versions.
The worker does not validate through these models on its hot path (see schemas/event.py), but
every message it writes is shaped by them and the tests check that against these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.vocabulary import (
    CHANNEL_SKIP_REASONS,
    IDENTIFIER_FIELDS,
    SUPPRESSION_REASONS,
    Arm,
    Channel,
    LegalBasis,
    RecordKind,
    RecordOutcome,
)

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "Channel",
    "DeadLetter",
    "DecisionRecord",
    "Identity",
    "SkippedChannel",
    "TouchpointEvent",
]

SCHEMA_VERSION = "1"



def _one_of(words: list[str]) -> str:
    """`a, b or c`."""
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)


# "At least one identifier" in the JSON Schema itself: one branch per identifier, each
# requiring it as a string (a null does not count, as in the validator below).
_AT_LEAST_ONE: dict[str, Any] = {"anyOf": [
    {"required": [name], "properties": {name: {"type": "string"}}} for name in IDENTIFIER_FIELDS]}


class Identity(BaseModel):
    """Identifiers of the person behind an event; at least one must be present."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_AT_LEAST_ONE)

    customer_id: str | None = Field(None, min_length=1, max_length=200)
    anonymous_id: str | None = Field(None, min_length=1, max_length=200)
    email_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    phone_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    loyalty_id: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _at_least_one(self) -> Identity:
        if not any(getattr(self, name) for name in IDENTIFIER_FIELDS):
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
    legal_basis: LegalBasis = Field(
        "consent", description="Why Touchflow may contact the customer this way: `consent` "
        "(given for the channel and purpose), `service` (a transactional message, e.g. an "
        "order status or a delay apology) or `legitimate_interest` (for `purpose`; the "
        "customer may object).")
    purpose: str | None = Field(None, description="The purpose the action serves, if named.")
    not_before: AwareDatetime | None = Field(
        None, description="Present when the customer's quiet hours deferred the action: do not "
        "deliver it before this instant (the end of the quiet period in the customer's own time "
        "zone, with that zone's UTC offset). Absent: deliver now. Always before expires_at."
    )


class SkippedChannel(BaseModel):
    """A channel of an action's preference list that was not used, and why."""

    model_config = ConfigDict(extra="allow", frozen=True, title="SkippedChannel")

    channel: Channel
    reason: str = Field(description="A suppression reason: "
                        + _one_of(sorted(CHANNEL_SKIP_REASONS)) + ".")
    why: str = Field(description="The readable explanation.")


class DecisionRecord(BaseModel):
    """An audit record on `<prefix>.decisions`: one per candidate action considered, sent or not,
    plus profile-level records (e.g. erasure)."""

    model_config = ConfigDict(extra="allow", frozen=True, title="DecisionRecord")

    decision_id: str = Field(description="Deterministic digest, unique per record.")
    kind: RecordKind = "action"
    customer_id: str
    trigger_event_id: str
    rulebook_version: str
    decided_at: AwareDatetime
    outcome: RecordOutcome = Field(
        description="`ignored` (kind erasure, suppressed_by `erased`): an input dated at or "
        "before its customer's erasure; the record names the customer only as "
        "`erased:<key digest>`; `late` (kind late): an event dropped for lateness, never "
        "applied.")
    action: str | None = None
    channel: Channel | None = None
    action_id: str | None = None
    suppressed_by: str | None = Field(
        None, description="Policy that suppressed it: " + ", ".join(SUPPRESSION_REASONS)
        + " (`erased`: an input dated before its customer's erasure); later minor versions "
        "may add reasons."
    )
    score: float | None = None
    arm: Arm | None = Field(
        None, description="For response and attribution records: whether the action was sent "
        "(treated) or held out by an experiment (holdout)."
    )
    reasons: list[str] = Field(default_factory=list)
    experiment: dict[str, str] | None = Field(
        None, description="For decision records of an action under experiments: the arm this "
        "customer is in, by experiment name (arms are named in the rulebook)."
    )
    not_before: AwareDatetime | None = Field(
        None, description="The action's not_before when quiet hours deferred it."
    )
    skipped_channels: list[SkippedChannel] | None = Field(
        None, description="For an action with a channel preference list: the channels tried "
        "before the one used (`channel`), or all of them when none could be used."
    )
    legal_basis: LegalBasis | None = Field(
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
    """A rejected message on `<prefix>.deadletter`: where it came from, why, and the message
    without personal data (service/stream/deadletter.py): identifiers and detected e-mail addresses
    and phone numbers replaced by `[redacted:<kind>:<digest>]`, salted digests
    (HMAC-SHA256 with TOUCHFLOW_PII_SALT, 16 hex characters)."""

    model_config = ConfigDict(extra="allow", frozen=True, title="DeadLetter")

    reason: str = Field(description="Short code, e.g. invalid_json, unknown_channel.")
    error: str = Field(description="Readable sentence naming the field, never its value.")
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key_digest: str | None = Field(
        None, pattern=r"^[0-9a-f]{16}$",
        description="Salted digest of the message's Kafka key (a customer identifier); also "
        "the dead letter's own key.")
    value_bytes: int = Field(ge=0, description="Length of the original message value.")
    value_digest: str = Field(pattern=r"^[0-9a-f]{16}$",
                              description="Salted digest of the original message value.")
    value: dict[str, Any] | None = Field(
        None, description="The message as a JSON object, redacted: identity values, detected "
        "personal data and unknown top-level fields replaced by markers. Null when the message "
        "was not a JSON object, larger than 256 KiB, or an identity control record.")
    value_redacted: int = Field(0, ge=0, description="How many values `value` had replaced.")
    worker: str | None = None
