"""The closed sets of words of wire contract v1, each spelled once.

Each set is a `Literal` type (for mypy and the pydantic models, hence the JSON Schema files) and
a frozenset or tuple of the same words (for run-time checks: the event decoder, the rulebook
compiler, the policy). Everything else imports them from here; tests/unit/schemas/
test_vocabulary.py checks that every place they surface (JSON Schemas, AsyncAPI, the consumer
kit) says the same.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ARMS",
    "CHANNELS",
    "CHANNEL_SKIP_REASONS",
    "CORE_EVENT_TYPES",
    "HASHED_IDENTIFIERS",
    "IDENTIFIER_FIELDS",
    "IDENTITY_CONTROL_KINDS",
    "LEGAL_BASES",
    "RECORD_KINDS",
    "RECORD_OUTCOMES",
    "RESPONSES",
    "SUCCESS_RESPONSES",
    "SUPPRESSION_REASONS",
    "Arm",
    "Channel",
    "ChannelSkipReason",
    "CoreEventType",
    "IdentifierField",
    "IdentityControlKind",
    "LegalBasis",
    "RecordKind",
    "RecordOutcome",
    "Response",
    "SuppressionReason",
]

#: The channels an event comes from and an action goes out on.
Channel = Literal["web", "mobile", "store", "call_center", "email", "sms", "social"]
CHANNELS: frozenset[str] = frozenset(get_args(Channel))

#: Identifier fields of an event's `identity`, in priority order: the first present one keys
#: the profile (`<field>:<value>`).
IdentifierField = Literal["customer_id", "loyalty_id", "email_sha256", "phone_sha256",
                          "anonymous_id"]
IDENTIFIER_FIELDS: tuple[str, ...] = get_args(IdentifierField)
#: The identifiers that are SHA-256 digests (lowercase hex) rather than plain ids.
HASHED_IDENTIFIERS: frozenset[str] = frozenset({"email_sha256", "phone_sha256"})

#: Kinds of identity control record on the internal repartition topic (header `tf-ctl`).
IdentityControlKind = Literal["link", "merge", "erase"]
IDENTITY_CONTROL_KINDS: tuple[str, ...] = get_args(IdentityControlKind)

#: Event types the decision core handles itself, whatever the rulebook says.
CoreEventType = Literal["identified", "consent_changed", "erasure_requested", "action_response"]
CORE_EVENT_TYPES: frozenset[str] = frozenset(get_args(CoreEventType))

#: `properties.response` of an `action_response` event; the last two count as a success.
Response = Literal["shown", "accepted", "declined", "converted"]
RESPONSES: frozenset[str] = frozenset(get_args(Response))
SUCCESS_RESPONSES: frozenset[str] = frozenset({"accepted", "converted"})

#: Why Touchflow may contact the customer: `consent` (given for the channel and purpose),
#: `service` (a transactional message) or `legitimate_interest` (for a purpose; the customer
#: may object).
LegalBasis = Literal["consent", "service", "legitimate_interest"]
LEGAL_BASES: frozenset[str] = frozenset(get_args(LegalBasis))

#: The experiment arm of a response or attribution record: sent (`treated`) or `holdout`.
Arm = Literal["treated", "holdout"]
ARMS: frozenset[str] = frozenset(get_args(Arm))

#: `kind` of an audit record on `<prefix>.decisions`.
RecordKind = Literal["action", "erasure", "merge", "identity_refused", "response",
                     "attribution", "late"]
RECORD_KINDS: frozenset[str] = frozenset(get_args(RecordKind))

#: `outcome` of an audit record (a response record's outcome is the response).
RecordOutcome = Literal["sent", "suppressed", "held_out", "erased", "ignored", "merged",
                        "refused", Response, "late"]
RECORD_OUTCOMES: frozenset[str] = frozenset(get_args(RecordOutcome))

#: `suppressed_by` of an audit record: the check that stopped an action (policy.py), or
#: `erased` for an input dated before its customer's erasure.
SuppressionReason = Literal["context", "once_only", "cooldown", "no_consent", "objection",
                            "quiet_hours", "arbitration", "contact_cap", "experiment_holdout",
                            "capacity", "erased"]
SUPPRESSION_REASONS: tuple[str, ...] = get_args(SuppressionReason)

#: The suppression reasons that make a channel preference list try its next channel (a
#: `SkippedChannel`'s reason; `capacity`: a `when_reached: fallback` limit reached on that
#: channel); any other stop ends the search.
ChannelSkipReason = Literal["no_consent", "objection", "quiet_hours", "capacity"]
CHANNEL_SKIP_REASONS: frozenset[str] = frozenset(get_args(ChannelSkipReason))
