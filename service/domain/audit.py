"""Audit records on `<prefix>.decisions`: the one builder of the dict that schemas/models.py
`DecisionRecord` describes, used by every module of the core that writes one (arbitration,
erasure, late events, responses, attribution, identity links).

The fields come out in one order whoever builds the record, so a record's bytes depend only on
what was decided. The decision id is the caller's: each kind digests what makes it unique.
"""

from __future__ import annotations

from typing import Any

from schemas.vocabulary import Arm, RecordKind, RecordOutcome

__all__ = ["audit_record"]


def audit_record(decision_id: str, kind: RecordKind, customer_id: str, trigger_event_id: str,
                 rulebook_version: str, decided_at: str, outcome: RecordOutcome,
                 reasons: list[str], *, action: str | None = None, channel: str | None = None,
                 action_id: str | None = None, suppressed_by: str | None = None,
                 score: float | None = None, arm: Arm | None = None) -> dict[str, Any]:
    """One audit record: the fields every record carries, `arm` only when given (responses
    and attributions). Kind-specific fields (legal basis, experiment, skipped channels) are
    added by the caller after these."""
    record: dict[str, Any] = {
        "decision_id": decision_id,
        "kind": kind,
        "customer_id": customer_id,
        "trigger_event_id": trigger_event_id,
        "rulebook_version": rulebook_version,
        "decided_at": decided_at,
        "outcome": outcome,
        "action": action,
        "channel": channel,
        "action_id": action_id,
        "suppressed_by": suppressed_by,
        "score": score,
    }
    if arm is not None:
        record["arm"] = arm
    record["reasons"] = reasons
    return record
