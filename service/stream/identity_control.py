"""Identity control records on the repartition topic: how the processor tells them from
forwarded events. What they do is the per-input step's (service/domain/step.py); the protocol
is described in service/domain/identity.py."""

from __future__ import annotations

from schemas.vocabulary import IDENTITY_CONTROL_KINDS
from service.stream.batch import Record

__all__ = ["CONTROL_HEADER", "control_kind"]

CONTROL_HEADER = "tf-ctl"
# identity control records, and quota records (service/domain/capacity.py)
_KINDS = {kind.encode(): kind for kind in (*IDENTITY_CONTROL_KINDS, "capacity")}


def control_kind(message: Record) -> str | None:
    """"link"/"merge"/"erase" for identity control records on the repartition topic."""
    for name, value in message.headers:
        if name == CONTROL_HEADER:
            return _KINDS.get(value)
    return None
