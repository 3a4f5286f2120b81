"""The action a consumer reads from `<prefix>.actions[.<channel>]`, and `decode` for its bytes.

Mirrors schemas/models.py `Action` (wire contract v1) without pydantic: the fixed fields are
checked, fields added in later minor versions are kept in `extra`, never refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

__all__ = ["CHANNELS", "LEGAL_BASES", "Action", "ActionError", "decode"]

CHANNELS = frozenset({"web", "mobile", "store", "call_center", "email", "sms", "social"})

try:  # orjson when installed (Touchflow's own codec), else the standard library
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads
    _JSON_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ActionError(ValueError):
    """An action record that does not match the contract; the message is one sentence that
    names the field (never its value, which may identify a customer)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One next-best action (wire contract v1). `action_id` is the de-duplication key: the same
    decision delivered twice has the same id; `expires_at` is when acting on it stops making
    sense; `reasons` explain the choice, most important first; `legal_basis` (consent,
    service, legitimate_interest) and `purpose` say on what ground the customer is contacted."""

    action_id: str
    customer_id: str
    action: str
    channel: str
    score: float
    reasons: tuple[str, ...]
    trigger_event_id: str
    rulebook_version: str
    decided_at: datetime
    expires_at: datetime
    payload: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    experiment: Mapping[str, str] | None = None
    legal_basis: str = "consent"
    purpose: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def expired(self, now: datetime) -> bool:
        """True once `now` (timezone-aware) is at or past `expires_at`."""
        return now >= self.expires_at


_STRINGS = ("action_id", "customer_id", "action", "trigger_event_id", "rulebook_version")
_KNOWN = frozenset((*_STRINGS, "channel", "score", "reasons", "decided_at", "expires_at",
                    "payload", "experiment", "legal_basis", "purpose"))
LEGAL_BASES = frozenset({"consent", "service", "legitimate_interest"})


def _string(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise ActionError(f"action has no {name!r}")
    if not isinstance(value, str) or not value:
        raise ActionError(f"action field {name!r} must be a non-empty string")
    return value


def _time(data: Mapping[str, Any], name: str) -> datetime:
    text = _string(data, name)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ActionError(f"action field {name!r} is not an ISO-8601 date-time") from None
    if value.tzinfo is None:
        raise ActionError(f"action field {name!r} has no UTC offset")
    return value


def decode(raw: bytes | bytearray | memoryview | str) -> Action:
    """The action in one record value; raises `ActionError` (one sentence) when it is not
    JSON, not an object, or a fixed field is missing or of the wrong type."""
    if isinstance(raw, memoryview | bytearray):
        raw = bytes(raw)
    try:
        data = _loads(raw)
    except _JSON_ERRORS:
        raise ActionError("action record is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise ActionError("action record is not a JSON object")
    strings = {name: _string(data, name) for name in _STRINGS}
    channel = _string(data, "channel")
    if channel not in CHANNELS:
        raise ActionError(f"action field 'channel' is not one of {', '.join(sorted(CHANNELS))}")
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise ActionError("action field 'score' must be a number")
    reasons = data.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ActionError("action field 'reasons' must be a list of strings")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        raise ActionError("action field 'payload' must be an object")
    experiment = data.get("experiment")
    if experiment is not None and (
            not isinstance(experiment, dict)
            or not all(isinstance(v, str) for v in experiment.values())):
        raise ActionError("action field 'experiment' must be an object of strings")
    legal_basis = data.get("legal_basis", "consent")
    if legal_basis not in LEGAL_BASES:
        raise ActionError("action field 'legal_basis' is not one of "
                          f"{', '.join(sorted(LEGAL_BASES))}")
    purpose = data.get("purpose")
    if purpose is not None and not isinstance(purpose, str):
        raise ActionError("action field 'purpose' must be a string")
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    return Action(
        channel=channel, score=float(score), reasons=tuple(reasons),
        decided_at=_time(data, "decided_at"), expires_at=_time(data, "expires_at"),
        payload=MappingProxyType(payload),
        experiment=MappingProxyType(experiment) if experiment is not None else None,
        legal_basis=legal_basis, purpose=purpose,
        extra=MappingProxyType(extra) if extra else _EMPTY, **strings,
    )
