"""Fixtures of the decision-core tests (helpers live in replaykit.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas.event import Event
from service.domain import Rulebook, parse_rulebook
from tests.events import make_event


@pytest.fixture
def event() -> Callable[..., Event]:
    """The `make_event` factory."""
    return make_event


@pytest.fixture
def rulebook_from() -> Callable[[str], Rulebook]:
    """Compile rulebook text (dedent it first in the test)."""
    return lambda text: parse_rulebook(text, "test.yaml")
