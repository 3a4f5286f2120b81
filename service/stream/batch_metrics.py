"""The batch processor's Prometheus figures, counted once a batch is complete (never twice
for a batch processed again). Labels are bounded: event types the rulebook does not name
count as "other", and no label holds a customer identifier."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from service.stream.batch import BatchStats

if TYPE_CHECKING:
    from service.ops.metrics import Metrics

__all__ = ["BatchMetrics"]


class BatchMetrics:
    """Counts into `metrics`; `type_labels` are the event types that keep their own label."""

    def __init__(self, metrics: Metrics, type_labels: frozenset[str]) -> None:
        self.metrics = metrics
        self.type_labels = type_labels

    def count_decisions(self, decisions: list[dict[str, Any]]) -> None:
        """Suppressions, responses and conversions among a completed batch's records."""
        metrics = self.metrics
        for record in decisions:
            kind = record.get("kind")
            if kind == "action":
                if record.get("suppressed_by") is not None:  # suppressed or held out
                    metrics.suppressed.labels(
                        str(record.get("action")), str(record.get("suppressed_by"))
                    ).inc()
            elif kind == "response":
                metrics.responses.labels(str(record.get("action")), str(record.get("outcome")),
                                         str(record.get("arm"))).inc()
            elif kind == "attribution":
                metrics.conversions.labels(str(record.get("action")),
                                           str(record.get("arm"))).inc()
            elif kind == "erasure":
                metrics.erasures.labels(str(record.get("outcome"))).inc()

    def observe(
        self,
        stats: BatchStats,
        event_counts: Counter[tuple[str, str, str]],
        dead_reasons: Counter[str],
        actions: list[dict[str, Any]],
        clocks: list[tuple[int, int | None]],
        now: float,
    ) -> None:
        """A completed batch's events, dead letters, actions, latencies and size."""
        metrics = self.metrics
        labels = self.type_labels
        for (channel, etype, outcome), count in event_counts.items():
            label = etype if etype in labels else "other"  # the label set stays bounded
            metrics.events.labels(channel, label, outcome).inc(count)
        for reason, count in dead_reasons.items():
            metrics.deadletters.labels(reason).inc(count)
            metrics.events.labels("unknown", "unknown", "deadletter").inc(count)
        for action in actions:
            metrics.actions.labels(action["action"], action["channel"]).inc()
        histogram = metrics.event_to_action
        for event_ms, ingest_ms in clocks:
            histogram.labels("event_time").observe(max(0.0, now - event_ms / 1000))
            if ingest_ms:
                histogram.labels("ingest").observe(max(0.0, now - ingest_ms / 1000))
        metrics.batch_size.observe(stats.received)
        metrics.batch_seconds.observe(stats.seconds)
        metrics.last_batch.set(now)
