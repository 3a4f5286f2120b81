"""Prometheus metrics of one worker, in their own registry.

Names follow Prometheus conventions (`touchflow_` prefix, base units in the name, `_total` on
counters). No label ever carries a customer identifier: labels are channels, event types,
outcomes, action ids, reasons, topics and partition numbers, all bounded sets.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    """Every metric the worker exports; one instance per process (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_* (resident memory, CPU, open fds), python_info and python_gc_*: the
        # default registry's collectors, registered on ours too (they read the process).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self._declare_outcomes(r)
        self._declare_batches(r)
        self._declare_state(r)
        self._declare_health(r)
        self._declare_capacity(r)
        self._declare_cache(r)

    def _declare_outcomes(self, r: CollectorRegistry) -> None:
        """What the events led to: outcomes, actions, suppressions, responses, signals."""
        self.events = Counter(
            "touchflow_events", "Events consumed, by channel, event type and outcome "
            "(processed, duplicate, late, ignored: dated before the customer's erasure, "
            "deadletter).",
            ["channel", "type", "outcome"], registry=r)
        self.actions = Counter(
            "touchflow_actions", "Next-best actions sent, by action id and channel.",
            ["action", "channel"], registry=r)
        self.suppressed = Counter(
            "touchflow_decisions_suppressed", "Eligible actions not sent, by action and "
            "the policy that suppressed them.", ["action", "reason"], registry=r)
        self.responses = Counter(
            "touchflow_responses", "Customer responses to actions (shown, accepted, declined, "
            "converted), by action and arm (treated, holdout).", ["action", "response", "arm"],
            registry=r)
        self.conversions = Counter(
            "touchflow_conversions_attributed", "Conversions credited to an action within the "
            "attribution window, by action and arm (treated, or holdout: the control group).",
            ["action", "arm"], registry=r)
        self.signals = Counter(
            "touchflow_signals_fired", "Cross-customer signals fired (e.g. product_issue), "
            "published to <prefix>.operations.", ["signal"], registry=r)
        self.deadletters = Counter(
            "touchflow_deadletters", "Messages sent to the dead-letter topic, by reason.",
            ["reason"], registry=r)

    def _declare_batches(self, r: CollectorRegistry) -> None:
        """How fast and how much: action delay, batch sizes and durations, consumer lag."""
        self.event_to_action = Histogram(
            "touchflow_event_to_action_seconds", "Delay from the event (clock=event_time) or "
            "from its arrival on the broker (clock=ingest) to the action being sent.",
            ["clock"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "touchflow_batch_events", "Messages per processed batch.",
            buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "touchflow_batch_duration_seconds", "Time to process one batch, durable effects "
            "included.", buckets=_SECONDS_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "touchflow_consumer_lag_messages", "Messages between the last committed offset "
            "and the fetch high watermark, per input partition (grows when commits fail).",
            ["topic", "partition"], registry=r)

    def _declare_state(self, r: CollectorRegistry) -> None:
        """What the worker holds: profiles, erasures, recovery progress, the rulebook."""
        self.profiles = Gauge(
            "touchflow_profiles", "Customer profiles held in the local store, per partition.",
            ["partition"], registry=r)
        self.erasures = Counter(
            "touchflow_erasures", "Erasure audit records: outcome=erased (a customer erased) "
            "or ignored (an input dated before its customer's erasure).", ["outcome"],
            registry=r)
        self.tombstones = Gauge(
            "touchflow_erasure_tombstones", "Erasure tombstones held, per partition (they "
            "expire after the rulebook's max lateness plus TOUCHFLOW_TOMBSTONE_MARGIN_S).",
            ["partition"], registry=r)
        self.recovery_remaining = Gauge(
            "touchflow_recovery_remaining_messages", "Changelog records still to read before "
            "a partition is ready.", ["partition"], registry=r)
        self.recovery_seconds = Histogram(
            "touchflow_recovery_duration_seconds", "Time to recover one partition from its "
            "changelog.", buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300), registry=r)
        self.rulebook = Info(
            "touchflow_rulebook", "The rulebook the worker decides with.", registry=r)

    def _declare_health(self, r: CollectorRegistry) -> None:
        """Whether the worker is well: readiness, crashes, late inputs, failed reads and
        commits; the labelled counters export zeros, so rate()/increase() work from start."""
        self.ready = Gauge(
            "touchflow_ready", "1 when partitions are assigned and their tables recovered.",
            registry=r)
        self.agent_crashes = Counter(
            "touchflow_agent_crashes", "Unexpected errors in a processing loop (it restarts).",
            ["agent"], registry=r)
        for agent in ("worker", "ingest", "decide"):  # export zeros, so rate()/increase() work
            self.agent_crashes.labels(agent)
        self.last_batch = Gauge(
            "touchflow_last_batch_timestamp_seconds", "Unix time of the last processed batch.",
            registry=r)
        self.context_late = Counter(
            "touchflow_context_late_records", "Context records valid from a time before an "
            "event this worker had already decided: those decisions did not see them, replay "
            "will. kind=reference: stock and other reference data (publish it before the "
            "events it governs); kind=signal: fired signals' pauses, late by nature.",
            ["kind"], registry=r)
        for kind in ("reference", "signal"):
            self.context_late.labels(kind)
        self.learning_late = Gauge(
            "touchflow_learning_late_responses", "Responses dated more than one epoch before "
            "a decision already made on their partition (they count from then on), per "
            "partition.", ["partition"], registry=r)
        self.background_failures = Counter(
            "touchflow_background_failures", "Failures of a background reader (component="
            "context: the reference data; signals: the signal aggregator); each is retried "
            "with backoff and puts a reason in /readyz until the reader works again.",
            ["component"], registry=r)
        for component in ("context", "signals"):
            self.background_failures.labels(component)
        self.commit_failures = Counter(
            "touchflow_commit_failures", "Offset commits that did not happen: reason=error "
            "(the coordinator did not take it), fenced (group membership may be lost), "
            "rebalance (the partitions moved; expected during rebalances).", ["reason"],
            registry=r)
        for reason in ("error", "fenced", "rebalance"):
            self.commit_failures.labels(reason)

    def _declare_capacity(self, r: CollectorRegistry) -> None:
        """Capacity limits across customers (service/domain/capacity.py), and the input
        partitions assigned to this worker (its share of them)."""
        self.capacity_spent = Gauge(
            "touchflow_capacity_spent", "Actions sent under a capacity limit in its current "
            "period (the newest this partition saw), per constraint and partition; sum over "
            "partitions for the constraint's total.", ["constraint", "partition"], registry=r)
        self.capacity_held = Gauge(
            "touchflow_capacity_held", "Quota a partition holds and has not spent yet, per "
            "constraint and partition (current period).", ["constraint", "partition"],
            registry=r)
        self.capacity_pool = Gauge(
            "touchflow_capacity_pool", "Quota not yet granted by the partition owning the "
            "constraint's current period. Remaining = sum(pool) + sum(held).",
            ["constraint", "partition"], registry=r)
        self.capacity_limit = Gauge(
            "touchflow_capacity_limit", "The rulebook's limit per period of each capacity "
            "constraint.", ["constraint"], registry=r)
        self.capacity_period_start = Gauge(
            "touchflow_capacity_period_start_seconds", "Event time (Unix) at which the "
            "current period of a constraint began, per constraint (0: a total limit).",
            ["constraint"], registry=r)
        self.capacity_period = Gauge(
            "touchflow_capacity_period_seconds", "Length of a capacity constraint's period "
            "(0: a total limit).", ["constraint"], registry=r)
        self.partitions_assigned = Gauge(
            "touchflow_partitions_assigned", "Input partitions assigned to this worker.",
            registry=r)

    def _declare_cache(self, r: CollectorRegistry) -> None:
        """The decoded-profile cache: its size and its evictions."""
        self.cache_bytes = Gauge(
            "touchflow_profile_cache_bytes", "Estimated heap bytes of the decoded profiles "
            "this worker caches (bounded by TOUCHFLOW_PROFILE_CACHE_BYTES).", registry=r)
        self.cache_evictions = Counter(
            "touchflow_profile_cache_evictions_total", "Profiles evicted from the cache to "
            "keep it under its bytes (read back from the store when their customer returns).",
            registry=r)

    def render(self) -> bytes:
        """The exposition text for a scrape."""
        return generate_latest(self.registry)
