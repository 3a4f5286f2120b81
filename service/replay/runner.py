"""Replay: the worker's per-event logic over a stream of events, in memory, event time only.

`Replayer.apply` does for one event exactly what `service.processor.Processor` does for a local
event: look up the profile by `event.key().encode()`, call the same `decide()`, skip the output
of a duplicate, keep the new profile (or forget it when erased), and turn a `decide()` failure
into a counted error instead of a crash. Nothing reads a clock, so the same log, rulebook and
context give byte-identical output run after run.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from schemas.codec import dumps_line
from schemas.event import Event, EventError, decode_event
from service.domain.decide import Outcome, decide
from service.domain.identity import (
    MAX_LINKS,
    alias_keys,
    merge_profiles,
    merge_record,
    plan_link,
    refusal_record,
)
from service.domain.learning import LearningState
from service.domain.profile import Profile
from service.domain.rules import Rulebook, load_rulebook
from service.domain.signals import SignalState
from service.gcpolicy import GcPolicy
from service.replay.reader import BadRecord, LogFile, OnBad, decode_lines

__all__ = [
    "DEFAULT_BENCH_RULES",
    "ReplayResult",
    "ReplayStep",
    "Replayer",
    "RunStats",
    "quiet_gc",
    "replay_events",
    "replay_file",
    "replay_stream",
    "run",
]

DEFAULT_BENCH_RULES = Path("examples/default/rulebook.yaml")
_BAD_KEEP = 1000
Tick = Callable[[int], None]


@dataclass(slots=True)
class RunStats:
    """What one rulebook did over a replay: the numbers behind the summary and the report."""

    rulebook_version: str = ""
    events: int = 0
    processed: int = 0
    duplicates: int = 0
    errors: int = 0
    actions: int = 0
    decisions: int = 0
    erased: int = 0
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "rulebook_version": self.rulebook_version,
            "events": self.events,
            "processed": self.processed,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "actions": self.actions,
            "decisions": self.decisions,
            "erased": self.erased,
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
    """The worker's garbage-collection regime for a replay (service/gcpolicy.py): survivors
    are frozen as the run goes, so the collector does not rescan millions of live profile
    objects; call `after_batch()` on the yielded policy every thousand events or so."""
    gc.collect()
    gc.freeze()
    policy = GcPolicy(collect_young=False)
    try:
        yield policy
    finally:
        policy.close()


class Replayer:
    """The profiles of one replay and the per-event step of the worker's processor."""

    def __init__(self, rulebook: Rulebook, context: Mapping[str, Any] | None = None) -> None:
        self.rulebook = rulebook
        self.context: Mapping[str, Any] = context if context is not None else {}
        self.profiles: dict[bytes, Profile] = {}
        learning = rulebook.policy.learning
        self.learning = LearningState(learning.refresh) if learning is not None else None
        self.signals: SignalState | None = None
        if rulebook.signals:
            # fired signals write into the context, as the worker's aggregator does
            self.context = dict(self.context)
            self.signals = SignalState(rulebook.signals, rulebook.version)

    def apply(self, event: Event) -> Outcome:
        """Decide one event against its profile and keep the new profile; `decide()`'s
        exceptions propagate (the caller counts them, as the worker dead-letters them).

        Identity links are applied at once, through the same pure steps the worker runs on
        the alias and canonical partitions (service/domain/identity.py)."""
        profiles = self.profiles
        canonical = event.key()
        key = canonical.encode()
        profile = profiles.get(key)
        fresh = False  # a profile made here, not yet kept
        if profile is not None and profile.redirect is not None:  # an alias: follow the merge
            canonical = self.resolve(canonical)
            key = canonical.encode()
            profile = profiles.get(key)
            if profile is None:
                profile, fresh = Profile(canonical), True
        learning = self.learning
        context = self.context if learning is None else learning.context(event.ts_ms,
                                                                         self.context)
        outcome = decide(profile, event, context, self.rulebook)
        if outcome.duplicate:
            return outcome
        if self.signals is not None:
            self._signal(event, outcome)
        if outcome.responses and learning is not None:
            learning.observe(outcome.responses)
        kept = outcome.profile
        if kept is None:
            erased = profiles.pop(key, None)
            for alias in (erased.links if erased is not None else ()):
                profiles.pop(alias.encode(), None)
            return outcome
        if fresh or kept is not profile:  # new (decide() updates a given one in place)
            profiles[key] = kept
        if event.type == "identified":
            for alias in alias_keys(event):
                self._link(alias, canonical, event, outcome)
        return outcome

    def _signal(self, event: Event, outcome: Outcome) -> None:
        """Count the event in its cross-customer signals; a firing goes to the operations
        output and into the context later events see (the event itself decided without it,
        as in the worker, where the signal arrives through the context topic)."""
        state = self.signals
        assert state is not None
        for name, group in state.feed(event):
            fired = state.observe(name, group, event.event_id, event.ts_ms)
            if fired is not None:
                outcome.operations = [*outcome.operations, fired.message]
                self.context[fired.context_key] = fired.context_value  # type: ignore[index]

    def resolve(self, key: str) -> str:
        """The profile key events under `key` are applied to (following merges)."""
        for _ in range(8):
            profile = self.profiles.get(key.encode())
            if profile is None or profile.redirect is None:
                return key
            key = profile.redirect
        return key

    def _link(self, alias: str, canonical: str, event: Event, outcome: Outcome) -> None:
        profiles = self.profiles
        rulebook = self.rulebook
        current = profiles[canonical.encode()]
        if alias in current.links:
            return
        if len(current.links) >= MAX_LINKS:
            outcome.decisions.append(refusal_record(
                canonical, current.customer_id, event.event_id, event.occurred_at, rulebook,
                f"identifier limit of {MAX_LINKS} reached; {alias.split(':', 1)[0]} not linked"))
            return
        plan = plan_link(alias, profiles.get(alias.encode()), canonical)
        if plan.kind == "refuse":
            outcome.decisions.append(refusal_record(
                canonical, current.customer_id, event.event_id, event.occurred_at, rulebook,
                plan.reason))
            return
        if plan.kind != "merge" or plan.redirect is None:
            return
        merged, changed = merge_profiles(current, alias, plan.history, rulebook)
        if not changed:
            return
        profiles[alias.encode()] = plan.redirect
        profiles[canonical.encode()] = merged
        outcome.decisions.append(
            merge_record(merged, alias, event.event_id, event.occurred_at, rulebook))


