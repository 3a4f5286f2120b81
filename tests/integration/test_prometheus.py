"""Metrics for real: Debian's Prometheus scrapes a worker that runs on the embedded broker with
simulated traffic, and every PromQL expression of the shipped dashboard and alert rules is
evaluated through Prometheus' HTTP API and must return data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.tools.embedded.broker import free_port
from service.tools.simulator import simulate
from tests.integration.conftest import ROOT, WorkerEnv, produce

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed "
                                "(apt-get install prometheus; CI installs it)")
DEPLOY = ROOT / "deploy"
_COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+\s*$")


def _signals(expr: str) -> list[str]:
    """The operands an alert compares: `a > 1000 and b > 0` gives `a` and `b`, so the test
    checks that every signal an alert watches has data (the thresholds are promtool's job);
    both sides of a comparison between two vectors are operands; `absent(x)` watches `x`."""
    clauses = re.split(r"\s+and(?:\s+on\s*\([^)]*\))?\s+", " ".join(expr.split()))
    out = []
    for clause in clauses:
        clause = _unwrap(_COMPARISON.sub("", clause))
        # a comparison of two vectors (`a >= on (l) b`): both sides are watched
        for side in re.split(r"\s+(?:==|!=|>=|<=|>|<)\s+(?:on\s*\([^)]*\)\s+)?", clause):
            if not re.fullmatch(r"[0-9.e+-]+", side):
                out.append(re.sub(r"^absent\((.*)\)$", r"\1", side))
    return out


def _unwrap(text: str) -> str:
    """`(x)` -> `x` when the first parenthesis closes at the end; anything else as is."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[1:-1] if index == len(text) - 1 else text
    return text


def _query(base: str, expr: str) -> list[Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/touchflow.json").read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"]
           for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        out.extend((f"rule {name}", signal) for signal in _signals(rule["expr"]))
    return out


def test_signals_split_alert_expressions() -> None:
    """The operand extraction keeps both sides of an `and`, drops the threshold, and looks
    inside `absent()`."""
    assert _signals("sum(a) > 1000\nand sum(deriv(a[10m])) > 0") == ["sum(a)",
                                                                     "sum(deriv(a[10m]))"]
    assert _signals("(x or vector(0)) == 0 and on () y > 0") == ["x or vector(0)", "y"]
    assert _signals('absent(up{job="touchflow"})') == ['up{job="touchflow"}']
    assert _signals("a > 0 and on (constraint) (b < 1)") == ["a", "b"]
    assert _signals("(s >= on (c) max(l)) and on (c) (t - p < 0.5 * q)") == [
        "s", "max(l)", "t - p", "0.5 * q"]


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
async def test_prometheus_scrapes_worker_and_every_panel_and_alert_has_data(
        worker_env: WorkerEnv, tmp_path: Path, runtime: str) -> None:
    """A real Prometheus scraping a real worker under simulated traffic (plus a few malformed
    messages) returns data for every dashboard query and every signal the alerts watch, under
    either runtime (the same metrics, lag and capacity included)."""
    # the default rulebook plus a capacity limit on web actions, so the capacity panel and
    # alert have their series too
    rules = tmp_path / "rulebook.yaml"
    rules.write_text((ROOT / "examples" / "default" / "rulebook.yaml").read_text()
                     + "\ncapacity:\n  web_budget:\n    channel: web\n    limit: 1000000\n"
                     "    per: 1d\n")
    worker_env.rules = rules
    worker = worker_env.start_worker(TOUCHFLOW_RUNTIME=runtime)
    base = worker_env.wait_ready(worker)
    target = base.removeprefix("http://")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    shutil.copy(DEPLOY / "prometheus/alerts.yml", tmp_path / "alerts.yml")
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yml")],
        "scrape_configs": [{"job_name": "touchflow",
                            "static_configs": [{"targets": [target]}]}],
    }))
    prom_log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],  # type: ignore[list-item]
        stdout=prom_log, stderr=subprocess.STDOUT)
    prom = f"http://127.0.0.1:{port}"
    bootstrap = worker_env.broker.bootstrap
    traffic = asyncio.create_task(simulate(bootstrap, worker_env.topic("events"), rate=400,
                                           seed=3, customers=300, limit=None))
    try:
        await produce(bootstrap, worker_env.topic("events"),
                      [b"not json", b'{"event_id": 1}', b"{}"])
        missing: list[str] = []
        deadline = time.monotonic() + 60
        expressions = _expressions()
        while time.monotonic() < deadline:
            await asyncio.sleep(2)
            try:
                missing = [f"{where}: {expr}" for where, expr in expressions
                           if not _query(prom, expr)]
            except OSError:
                missing = ["prometheus not answering yet"]
                continue
            if not missing:
                break
        assert not missing, "no data for:\n" + "\n".join(missing)
        up = _query(prom, 'up{job="touchflow"}')
        assert [sample["value"][1] for sample in up] == ["1"]
    finally:
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
        prometheus.terminate()
        prometheus.wait(10)
        prom_log.close()
        worker_env.stop(worker)
