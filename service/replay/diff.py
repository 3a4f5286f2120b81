"""Decision-by-decision comparison of two rulebooks over the same events.

Both rulebooks see every event in the same order, each with its own profiles (exactly as two
production deployments would). Actions are matched by `(customer_id, trigger_event_id, action)`:
present only under A is *lost*, only under B is *gained*, under both with a different channel,
score, payload, reasons or expiry is *changed* (`action_id` and `rulebook_version` always
differ, so they are not compared). Every change keeps both explanations: the action with its
reasons, or the audit record that says why the other rulebook did not send it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from schemas.codec import dumps_line
from schemas.event import Event
from service.domain.context_table import ContextTable
from service.domain.decide import Outcome
from service.domain.rules import Rulebook
from service.replay.replayer import DEFAULT_PARTITIONS, Replayer
from service.replay.runner import ReplayResult, RunStats, Tick, counted, quiet_gc

__all__ = ["ActionDiff", "Change", "Comparison", "compare_stream", "explain", "format_table"]

MatchKey = tuple[str, str, str]
_COMPARED = ("channel", "score", "payload", "reasons", "expires_at", "experiment",
             "not_before")


def _key(record: Mapping[str, Any]) -> MatchKey:
    return (str(record.get("customer_id")), str(record.get("trigger_event_id")),
            str(record.get("action")))


def explain(action: Mapping[str, Any] | None, record: Mapping[str, Any] | None,
            error: str | None = None) -> dict[str, Any]:
    """One side of a change: what this rulebook did with the candidate and why."""
    if error is not None:
        return {"outcome": "error", "reasons": [error]}
    if action is not None:
        return {"outcome": "sent", "channel": action.get("channel"),
                "score": action.get("score"), "reasons": list(action.get("reasons") or []),
                "payload": action.get("payload"), "expires_at": action.get("expires_at"),
                **({"not_before": action["not_before"]} if "not_before" in action else {})}
    if record is not None:
        side: dict[str, Any] = {"outcome": record.get("outcome"),
                                "reasons": list(record.get("reasons") or [])}
        for name in ("suppressed_by", "channel", "score"):
            if record.get(name) is not None:
                side[name] = record[name]
        return side
    return {"outcome": "not_considered", "reasons": []}


def describe(side: Mapping[str, Any]) -> str:
    """One readable line for a side of a change."""
    outcome = str(side.get("outcome"))
    head = outcome
    if outcome == "sent":
        head = f"sent via {side.get('channel')}, score {side.get('score')}"
    elif side.get("suppressed_by"):
        head = f"{outcome} by {side['suppressed_by']}"
    elif outcome == "not_considered":
        head = "not a candidate (no rule fired)"
    reasons = "; ".join(str(r) for r in side.get("reasons") or [])
    return f"{head} - {reasons}" if reasons else head


@dataclass(slots=True)
class Change:
    """One decision that differs between the rulebooks."""

    kind: str  # gained | lost | changed
    customer_id: str
    trigger_event_id: str
    action: str
    occurred_at: str
    a: dict[str, Any]
    b: dict[str, Any]
    fields: list[str] = field(default_factory=list)
    seq: int = 0  # index of the trigger event in the input: changes are listed in input order

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "customer_id": self.customer_id,
                "trigger_event_id": self.trigger_event_id, "action": self.action,
                "occurred_at": self.occurred_at, "fields": self.fields,
                "a": self.a, "b": self.b}


@dataclass(slots=True)
class ActionDiff:
    """Per action name: how often each rulebook sent it, and what moved."""

    action: str
    count_a: int = 0
    count_b: int = 0
    gained: int = 0
    lost: int = 0
    changed: int = 0
    customers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Comparison:
    """The result of `compare_stream`: both runs' stats, the per-action table, the changes."""

    a: ReplayResult
    b: ReplayResult
    per_action: dict[str, ActionDiff] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    total_changes: int = 0
    customers: set[str] = field(default_factory=set)
    seconds: float = 0.0
    interrupted: bool = False

    def row(self, action: str) -> ActionDiff:
        diff = self.per_action.get(action)
        if diff is None:
            diff = self.per_action[action] = ActionDiff(action)
        return diff

    def add(self, change: Change) -> None:
        row = self.row(change.action)
        if change.kind == "gained":
            row.gained += 1
        elif change.kind == "lost":
            row.lost += 1
        else:
            row.changed += 1
        row.customers.add(change.customer_id)
        self.customers.add(change.customer_id)
        self.total_changes += 1
        self.changes.append(change)


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [name for name in _COMPARED if a.get(name) != b.get(name)]