def replay_events(
    events: Iterable[Event], rulebook: Rulebook, context: Mapping[str, Any] | None = None
) -> Iterator[ReplayStep]:
    """Replay already-decoded events in order; yield one `ReplayStep` per event."""
    replayer = Replayer(rulebook, context)
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
    context: Mapping[str, Any] | None = None,
    output: IO[bytes] | None = None,
    audit: IO[bytes] | None = None,
    operations: IO[bytes] | None = None,
    result: ReplayResult | None = None,
    observe: bool = False,
    tick: Tick | None = None,
) -> ReplayResult:
    """Replay decoded `(event, raw)` pairs, writing actions (and audit records) as JSONL.

    `observe` fills the per-hour/score/suppression tallies the HTML report needs; `tick(n)` is
    called every 1024 events (progress). Ctrl-C ends the run early with `interrupted` set.
    """
    stats = RunStats(rulebook_version=rulebook.version)
    if result is None:
        result = ReplayResult(stats)
    else:
        result.stats = stats
    replayer = Replayer(rulebook, context)
    apply = replayer.apply
    write_action = output.write if output is not None else None
    write_audit = audit.write if audit is not None else None
    count = processed = duplicates = actions = decisions = erased = 0
    gc_quiet = contextlib.ExitStack()
    collector = gc_quiet.enter_context(quiet_gc())
    started = time.perf_counter()  # after quiet_gc's one full collection
    try:
        for event, _raw in events:
            count += 1
            if not count & 0x3FF:
                collector.after_batch()
                if tick is not None:
                    tick(count)
            try:
                outcome = apply(event)
            except Exception as exc:
                stats.errors += 1
                if len(result.decision_errors) < _BAD_KEEP:
                    result.decision_errors.append(
                        f"event {event.event_id}: decide() raised {type(exc).__name__}: {exc}"
                    )
                continue
            if outcome.duplicate:
                duplicates += 1
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
            if observe:
                stats.observe(event, outcome)
            elif outcome.actions:
                for action in outcome.actions:
                    stats.actions_by_name[str(action.get("action"))] += 1
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        gc_quiet.close()
        result.seconds = time.perf_counter() - started
        stats.events, stats.processed, stats.duplicates = count, processed, duplicates
        stats.actions, stats.decisions, stats.erased = actions, decisions, erased
    return result


def replay_file(
    path: str | Path,
    rulebook: Rulebook,
    *,
    context: Mapping[str, Any] | None = None,
    output: IO[bytes] | None = None,
    audit: IO[bytes] | None = None,
    operations: IO[bytes] | None = None,
    on_bad: OnBad | None = None,
    observe: bool = False,
    tick: Tick | None = None,
) -> ReplayResult:
    """Replay a JSONL (or gzip JSONL) log; bad lines are counted (and passed to `on_bad`)."""
    log = LogFile(path)
    result = ReplayResult(RunStats())

    def bad(record: BadRecord) -> None:
        result.on_bad(record)
        if on_bad is not None:
            on_bad(record)

    return replay_stream(
        decode_lines(log, bad, log.label), rulebook, context=context, output=output,
        audit=audit, operations=operations, result=result, observe=observe, tick=tick,
    )


class _Sink:
    """A write target that keeps the bytes in memory (the benchmark's output)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.write = self.parts.append


def run(
    events: list[bytes],
    rules_path: str | Path = DEFAULT_BENCH_RULES,
    context: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Benchmark entry: decode, decide and encode every action of `events` (raw JSON values)
    with the rulebook at `rules_path`, on this thread; return events, seconds, events/s."""
    rulebook = load_rulebook(rules_path)
    sink = _Sink()
    replayer = Replayer(rulebook, context)
    apply = replayer.apply
    write = sink.write
    gc_quiet = contextlib.ExitStack()
    collector = gc_quiet.enter_context(quiet_gc())
    started = time.perf_counter()  # after quiet_gc's one full collection
    for number, raw in enumerate(events):
        if not number & 0x3FF:
            collector.after_batch()
        try:
            event = decode_event(raw)
        except EventError:
            continue
        try:
            outcome = apply(event)
        except Exception:
            continue
        if not outcome.duplicate:
            for action in outcome.actions:
                write(dumps_line(action))
    seconds = time.perf_counter() - started
    gc_quiet.close()
    n = len(events)
    return {"events": n, "seconds": seconds, "events_per_s": n / seconds if seconds else 0.0,
            "actions": len(sink.parts)}
