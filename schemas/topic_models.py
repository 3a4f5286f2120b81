"""Pydantic models of the messages on Touchflow's other topics (context, operations, and the
internal identity-control and signal-feed records), the source of their JSON Schema files and
of the AsyncAPI document (schemas/asyncapi.py). schemas/models.py holds the events, actions,
audit records and dead letters."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["ContextRecord", "IdentityControl", "OperationsSignal", "SignalFeedRecord"]


class ContextRecord(BaseModel):
    """Reference data on `<prefix>.context` (stock, pauses, ...), versioned in event time. A
    record may also be the bare value with the Kafka key naming the entry; a tombstone (null
    value) deletes the key from the record's timestamp on."""

    model_config = ConfigDict(extra="allow", frozen=True, title="ContextRecord")

    key: str = Field(min_length=1, description="Context key, e.g. stock:sku-1:store-7.")
    value: Any = Field(None, description="The value; null deletes the key from valid_from on.")
    valid_from: int | AwareDatetime | None = Field(
        None, description="Epoch milliseconds or ISO-8601 with an offset; absent: the record's "
        "timestamp.")


class OperationsSignal(BaseModel):
    """A cross-customer signal that fired, on `<prefix>.operations` (one per episode); the
    pause it sets goes to `<prefix>.context` under `signal:<name>:<key>`."""

    model_config = ConfigDict(extra="allow", frozen=True, title="OperationsSignal")

    signal_id: str = Field(description="Deterministic digest of (signal, group, time, rulebook).")
    signal: str
    key: str = Field(description="The group counted (a product, a store; never a customer).")
    count: int
    window: str
    first_at: AwareDatetime
    fired_at: AwareDatetime
    active_until: AwareDatetime
    trigger_event_id: str
    rulebook_version: str
    reasons: list[str]


class IdentityControl(BaseModel):
    """An identity control record on the internal repartition topic (header `tf-ctl`: link,
    merge or erase), addressed to the partition owning `alias` (link, erase) or `canonical`
    (merge)."""

    model_config = ConfigDict(extra="allow", frozen=True, title="IdentityControl")

    alias: str = Field(description="The profile key being linked, merged or erased.")
    canonical: str = Field(description="The profile key it belongs to.")
    event_id: str
    occurred_at: AwareDatetime
    history: dict[str, Any] | None = Field(
        None, description="merge: the alias profile's history, folded into the canonical one.")
    via: str | None = Field(None, description="erase: the key whose erasure reached this one.")


class SignalFeedRecord(BaseModel):
    """An event counted by a signal, on the internal signal-feed topic keyed by group."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="SignalFeedRecord")

    signal: str
    group: str
    event_id: str
    ts_ms: int = Field(description="Event time, epoch milliseconds.")

