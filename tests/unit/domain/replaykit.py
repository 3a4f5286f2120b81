"""Shared helpers of the decision-core tests: replaying event lists and examples (events
come from tests/events.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.event import Event, decode_event
from service.domain import Outcome, Profile, Rulebook, decide, load_rulebook
from service.domain.context_table import ContextTable
from service.replay.reader import BadRecord, load_context

__all__ = ["EXAMPLES", "Replay", "load_example", "run_events"]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@dataclass
class Replay:
    """Everything a replay produced, in order."""

    rulebook: Rulebook
    profiles: dict[str, Profile | None] = field(default_factory=dict)
    outcomes: list[tuple[Event, Outcome]] = field(default_factory=list)

    @property
    def actions(self) -> list[dict[str, Any]]:
        return [a for _, o in self.outcomes for a in o.actions]

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return [d for _, o in self.outcomes for d in o.decisions]

    def sent(self, customer: str) -> list[str]:
        """Action names sent to `customer`, in order."""
        return [a["action"] for a in self.actions if a["customer_id"] == customer]

    def audit(self, customer: str) -> list[tuple[str, str, str | None, str]]:
        """(trigger event, action, outcome, suppressed_by) for every decision record."""
        return [(d["trigger_event_id"], d["action"], d["outcome"], d["suppressed_by"])
                for d in self.decisions if d["customer_id"] == customer]

    def output_bytes(self) -> bytes:
        return b"".join(orjson.dumps([o.actions, o.decisions, o.duplicate])
                        for _, o in self.outcomes)


def run_events(rulebook: Rulebook, events: Iterable[Event],
               context: ContextTable | Mapping[str, Any] | None = None) -> Replay:
    """Apply `events` in order through decide(), keeping profiles by key like the worker;
    a `ContextTable` is read as of each event's time, as the worker and replay read it."""
    replay = Replay(rulebook)
    table = context if isinstance(context, ContextTable) else ContextTable.of(context or {})
    for event in events:
        key = event.key()
        outcome = decide(replay.profiles.get(key), event, table.as_of(event.ts_ms), rulebook)
        replay.profiles[key] = outcome.profile
        replay.outcomes.append((event, outcome))
    return replay


def load_example(name: str) -> tuple[Rulebook, list[Event], ContextTable]:
    """An example folder: rulebook.yaml, events.jsonl and the optional context.jsonl (read
    by replay's own reader, valid_from and all; a bad line fails the test)."""
    folder = EXAMPLES / name
    rulebook = load_rulebook(folder / "rulebook.yaml")
    events = [decode_event(line) for line in (folder / "events.jsonl").read_bytes().splitlines()
              if line.strip()]
    context_file = folder / "context.jsonl"
    if not context_file.exists():
        return rulebook, events, ContextTable()

    def bad(record: BadRecord) -> None:
        raise AssertionError(f"examples/{name}/context.jsonl: {record}")

    return rulebook, events, load_context(context_file, bad)