def _step(replayer: Replayer, stats: RunStats, result: ReplayResult,
          event: Event) -> tuple[Outcome | None, str | None]:
    try:
        outcome = replayer.apply(event)
    except Exception as exc:
        stats.errors += 1
        message = f"decide() raised {type(exc).__name__}: {exc}"
        if len(result.decision_errors) < 1000:
            result.decision_errors.append(f"event {event.event_id}: {message}")
        return None, message
    if outcome.duplicate:
        if outcome.late:
            stats.late += 1
            stats.decisions += len(outcome.decisions)
            stats.observe(event, outcome)
        else:
            stats.duplicates += 1
        return None, None
    if outcome.effects is not None and outcome.effects.ignored:
        stats.ignored += 1
    else:
        stats.processed += 1
        if outcome.profile is None:
            stats.erased += 1
    stats.actions += len(outcome.actions)
    stats.decisions += len(outcome.decisions)
    stats.observe(event, outcome)
    return outcome, None


def compare_stream(
    events: Iterable[tuple[Event, bytes]],
    rulebook_a: Rulebook,
    rulebook_b: Rulebook,
    *,
    context: ContextTable | Mapping[str, Any] | None = None,
    changes_out: IO[bytes] | None = None,
    result_a: ReplayResult | None = None,
    tick: Tick | None = None,
    partitions: int = DEFAULT_PARTITIONS,
) -> Comparison:
    """Replay `events` under both rulebooks and collect every differing decision, in order.

    `result_a` (optional) is where bad input records were already being counted; the
    comparison's A side reuses it. `changes_out` receives every change as a JSON line, in
    input order, once the run is over (a one-sided action is only final at the end).
    """
    stats_a = RunStats(rulebook_version=rulebook_a.version)
    stats_b = RunStats(rulebook_version=rulebook_b.version)
    a = result_a if result_a is not None else ReplayResult(stats_a)
    a.stats = stats_a
    b = ReplayResult(stats_b)
    comparison = Comparison(a, b)
    run_a = Replayer(rulebook_a, context, partitions=partitions)
    run_b = Replayer(rulebook_b, context, partitions=partitions)
    pending: dict[str, dict[MatchKey, Change]] = {"lost": {}, "gained": {}}
    started = time.perf_counter()
    count = 0
    gc_quiet = contextlib.ExitStack()
    collector = gc_quiet.enter_context(quiet_gc())
    try:
        for count, event in counted(events, collector, tick):
            out_a, err_a = _step(run_a, stats_a, a, event)
            out_b, err_b = _step(run_b, stats_b, b, event)
            _compare_event(comparison, pending, event, count, (out_a, err_a), (out_b, err_b))
    except KeyboardInterrupt:
        comparison.interrupted = a.interrupted = b.interrupted = True
    finally:
        gc_quiet.close()
        stats_a.events = stats_b.events = count
        comparison.seconds = a.seconds = b.seconds = time.perf_counter() - started
    _settle(comparison, pending, changes_out)
    return comparison


_Side = tuple[Outcome | None, str | None]


def _compare_event(comparison: Comparison, pending: dict[str, dict[MatchKey, Change]],
                   event: Event, count: int, side_a: _Side, side_b: _Side) -> None:
    """Match one event's actions under A and B: count them, record a `changed` pair now,
    and hold each one-sided action (with the other side's reason) in `pending`."""
    out_a, err_a = side_a
    out_b, err_b = side_b
    acts_a = {_key(x): x for x in out_a.actions} if out_a is not None else {}
    acts_b = {_key(x): x for x in out_b.actions} if out_b is not None else {}
    for key, action in acts_a.items():
        comparison.row(key[2]).count_a += 1
        other = acts_b.get(key)
        if other is not None:
            fields = _differing(action, other)
            if fields:
                comparison.add(Change("changed", *key, event.occurred_at,
                                      explain(action, None), explain(other, None),
                                      fields, count))
    for key in acts_b:
        comparison.row(key[2]).count_b += 1
    only_a = [k for k in acts_a if k not in acts_b]
    only_b = [k for k in acts_b if k not in acts_a]
    if not (only_a or only_b):
        return
    records_a = {_key(r): r for r in out_a.decisions} if out_a is not None else {}
    records_b = {_key(r): r for r in out_b.decisions} if out_b is not None else {}
    for key in only_a:
        why_b = explain(None, records_b.get(key), err_b)
        _pend(comparison, pending, "lost", key, event, count,
              explain(acts_a[key], None), why_b)
    for key in only_b:
        why_a = explain(None, records_a.get(key), err_a)
        _pend(comparison, pending, "gained", key, event, count,
              why_a, explain(acts_b[key], None))


