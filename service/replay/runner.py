"""Replay runs: a log of events through `Replayer` (service/replay/replayer.py, the same
per-input step as the worker's processor), written as JSONL actions, audit records and
operations messages, with the tallies behind the summary and the report. Nothing reads a
clock, so the same log, rulebook and context give byte-identical output run after run.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from schemas.codec import dumps_line
from schemas.event import Event
from service.domain.capacity import Constraint
from service.domain.context_table import ContextTable
from service.domain.decide import Outcome
from service.domain.rules import Rulebook
from service.ops.gcpolicy import GcPolicy
from service.replay.funnel import FunnelTally
from service.replay.reader import BadRecord, LogFile, OnBad, decode_lines
from service.replay.replayer import DEFAULT_PARTITIONS, Replayer

__all__ = [
    "ReplayResult",
    "ReplayStep",
    "Replayer",
    "RunStats",
    "counted",
    "quiet_gc",
    "replay_events",
    "replay_file",
    "replay_stream",
]

_BAD_KEEP = 1000  # bad lines and failed decisions kept as examples for the report
Tick = Callable[[int], None]
Context = ContextTable | Mapping[str, Any] | None


@dataclass(slots=True)
class RunStats:
    """What one rulebook did over a replay: the numbers behind the summary and the report."""

    rulebook_version: str = ""
    events: int = 0
    processed: int = 0
    duplicates: int = 0
    late: int = 0
    errors: int = 0
    actions: int = 0
    decisions: int = 0
    erased: int = 0
    ignored: int = 0  # dated before their customer's erasure
    signals: int = 0
    actions_by_name: Counter[str] = field(default_factory=Counter)
    actions_by_channel: Counter[str] = field(default_factory=Counter)
    actions_by_hour: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    suppressed_by: Counter[str] = field(default_factory=Counter)
    candidate_scores: Counter[float] = field(default_factory=Counter)
    action_scores: Counter[float] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    funnel: FunnelTally = field(default_factory=FunnelTally)
    # capacity across customers: sent per constraint and period (its start, epoch ms)
    capacity_spent: dict[str, Counter[int]] = field(default_factory=dict)
    capacity_limits: dict[str, tuple[int, int]] = field(default_factory=dict)  # limit, period

    def observe(self, event: Event, outcome: Outcome) -> None:
        """Fold one event's outcome into the tallies (used for reports and comparisons)."""
        ts = event.ts_ms
        if self.first_ms is None or ts < self.first_ms:
            self.first_ms = ts
        if self.last_ms is None or ts > self.last_ms:
            self.last_ms = ts
        hour = ts // 3_600_000 * 3_600_000
        for action in outcome.actions:
            self.actions_by_name[str(action.get("action"))] += 1
            self.actions_by_channel[str(action.get("channel"))] += 1
            self.actions_by_hour[hour] += 1
            score = action.get("score")
            if isinstance(score, int | float):
                self.action_scores[round(float(score), 2)] += 1
        for record in outcome.decisions:
            result = str(record.get("outcome"))
            self.outcomes[result] += 1
            if record.get("suppressed_by"):
                self.suppressed_by[str(record["suppressed_by"])] += 1
            elif result in ("suppressed", "held_out"):
                self.suppressed_by[result] += 1
            score = record.get("score")
            if isinstance(score, int | float) and record.get("kind", "action") == "action":
                self.candidate_scores[round(float(score), 2)] += 1
        self.funnel.observe(event.key(), outcome.actions, outcome.decisions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rulebook_version": self.rulebook_version,
            "events": self.events,
            "processed": self.processed,
            "duplicates": self.duplicates,
            "late": self.late,
            "errors": self.errors,
            "actions": self.actions,
            "decisions": self.decisions,
            "erased": self.erased,
            "ignored": self.ignored,
            "signals": self.signals,
            "actions_by_name": dict(sorted(self.actions_by_name.items())),
        }


@dataclass(slots=True)
class ReplayStep:
    """One event's result: the outcome, or the error `decide()` raised (the worker
    dead-letters such an event with reason `decision_error`)."""

    event: Event
    outcome: Outcome | None
    error: str | None = None


@dataclass(slots=True)
class ReplayResult:
    """The summary of one replay run."""

    stats: RunStats
    bad_records: int = 0
    bad_reasons: Counter[str] = field(default_factory=Counter)
    bad_examples: list[BadRecord] = field(default_factory=list)
    decision_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    reruns: int = 0  # runs again with keys a decide() failure damaged rolled back (replayer.py)
    inexact: int = 0  # such keys left damaged: the log could not be read or written again
    state: Replayer | None = None  # the last run's replayer (every profile), when it ended

    @property
    def events_per_s(self) -> float:
        return self.stats.events / self.seconds if self.seconds > 0 else 0.0

    def on_bad(self, record: BadRecord) -> None:
        """Count a rejected input record (keeps the first ones as examples)."""
        self.bad_records += 1
        self.bad_reasons[record.reason] += 1
        if len(self.bad_examples) < _BAD_KEEP:
            self.bad_examples.append(record)


