"""Failures of the background readers show, on the real embedded broker: while the broker
they read is unreachable, each failure is counted in `touchflow_background_failures_total`,
`/readyz` answers 503 with the reader's reason, and once the broker is back the reason goes
and the worker is ready again (the reader retried on its own, with backoff)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.domain.rules import load_rulebook
from service.ops.health import Readiness, start_http
from service.ops.metrics import Metrics
from service.ops.settings import load_settings
from service.stream.context import ContextReader
from service.stream.signal_aggregator import SignalAggregator
from service.stream.topics import TopicNames, ensure_topics
from service.tools.embedded import EmbeddedBroker
from service.tools.embedded.broker import free_port

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("component", ["context", "signals"])
async def test_a_failing_reader_is_counted_and_not_ready_until_it_reads_again(
        component: str) -> None:
    """The context reader or the signal aggregator, started with its broker down: failures
    are counted under its component label, /readyz is 503 naming it, the ready gauge is 0;
    with the broker up on that port, it reconnects by itself, /readyz is 200 again, and the
    counter stops growing."""
    port = free_port()
    settings = load_settings(broker=f"kafka://127.0.0.1:{port}",
                             topic_prefix=f"t{uuid.uuid4().hex[:8]}",
                             app_id=f"app{uuid.uuid4().hex[:8]}")
    topics = TopicNames.from_settings(settings)
    metrics = Metrics()
    readiness = Readiness(metrics)
    readiness.mark_started()
    readiness.mark_assigned({0})  # (so that the reader is the only reason not to be ready)
    reader: ContextReader | SignalAggregator
    if component == "context":
        reader = ContextReader(settings, topics.context, metrics=metrics, readiness=readiness)
    else:
        rulebook = load_rulebook(EXAMPLES / "product_issue" / "rulebook.yaml")
        reader = SignalAggregator(settings, topics, rulebook, metrics, readiness)

    def failures() -> float:
        value = metrics.registry.get_sample_value("touchflow_background_failures_total",
                                                  {"component": component})
        return value or 0.0

    http = await start_http("127.0.0.1", 0, metrics, readiness)
    await reader.start()
    try:
        await _until(lambda: failures() >= 2, 30, "two failures")
        status, body = await asyncio.to_thread(_readyz, http.port)
        assert status == 503
        (reason,) = body["reasons"]
        assert reason.startswith(f"{component} failing: ") and "in a row" in reason
        assert metrics.registry.get_sample_value("touchflow_ready") == 0
        with EmbeddedBroker(port=port):
            await ensure_topics(settings, topics)
            await _until(readiness.is_ready, 60, "the reader to read again")
            status, body = await asyncio.to_thread(_readyz, http.port)
            assert (status, body["reasons"]) == (200, [])
            assert metrics.registry.get_sample_value("touchflow_ready") == 1
            settled = failures()
            await asyncio.sleep(2)
            assert failures() == settled
    finally:
        await reader.stop()
        await http.runner.cleanup()
