"""Factories for replay tests: small rulebooks (A and a stricter B) and event logs (events
from tests/events.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.events import log_line

ROOT = Path(__file__).resolve().parents[3]

# A: a callback once a customer's interest reaches 20 (two page views); B needs 30 (three).
RULEBOOK = """\
version: "{version}"
scores:
  interest:
    points:
      - when: {{type: page_viewed}}
        add: 10
      - when: {{type: pricing_viewed}}
        add: 15
actions:
  sales_callback:
    channel: call_center
    consent: exempt
    when:
      - {{score: interest, gte: {threshold}}}
    payload:
      topic: pricing
  newsletter:
    channel: email
    consent: exempt
    once: true
    when:
      - event: {{type: signed_up}}
arbitration:
  max_per_event: 2
"""


@pytest.fixture
def write_rulebook(tmp_path: Path) -> Callable[..., Path]:
    """Write a rulebook with the given version and callback threshold; return its path."""

    def write(version: str = "test-a", threshold: int = 20) -> Path:
        path = tmp_path / f"rulebook-{version}.yaml"
        path.write_text(RULEBOOK.format(version=version, threshold=threshold))
        return path

    return write


@pytest.fixture
def write_log(tmp_path: Path) -> Callable[..., Path]:
    """Write a seeded, realistic-enough log of `n` events over `customers` customers."""

    def write(n: int = 400, customers: int = 25, seed: int = 3, name: str = "log.jsonl",
              extra: list[bytes] | None = None) -> Path:
        rng = random.Random(seed)
        lines = []
        for i in range(n):
            etype = rng.choice(["page_viewed", "page_viewed", "pricing_viewed", "signed_up"])
            lines.append(log_line(f"e-{i}", f"c-{rng.randrange(customers)}", etype, minute=i))
        lines.extend(extra or [])
        path = tmp_path / name
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    return write