@contextlib.contextmanager
def quiet_gc() -> Iterator[GcPolicy]:
    """The worker's garbage-collection regime for a replay (service/ops/gcpolicy.py): survivors
    are frozen as the run goes, so the collector does not rescan millions of live profile
    objects; call `after_batch()` on the yielded policy every thousand events or so.

    Automatic collections are off for the run: a replayed event leaves no reference cycle
    (tests/unit/replay/test_runner.py replays every example to check it), so the young
    collections only rescanned live profiles, about 5 % of the replaying process's
    instructions; the policy's full collection every ten minutes still reclaims what a rare
    cycle (a `decide()` error's traceback) leaves."""
    gc.collect()
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    policy = GcPolicy(collect_young=False)
    try:
        yield policy
    finally:
        if enabled:
            gc.enable()
        policy.close()


def counted(events: Iterable[tuple[Event, bytes]], collector: GcPolicy, tick: Tick | None
            ) -> Iterator[tuple[int, Event]]:
    """Number `events` from 1; every 1024th lets the GC policy run and reports progress."""
    for count, (event, _raw) in enumerate(events, 1):
        if not count & 0x3FF:
            collector.after_batch()
            if tick is not None:
                tick(count)
        yield count, event


def replay_events(
    events: Iterable[Event], rulebook: Rulebook, context: Context = None, *,
    partitions: int = DEFAULT_PARTITIONS,
) -> Iterator[ReplayStep]:
    """Replay already-decoded events in order; yield one `ReplayStep` per event (a key a
    `decide()` failure damaged is not rolled back here: see `replay_stream`)."""
    replayer = Replayer(rulebook, context, partitions=partitions)
    apply = replayer.apply
    for event in events:
        try:
            outcome = apply(event)
        except Exception as exc:
            yield ReplayStep(event, None, f"decide() raised {type(exc).__name__}: {exc}")
            continue
        yield ReplayStep(event, outcome)


def replay_stream(
    events: Iterable[tuple[Event, bytes]],
    rulebook: Rulebook,
    *,
    context: Context = None,
    output: IO[bytes] | None = None,
    audit: IO[bytes] | None = None,
    operations: IO[bytes] | None = None,
    result: ReplayResult | None = None,
    observe: bool = False,
    tick: Tick | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    again: Callable[[], Iterable[tuple[Event, bytes]]] | None = None,
) -> ReplayResult:
    """Replay decoded `(event, raw)` pairs, writing actions (and audit records) as JSONL.

    `observe` fills the per-hour/score/suppression tallies the HTML report needs; `tick(n)` is
    called every 1024 events (progress). Ctrl-C ends the run early with `interrupted` set.
    `partitions`: the worker's partition count (learned tallies are per partition).

    When `decide()` raised on a customer not known to fail (replayer.py), the run is repeated
    with that customer's profile copied before each event, so the failed events leave no
    trace, as in the worker: `again()` gives the events anew, and the outputs are rewound
    (they must be seekable files). Without either, `result.inexact` counts such customers.
    """
    if result is None:
        result = ReplayResult(RunStats(rulebook_version=rulebook.version))
    bad_state = (result.bad_records, Counter(result.bad_reasons), len(result.bad_examples))
    outputs = [handle for handle in (output, audit, operations) if handle is not None]
    marks = _positions(outputs)
    risky: set[bytes] = set()
    while True:
        replayer = Replayer(rulebook, context, partitions=partitions)
        replayer.risky = set(risky)
        _run_once(events, replayer, result, output, audit, operations, observe, tick)
        result.state = replayer
        damaged = replayer.tainted - risky
        if not damaged or result.interrupted:
            return result
        if again is None or marks is None:
            result.inexact = len(damaged)
            return result
        risky |= damaged
        result.reruns += 1
        for handle, mark in zip(outputs, marks, strict=True):
            handle.seek(mark)
            handle.truncate()
        result.bad_records, result.bad_reasons = bad_state[0], Counter(bad_state[1])
        del result.bad_examples[bad_state[2]:]
        result.decision_errors.clear()
        events = again()


def _positions(outputs: list[IO[bytes]]) -> list[int] | None:
    """Where each output starts (to rewind it for a second run), None if one cannot seek."""
    try:
        if all(getattr(handle, "seekable", lambda: False)() for handle in outputs):
            return [handle.tell() for handle in outputs]
    except (OSError, ValueError):
        pass
    return None


