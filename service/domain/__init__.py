"""The pure decision core: rulebook, profile, and `decide()` (no I/O, no clock, no globals).

May import `schemas` only (tests/unit/test_layers.py keeps it so). The names below are
imported on first use (PEP 562), so that importing one module of the core (a context table,
say) does not build the rulebook's pydantic models: `touchflow replay` starts its decoding
process before that cost (service/replay/decoder_process.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.domain.decide import Outcome, decide
    from service.domain.profile import Profile, ProfileFormatError
    from service.domain.rules import (
        Problem,
        Rulebook,
        RulebookError,
        load_rulebook,
        parse_rulebook,
    )

__all__ = [
    "Outcome",
    "Problem",
    "Profile",
    "ProfileFormatError",
    "Rulebook",
    "RulebookError",
    "decide",
    "load_rulebook",
    "parse_rulebook",
]

_HOMES = {
    "Outcome": "decide", "decide": "decide",
    "Profile": "profile", "ProfileFormatError": "profile",
    "Problem": "rules", "Rulebook": "rules", "RulebookError": "rules",
    "load_rulebook": "rules", "parse_rulebook": "rules",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
