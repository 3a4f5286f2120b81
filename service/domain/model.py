"""The rulebook's structure as pydantic models: what keys exist, their types and ranges.

Only the shape is checked here. Conditions, event matchers and templates are free-form values
(`object`: raw YAML) that `rules.py` compiles and checks with the same file:line:field
reporting, because their grammar is recursive and the messages pydantic gives for unions are
hard to read.
Durations are strings such as `90s`, `30m`, `24h`, `30d`, `2w` (or `500ms`), turned into
milliseconds.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from schemas.vocabulary import CHANNELS, Channel, LegalBasis

__all__ = [
    "DURATION_SCHEMA",
    "ActionSpec",
    "Arbitration",
    "Attribution",
    "CapacitySpec",
    "ContactCap",
    "ContactPolicy",
    "ExperimentSpec",
    "Idempotence",
    "PatternSpec",
    "PointSpec",
    "QuietHours",
    "RulebookModel",
    "ScoreSpec",
    "SignalSpec",
    "TraitSpec",
    "parse_duration",
]

ConsentDefault = Literal["opt_in", "opt_out"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


def parse_duration(value: object) -> int:
    """`"30m"` -> 1_800_000 (milliseconds). Raises ValueError with a readable message."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            millis = int(float(match.group(1)) * _UNIT_MS[match.group(2)])
            if millis > 0:
                return millis
    raise ValueError("must be a positive duration such as 90s, 30m, 24h, 30d or 2w")


#: how a duration looks in the rulebook's JSON Schema (rulebook_schema.py)
DURATION_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$", "x-duration": True,
    "description": "a duration such as 90s, 30m, 24h, 30d or 2w",
}
Duration = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointSpec(_Strict):
    """Points for a score: `add` points (times the numeric field `per`, if given) per match."""

    name: Name | None = None
    when: object
    add: float
    per: str | None = None
    max_times: int | None = Field(default=None, ge=1)
    nth: int | None = Field(default=None, ge=1)


class ScoreSpec(_Strict):
    """A named score: points from events, optional cap/floor, optional half-life decay."""

    description: str | None = None
    points: list[PointSpec] = Field(min_length=1)
    cap: float | None = None
    floor: float | None = None
    half_life: Duration | None = None


class TraitSpec(_Strict):
    """A value derived from the customer's own events."""

    description: str | None = None
    kind: Literal["last", "count", "sum", "max", "min", "mean", "distinct", "top",
                  "distinct_count"]
    field: str | None = None
    when: object = None
    clear_when: object = None
    max_items: int = Field(default=20, ge=1, le=200)
    bands: dict[str, float] | None = None
    default: object = None
    within: Duration | None = None  # a sliding window in event time (service/domain/windowed.py)
    keep: int = Field(default=100, ge=1, le=1000)  # windowed: newest matching events kept


class PatternSpec(_Strict):
    """A window pattern in event time: `count` (at_least matches within) or `sequence`."""

    description: str | None = None
    kind: Literal["count", "sequence"]
    within: Duration
    when: object = None
    at_least: int = Field(default=2, ge=1, le=1000)
    first: object = None
    then: object = None
    by: str | None = None
    keep: int = Field(default=32, ge=2, le=500)


class ActionSpec(_Strict):
    """One entry of the actions catalog."""

    description: str | None = None
    channel: Channel | None = None
    when: object
    suppress_unless: object = None
    payload: dict[str, object] = Field(default_factory=dict)
    value: float = Field(default=1.0, ge=0)
    priority: float = Field(default=1.0, ge=0)
    expires: Duration = 86_400_000
    cooldown: Duration | None = None
    once: bool = False
    group: Name | None = None
    # The legal basis of contacting the customer (default `consent`); `consent: exempt` is
    # the older spelling of `basis: service`, `consent: required` of `basis: consent`.
    basis: LegalBasis | None = None
    consent: Literal["required", "exempt"] | None = None
    purpose: Name | None = None
    # preference list instead of `channel`: the first consented, outside quiet hours, is used
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=len(CHANNELS))

    def channel_list(self) -> list[Channel]:
        """The channels in order of preference (`[channel]` for a single-channel action)."""
        if self.channels:
            return list(self.channels)
        return [self.channel] if self.channel is not None else []


class QuietHours(_Strict):
    """Local clock times `start` (inclusive) to `end` (exclusive); may wrap past midnight."""

    start: Annotated[str, Field(pattern=_CLOCK)]
    end: Annotated[str, Field(pattern=_CLOCK)]
    # defer: send anyway, with `not_before` = the end of the quiet period (customer's zone)
    mode: Literal["suppress", "defer"] = "suppress"


