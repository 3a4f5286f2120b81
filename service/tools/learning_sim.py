"""A simulated population for the `learning` example: customers whose true acceptance rate
differs per offer answer the engine's offers, and the engine learns from their answers.

The simulation is a closed loop: each `app_opened` goes through the replay engine (the same
`decide()` as the worker); the customer accepts the offer it got with that offer's true rate
(seeded), and the answer is logged as an `action_response` event one minute later. A customer
who accepted buys in the store within a day with probability `BUY_AFTER_ACCEPT`; any other
customer who opened the app (declined, or held out by the global control group) buys with the
baseline probability `BUY_BASELINE`. The log it writes replays to the same decisions, byte for
byte (`touchflow replay`), and `touchflow report` reads the uplift off the audit records.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.codec import dumps, dumps_line
from schemas.event import Event, decode_event
from service.domain.rules import load_rulebook
from service.replay.runner import Replayer

__all__ = ["TRUE_RATES", "LearningRun", "simulate_learning"]

TRUE_RATES = {"offer_coffee": 0.06, "offer_discount": 0.12, "offer_points": 0.30}
BUY_AFTER_ACCEPT = 0.5
BUY_BASELINE = 0.04
_START = datetime(2026, 3, 2, 8, tzinfo=UTC)


@dataclass
class LearningRun:
    """What the simulation did: the log, and the offers sent and accepted in order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    held_out: int = 0

    def acceptance(self, part: slice = slice(None)) -> float:
        answers = self.accepted[part]
        return sum(answers) / len(answers) if answers else 0.0

    def shares(self, part: slice = slice(None)) -> dict[str, float]:
        counts = Counter(self.sent[part])
        total = sum(counts.values()) or 1
        return {name: counts.get(name, 0) / total for name in TRUE_RATES}

    def uniform_rate(self) -> float:
        return sum(TRUE_RATES.values()) / len(TRUE_RATES)


def simulate_learning(rules: Path, *, opens: int = 4000, customers: int = 1500,
                      seed: int = 5) -> LearningRun:
    """Run the closed loop for `opens` app opens; deterministic for a seed."""
    rng = random.Random(seed)
    replayer = Replayer(load_rulebook(rules))
    run = LearningRun()
    pending: list[dict[str, Any]] = []  # purchases, logged when their time comes
    at = _START
    for number in range(opens):
        at += timedelta(seconds=rng.randint(20, 120))
        customer = f"l-{rng.randrange(customers):05d}"
        opened = {"event_id": f"open-{number}", "occurred_at": at.isoformat(),
                  "channel": "mobile", "type": "app_opened",
                  "identity": {"customer_id": customer}, "properties": {}}
        run.events.append(opened)
        outcome = replayer.apply(_event(opened))
        held = [d for d in outcome.decisions if d.get("outcome") == "held_out"]
        run.held_out += len(held)
        buys = bool(held) and rng.random() < BUY_BASELINE
        for action in outcome.actions:
            accepted = rng.random() < TRUE_RATES[action["action"]]
            run.sent.append(action["action"])
            run.accepted.append(accepted)
            response = {"event_id": f"resp-{number}",
                        "occurred_at": (at + timedelta(minutes=1)).isoformat(),
                        "channel": "mobile", "type": "action_response",
                        "identity": {"customer_id": customer},
                        "properties": {"action_id": action["action_id"],
                                       "response": "accepted" if accepted else "declined"}}
            run.events.append(response)
            replayer.apply(_event(response))
            buys = rng.random() < (BUY_AFTER_ACCEPT if accepted else BUY_BASELINE)
        if buys:
            bought = {"event_id": f"buy-{number}",
                      "occurred_at": (at + timedelta(minutes=rng.randint(5, 1440))).isoformat(),
                      "channel": "store", "type": "purchase",
                      "identity": {"customer_id": customer},
                      "properties": {"amount": 12.5, "store_id": "s-1"}}
            pending.append(bought)
        while pending and pending[0]["occurred_at"] <= at.isoformat():
            replayer.apply(_event(pending[0]))
            run.events.append(pending.pop(0))
        pending.sort(key=lambda e: e["occurred_at"])
    for bought in pending:
        replayer.apply(_event(bought))
        run.events.append(bought)
    return run


def _event(body: dict[str, Any]) -> Event:
    return decode_event(dumps(body))


def report(run: LearningRun) -> str:
    """A short text table: offer shares early vs late, acceptance vs uniform choice."""
    quarter = max(1, len(run.sent) // 4)
    early, late = run.shares(slice(0, quarter)), run.shares(slice(-quarter, None))
    lines = ["offer            true rate  share (first quarter)  share (last quarter)"]
    for name, rate in TRUE_RATES.items():
        lines.append(f"{name:<16} {rate:9.2f}  {early[name]:21.2f}  {late[name]:20.2f}")
    lines.append(f"acceptance: {run.acceptance():.3f} overall, "
                 f"{run.acceptance(slice(-quarter, None)):.3f} in the last quarter; "
                 f"uniform choice would give {run.uniform_rate():.3f}")
    return "\n".join(lines)


def main() -> None:
    """`python -m service.tools.learning_sim`: regenerate examples/learning/events.jsonl."""
    folder = Path(__file__).resolve().parents[2] / "examples" / "learning"
    run = simulate_learning(folder / "rulebook.yaml")
    (folder / "events.jsonl").write_bytes(
        b"".join(dumps_line(e) for e in run.events))
    print(report(run))


if __name__ == "__main__":
    main()
