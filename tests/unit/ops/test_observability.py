"""Metrics, readiness, the HTTP endpoints and the log formats of a worker."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from service.ops.health import Readiness, start_http
from service.ops.logs import ConsoleFormatter, JsonFormatter, configure_logging
from service.ops.metrics import Metrics

_ALLOWED_LABELS = {"channel", "type", "outcome", "action", "reason", "clock", "topic",
                   "partition", "agent", "version", "kind", "component"}
# prometheus_client's process, platform and GC collectors (process_*, python_*): their names
# and labels describe the interpreter, never a customer.
_STANDARD = ("process_", "python_")
_STANDARD_LABELS = {"generation", "implementation", "major", "minor", "patchlevel", "version"}


def test_metric_names_follow_conventions_and_labels_are_bounded() -> None:
    """Every metric is `touchflow_*` (or a standard process_*/python_* one); counters end in
    _total in the exposition; labels come from a fixed set that holds no customer identifier."""
    metrics = Metrics()
    metrics.events.labels("web", "page_viewed", "processed").inc()
    metrics.rulebook.info({"version": "v1+abc"})
    text = metrics.render().decode()
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{")[0].split(" ")[0]
        assert name.startswith(("touchflow_", *_STANDARD)), name
    assert 'touchflow_events_total{channel="web",outcome="processed",type="page_viewed"} 1.0' \
        in text
    for collector in metrics.registry._collector_to_names:
        for family in collector.collect():
            for sample in family.samples:
                allowed = _STANDARD_LABELS if sample.name.startswith(_STANDARD) else set()
                assert set(sample.labels) - {"le"} <= _ALLOWED_LABELS | allowed, sample


def test_readiness_follows_the_worker_lifecycle() -> None:
    """Not ready before start, before an assignment, while recovering, while a loop is
    crashed, and when stopping; ready otherwise; the gauge follows."""
    metrics = Metrics()
    readiness = Readiness(metrics)
    assert not readiness.is_ready()
    readiness.mark_started()
    assert readiness.reasons() == ["no partition assignment yet"]
    readiness.mark_assigned({0, 1})
    readiness.mark_recovering(1)
    assert not readiness.is_ready() and "recovering" in readiness.reasons()[0]
    readiness.mark_recovered(1)
    assert readiness.is_ready()
    assert metrics.registry.get_sample_value("touchflow_ready") == 1
    readiness.mark_crashed("worker", "KafkaTimeoutError")
    assert not readiness.is_ready()
    readiness.clear_crashed("worker")
    readiness.mark_revoked({0, 1})
    assert readiness.is_ready(), "an empty assignment after a rebalance is still ready"
    readiness.mark_stopping()
    assert readiness.reasons() == ["stopping"]
    assert metrics.registry.get_sample_value("touchflow_ready") == 0


async def test_http_endpoints_serve_metrics_health_and_readiness() -> None:
    """/metrics is Prometheus text, /healthz is 200, /readyz is 503 with reasons until ready
    and 200 after."""
    metrics = Metrics()
    readiness = Readiness()
    server = await start_http("127.0.0.1", 0, metrics, readiness)
    base = f"http://127.0.0.1:{server.port}"
    try:
        import asyncio

        def get(path: str) -> tuple[int, bytes, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    return response.status, response.read(), response.headers["Content-Type"]
            except urllib.error.HTTPError as error:
                return error.code, error.read(), error.headers["Content-Type"]

        status, body, kind = await asyncio.to_thread(get, "/metrics")
        assert status == 200 and b"touchflow_ready" in body and kind.startswith("text/plain")
        assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
        status, body, _ = await asyncio.to_thread(get, "/readyz")
        assert status == 503 and json.loads(body)["reasons"]
        readiness.mark_started()
        readiness.mark_assigned({0})
        status, body, _ = await asyncio.to_thread(get, "/readyz")
        assert status == 200 and json.loads(body) == {
            "ready": True, "reasons": [], "partitions": [0], "recovering": []}
    finally:
        await server.runner.cleanup()


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("service.stream.worker", logging.WARNING, __file__, 1, msg,
                               None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_log_lines_carry_level_event_and_context() -> None:
    """One JSON object per line: ts, level, logger, event, and every `extra` field."""
    line = JsonFormatter().format(_record("broker unreachable", attempt=3, error="refused"))
    body = json.loads(line)
    assert "\n" not in line
    assert body["level"] == "warning" and body["event"] == "broker unreachable"
    assert body["attempt"] == 3 and body["error"] == "refused" and body["ts"].endswith("Z")


def test_console_log_lines_are_readable() -> None:
    """`dev` lines: time, level, message, then key=value context."""
    line = ConsoleFormatter().format(_record("dead-lettered", reason="invalid_json"))
    assert "warning" in line and "dead-lettered" in line and "reason=invalid_json" in line


@pytest.mark.parametrize("level", ["info", "warning"])
def test_logging_never_turns_the_root_logger_to_debug(level: str) -> None:
    """The root logger follows the setting (Faust's DEBUG default costs >10 % CPU) and the
    client libraries stay at WARNING or quieter."""
    configure_logging(level, "json")
    try:
        assert logging.getLogger().level == logging.getLevelName(level.upper())
        assert logging.getLogger("aiokafka").level >= logging.WARNING
    finally:
        configure_logging("warning", "console")