class ContactCap(_Strict):
    """At most `max` actions per customer within the rolling window `within`, all channels."""

    max: int = Field(ge=1)
    within: Duration


class ContactPolicy(_Strict):
    """Contact fatigue cap, quiet hours per channel, consent defaults."""

    cap: ContactCap | None = None
    quiet_hours: dict[Channel, QuietHours] = Field(default_factory=dict)
    consent_default: ConsentDefault = "opt_out"
    consent_by_channel: dict[Channel, ConsentDefault] = Field(
        default_factory=dict
    )


class Arbitration(_Strict):
    """How many actions one event may send (actions sharing a `group` send at most one)."""

    max_per_event: int = Field(default=1, ge=1, le=100)


class ExperimentSpec(_Strict):
    """Hash-based assignment of customers to arms; `holdout` arms are audited, not sent."""

    description: str | None = None
    salt: str | None = None
    arms: dict[Name, float] = Field(min_length=1)
    holdout: list[Name] = Field(default_factory=list)
    actions: list[Name] | Literal["*"] = "*"
    payload: dict[Name, dict[str, object]] = Field(default_factory=dict)


class Idempotence(_Strict):
    """How many applied event ids a profile remembers, and how late an event may arrive."""

    remember_events: int = Field(default=64, ge=8, le=4096)
    max_lateness: Duration = 7 * 86_400_000


class Learning(_Strict):
    """Learned propensities (Beta-Bernoulli per action and segment, Thompson sampling)."""

    warm_up: int = Field(default=30, ge=0, le=1_000_000)
    prior: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (1.0, 1.0)
    segments: list[Name] = Field(default_factory=list)  # first match is the segment
    refresh: Duration = 3_600_000  # how often (event time) the counts are re-published


class Attribution(_Strict):
    """Credit conversions (events matching `conversions`) to the latest action within `window`
    before them, once per action (service/domain/attribution.py)."""

    conversions: object
    window: Duration = 7 * 86_400_000
    actions: list[Name] | Literal["*"] = "*"


class SignalSpec(_Strict):
    """A cross-customer signal: `at_least` events matching `when` with the same `by` value
    (e.g. properties.sku) within `within` fire it; it stays active for `hold`."""

    description: str | None = None
    when: object
    by: str
    within: Duration
    at_least: int = Field(ge=1, le=100_000)
    hold: Duration = 3_600_000


def _period(value: object) -> int:
    """A capacity period: `total` (0: one period for ever) or a duration."""
    if value == "total":
        return 0
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError("must be `total` or a duration such as 1h or 1d") from None


class CapacitySpec(_Strict):
    """A limit across customers (service/domain/capacity.py): at most `limit` actions of one
    action, group or channel (exactly one of them) per `per` of event time (or in `total`)."""

    description: str | None = None
    action: Name | None = None
    group: Name | None = None
    channel: Channel | None = None
    limit: int = Field(ge=1, le=1_000_000_000)
    per: Annotated[int, BeforeValidator(_period), WithJsonSchema({
        "anyOf": [DURATION_SCHEMA, {"const": "total"}],
        "description": "the period in event time (a duration, e.g. 1h or 1d) or total"})] = 0
    when_reached: Literal["fallback", "suppress"] = "fallback"
    quota: int | None = Field(default=None, ge=1)  # asked per partition at a time


def _version_text(value: object) -> object:
    """YAML reads `version: 2026-03-01` as a date and `version: 3` as a number: keep the text."""
    if isinstance(value, int | float | date) and not isinstance(value, bool):
        return str(value)
    return value


class RulebookModel(_Strict):
    """The whole rulebook file."""

    version: Annotated[str, BeforeValidator(_version_text), Field(min_length=1, max_length=100),
                       WithJsonSchema({"type": ["string", "number"]})]
    description: str | None = None
    scores: dict[Name, ScoreSpec] = Field(default_factory=dict)
    traits: dict[Name, TraitSpec] = Field(default_factory=dict)
    segments: dict[Name, object] = Field(default_factory=dict)
    patterns: dict[Name, PatternSpec] = Field(default_factory=dict)
    actions: dict[Name, ActionSpec] = Field(min_length=1)
    contact_policy: ContactPolicy = ContactPolicy()
    arbitration: Arbitration = Arbitration()
    experiments: dict[Name, ExperimentSpec] = Field(default_factory=dict)
    idempotence: Idempotence = Idempotence()
    learning: Learning | None = None
    attribution: Attribution | None = None
    signals: dict[Name, SignalSpec] = Field(default_factory=dict)
    capacity: dict[Name, CapacitySpec] = Field(default_factory=dict)
