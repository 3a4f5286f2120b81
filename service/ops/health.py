"""Liveness, readiness and the HTTP endpoint that serves them with the metrics.

`/healthz` answers 200 while the process runs its event loop. `/readyz` answers 200 only once
the worker has started, holds an assignment, every assigned partition is recovered from its
changelog, no processing loop is crashed, no background reader (context, signals) is failing,
offset commits are not failing in a row, and it is not stopping; otherwise 503 with the
reason as JSON, so a load balancer or Kubernetes probe and a person read the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from schemas.codec import dumps
from service.ops.metrics import CONTENT_TYPE, Metrics

__all__ = ["HttpServer", "Readiness", "start_http"]


class Readiness:
    """The worker's readiness, updated by the runtime as partitions come and go."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self.started = False
        self.stopping = False
        self.assigned: set[int] = set()
        self.recovering: set[int] = set()
        self.crashed: dict[str, str] = {}
        self.failing: dict[str, str] = {}  # a background reader or the commits, and why
        self._has_assignment = False

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if self.is_ready() else 0)

    def mark_started(self) -> None:
        self.started = True
        self._publish()

    def mark_assigned(self, partitions: set[int]) -> None:
        self.assigned |= set(partitions)
        self._has_assignment = True
        self._publish()

    def mark_revoked(self, partitions: set[int]) -> None:
        self.assigned -= set(partitions)
        self.recovering -= set(partitions)
        self._publish()

    def mark_recovering(self, partition: int) -> None:
        self.recovering.add(partition)
        self._publish()

    def mark_recovered(self, partition: int) -> None:
        self.recovering.discard(partition)
        self._publish()

    def mark_crashed(self, agent: str, reason: str) -> None:
        self.crashed[agent] = reason
        self._publish()

    def clear_crashed(self, agent: str) -> None:
        if self.crashed.pop(agent, None) is not None:
            self._publish()

    def mark_failing(self, component: str, reason: str) -> None:
        """A component that keeps the worker's decisions right (the context reader, the
        signal aggregator, offset commits) fails and is retrying: not ready until it works."""
        if self.failing.get(component) != reason:
            self.failing[component] = reason
            self._publish()

    def clear_failing(self, component: str) -> None:
        if self.failing.pop(component, None) is not None:
            self._publish()

    def mark_stopping(self) -> None:
        self.stopping = True
        self._publish()

    def is_ready(self) -> bool:
        return not self.reasons()

    def reasons(self) -> list[str]:
        """Why the worker is not ready; empty when it is."""
        reasons: list[str] = []
        if not self.started:
            reasons.append("not started: waiting for the broker")
        if self.stopping:
            reasons.append("stopping")
        if self.started and not self._has_assignment:
            reasons.append("no partition assignment yet")
        if self.recovering:
            reasons.append(f"recovering partitions {sorted(self.recovering)}")
        for agent, reason in sorted(self.crashed.items()):
            reasons.append(f"{agent} crashed ({reason}), restarting")
        for component, reason in sorted(self.failing.items()):
            reasons.append(f"{component} failing: {reason}")
        return reasons

    def status(self) -> dict[str, Any]:
        reasons = self.reasons()
        return {
            "ready": not reasons,
            "reasons": reasons,
            "partitions": sorted(self.assigned),
            "recovering": sorted(self.recovering),
        }


@dataclass
class HttpServer:
    """A started HTTP endpoint; `await runner.cleanup()` stops it."""

    runner: web.AppRunner
    port: int


async def start_http(host: str, port: int, metrics: Metrics, readiness: Readiness) -> HttpServer:
    """Serve /metrics, /healthz and /readyz; port 0 picks a free one."""

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"alive":true}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        status = readiness.status()
        return web.Response(body=dumps(status), content_type="application/json",
                            status=200 if status["ready"] else 503)

    if readiness._metrics is None:
        readiness._metrics = metrics
    readiness._publish()
    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = port
    sockets = getattr(server, "sockets", None)
    if sockets:
        bound = int(sockets[0].getsockname()[1])
    return HttpServer(runner=runner, port=bound)