def _run_once(events: Iterable[tuple[Event, bytes]], replayer: Replayer, result: ReplayResult,
              output: IO[bytes] | None, audit: IO[bytes] | None,
              operations: IO[bytes] | None, observe: bool, tick: Tick | None) -> None:
    stats = result.stats = RunStats(rulebook_version=replayer.rulebook.version)
    apply = replayer.apply
    write_action = output.write if output is not None else None
    write_audit = audit.write if audit is not None else None
    count = processed = duplicates = late = actions = decisions = erased = ignored = 0
    limits = list(replayer.rulebook.capacity.values())
    groups = {name: spec.group for name, spec in replayer.rulebook.model.actions.items()}
    for constraint in limits:
        stats.capacity_spent[constraint.name] = Counter()
        stats.capacity_limits[constraint.name] = (constraint.limit, constraint.period_ms)
    gc_quiet = contextlib.ExitStack()
    collector = gc_quiet.enter_context(quiet_gc())
    started = time.perf_counter()  # after quiet_gc's one full collection
    try:
        for count, event in counted(events, collector, tick):  # noqa: B007 (read after it)
            try:
                outcome = apply(event)
            except Exception as exc:
                stats.errors += 1
                if len(result.decision_errors) < _BAD_KEEP:
                    result.decision_errors.append(
                        f"event {event.event_id}: decide() raised {type(exc).__name__}: {exc}"
                    )
                continue
            skipped = outcome.duplicate or (outcome.effects is not None
                                            and outcome.effects.forward is not None)
            if skipped and not outcome.late:
                duplicates += 1
                continue
            # dropped for lateness, or dated before its customer's erasure: counted apart,
            # the audit record kept
            if skipped or (outcome.effects is not None and outcome.effects.ignored):
                if skipped:
                    late += 1
                else:
                    ignored += 1
                decisions += len(outcome.decisions)
                if write_audit is not None:
                    for record in outcome.decisions:
                        write_audit(dumps_line(record))
                if observe:
                    stats.observe(event, outcome)
                continue
            processed += 1
            if outcome.profile is None:
                erased += 1
            if outcome.actions:
                actions += len(outcome.actions)
                if write_action is not None:
                    for action in outcome.actions:
                        write_action(dumps_line(action))
            if outcome.decisions:
                decisions += len(outcome.decisions)
                if write_audit is not None:
                    for record in outcome.decisions:
                        write_audit(dumps_line(record))
            if outcome.operations:
                stats.signals += len(outcome.operations)
                if operations is not None:
                    for message in outcome.operations:
                        operations.write(dumps_line(message))
            if limits and outcome.actions:
                _count_capacity(stats, limits, groups, event.ts_ms, outcome.actions)
            if observe:
                stats.observe(event, outcome)
            elif outcome.actions:
                for action in outcome.actions:
                    stats.actions_by_name[str(action.get("action"))] += 1
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        gc_quiet.close()
        result.seconds += time.perf_counter() - started
        stats.events, stats.processed, stats.duplicates = count, processed, duplicates
        stats.late = late
        stats.actions, stats.decisions, stats.erased = actions, decisions, erased
        stats.ignored = ignored


def _count_capacity(stats: RunStats, limits: list[Constraint], groups: dict[str, str | None],
                    ts_ms: int, actions: Sequence[dict[str, Any]]) -> None:
    """Count sent actions against the capacity constraints covering them (the report's
    spent-vs-limit chart)."""
    for action in actions:
        name, channel = str(action.get("action")), str(action.get("channel"))
        for constraint in limits:
            if constraint.covers(name, groups.get(name), channel):
                stats.capacity_spent[constraint.name][
                    constraint.period(ts_ms) * constraint.period_ms] += 1


def replay_file(
    path: str | Path,
    rulebook: Rulebook,
    *,
    context: Context = None,
    output: IO[bytes] | None = None,
    audit: IO[bytes] | None = None,
    operations: IO[bytes] | None = None,
    on_bad: OnBad | None = None,
    observe: bool = False,
    tick: Tick | None = None,
    partitions: int = DEFAULT_PARTITIONS,
) -> ReplayResult:
    """Replay a JSONL (or gzip JSONL) log; bad lines are counted (and passed to `on_bad`)."""
    log = LogFile(path)
    result = ReplayResult(RunStats())

    def bad(record: BadRecord) -> None:
        result.on_bad(record)
        if on_bad is not None and not result.reruns:  # reported once, not again per run
            on_bad(record)

    def events() -> Iterable[tuple[Event, bytes]]:
        return decode_lines(log, bad, log.label)

    return replay_stream(
        events(), rulebook, context=context, output=output, audit=audit,
        operations=operations, result=result, observe=observe, tick=tick,
        partitions=partitions, again=events,
    )
