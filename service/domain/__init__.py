"""The pure decision core: rulebook, profile, and `decide()` (no I/O, no clock, no globals).

May import `schemas` only (tests/unit/test_layers.py keeps it so)."""

from service.domain.decide import Outcome, decide
from service.domain.profile import Profile, ProfileFormatError
from service.domain.rules import Problem, Rulebook, RulebookError, load_rulebook, parse_rulebook

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
