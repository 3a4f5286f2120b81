"""The decision funnel per action and the customers who received nothing, tallied over a
replay for the HTML report (service/replay/html_funnel.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NO_CANDIDATE", "POLICY_ORDER", "FunnelTally"]

# The order service/domain/policy.py checks a candidate in; each records the first that stops it.
POLICY_ORDER = ("context", "once_only", "cooldown", "no_consent", "objection", "quiet_hours",
                "arbitration", "contact_cap", "experiment_holdout")
NO_CANDIDATE = "no eligible action"


@dataclass(slots=True)
class FunnelTally:
    """Per action: candidates (eligible), how many each policy removed, how many were sent.
    Per customer (the profile key the events name): events, whether any action was sent, and
    for each event that sent nothing, why: the policy that stopped its best-ranked candidate
    (audit records come in rank order; the others were often stopped only because of it, e.g.
    by `arbitration` after a holdout), or `NO_CANDIDATE`."""

    by_action: dict[str, Counter[str]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    reached: set[str] = field(default_factory=set)
    stopped: dict[str, Counter[str]] = field(default_factory=dict)

    def observe(self, customer: str, actions: Sequence[Mapping[str, Any]],
                decisions: Sequence[Mapping[str, Any]]) -> None:
        """Fold one event's actions and audit records in (`customer`: the event's key)."""
        self.events[customer] += 1
        if actions:
            self.reached.add(customer)
            self.stopped.pop(customer, None)  # only the unreached need their reasons
        best: str | None = None  # what stopped the event's best-ranked candidate
        for record in decisions:
            if record.get("kind", "action") != "action":
                continue
            name = str(record.get("action"))
            counts = self.by_action.get(name)
            if counts is None:
                counts = self.by_action[name] = Counter()
            counts["eligible"] += 1
            policy = record.get("suppressed_by")
            if record.get("outcome") == "sent":
                counts["sent"] += 1
            elif policy:
                counts[str(policy)] += 1
                if best is None:
                    best = str(policy)
        if not actions and customer not in self.reached:
            self.stopped.setdefault(customer, Counter())[best or NO_CANDIDATE] += 1

    def policies(self) -> list[str]:
        """The policies that removed anything, in the order they are checked (unknown ones
        after, by name)."""
        seen = {p for counts in self.by_action.values() for p in counts} - {"eligible", "sent"}
        return [p for p in POLICY_ORDER if p in seen] + sorted(seen - set(POLICY_ORDER))

    def unreached(self) -> list[tuple[str, int, str]]:
        """(customer, events, most common reason) of each customer no action was sent to,
        most events first; the reason is the most common over their events (see above)."""
        out = []
        for customer, count in self.events.items():
            if customer in self.reached:
                continue
            out.append((customer, count, _most_common(self.stopped[customer])))
        out.sort(key=lambda row: (-row[1], row[0]))
        return out


def _most_common(counts: Counter[str]) -> str:
    """The most frequent key; ties go to the policy checked first (then by name)."""
    rank = {p: i for i, p in enumerate(POLICY_ORDER)}
    return min(counts, key=lambda p: (-counts[p], rank.get(p, len(rank)), p))