def _settle(comparison: Comparison, pending: dict[str, dict[MatchKey, Change]],
            changes_out: IO[bytes] | None) -> None:
    """At the end of the run: the one-sided actions still pending become changes, all
    changes go in input order, and `changes_out` receives them as JSON lines."""
    for kind in ("lost", "gained"):
        for change in pending[kind].values():
            comparison.add(change)
    comparison.changes.sort(key=lambda change: change.seq)
    if changes_out is not None:
        for change in comparison.changes:
            changes_out.write(dumps_line(change.to_dict()))


def _pend(comparison: Comparison, pending: dict[str, dict[MatchKey, Change]], kind: str,
          key: MatchKey, event: Event, seq: int, side_a: dict[str, Any],
          side_b: dict[str, Any]) -> None:
    """Hold a one-sided action until the end, in case the other rulebook sends the same
    (customer, trigger, action) on a later event; a late match becomes a `changed` or nothing."""
    other_kind = "gained" if kind == "lost" else "lost"
    earlier = pending[other_kind].pop(key, None)
    if earlier is None:
        pending[kind][key] = Change(kind, *key, event.occurred_at, side_a, side_b, [], seq)
        return
    sent_a = side_a if kind == "lost" else earlier.a
    sent_b = earlier.b if kind == "lost" else side_b
    fields = _differing(sent_a, sent_b)
    if fields:
        comparison.add(Change("changed", *key, earlier.occurred_at, sent_a, sent_b, fields,
                              earlier.seq))


def _signed(count: int, sign: str) -> str:
    return f"{sign}{count:,}" if count else "0"


def format_table(comparison: Comparison, *, limit: int = 50) -> str:
    """The human-readable diff: per-action table, then each changed decision, A beside B."""
    a, b = comparison.a.stats, comparison.b.stats
    lines = [
        f"A = {a.rulebook_version}   B = {b.rulebook_version}   "
        f"events {a.events:,}   actions A {a.actions:,}   actions B {b.actions:,}",
        "",
    ]
    header = ("action", "A", "B", "gained", "lost", "changed", "customers")
    rows = [header]
    for name in sorted(comparison.per_action):
        diff = comparison.per_action[name]
        rows.append((name, f"{diff.count_a:,}", f"{diff.count_b:,}", _signed(diff.gained, "+"),
                     _signed(diff.lost, "-"), f"{diff.changed:,}", f"{len(diff.customers):,}"))
    total = ("total", f"{a.actions:,}", f"{b.actions:,}",
             _signed(sum(r.gained for r in comparison.per_action.values()), "+"),
             _signed(sum(r.lost for r in comparison.per_action.values()), "-"),
             f"{sum(r.changed for r in comparison.per_action.values()):,}",
             f"{len(comparison.customers):,}")
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                            strict=True)]
        lines.append("  ".join(cells))
        if index == 0 or index == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if not comparison.total_changes:
        lines.append("No decision differs.")
        return "\n".join(lines) + "\n"
    lines.append(f"{comparison.total_changes:,} changed decisions "
                 f"({len(comparison.customers):,} customers)"
                 + (f", first {limit} shown:" if comparison.total_changes > limit else ":"))
    for change in comparison.changes[:limit]:
        extra = f" ({', '.join(change.fields)})" if change.fields else ""
        lines.append(f"  {change.kind.upper():8}{change.action}  {change.customer_id}  "
                     f"event {change.trigger_event_id}  at {change.occurred_at}{extra}")
        lines.append(f"      A: {describe(change.a)}")
        lines.append(f"      B: {describe(change.b)}")
    return "\n".join(lines) + "\n"
