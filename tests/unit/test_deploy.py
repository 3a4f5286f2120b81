"""The shipped deployment files, checked as far as can be done offline: promtool validates and
unit-tests the alert rules; compose, Kubernetes and Grafana files parse and agree with the
settings and metrics the service really has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(apt-get install prometheus; CI installs it)")


def _yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _metric_families() -> set[str]:
    """Every sample name the worker can export (counters get _total, histograms _bucket...)."""
    metrics = Metrics()
    names: set[str] = set()
    for collector in list(metrics.registry._collector_to_names):
        for family in collector.describe():
            names.add(family.name)
            kind = family.type
            if kind == "counter":
                names.add(family.name + "_total")
            elif kind == "histogram":
                names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
            elif kind == "info":
                names.add(family.name + "_info")
    return names


def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(touchflow_[a-z_]+)\b", expr))


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    """`promtool check rules` passes on deploy/prometheus/alerts.yml."""
    result = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"],  # type: ignore[list-item]
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_fire_when_they_should() -> None:
    """`promtool test rules` runs the alert unit tests (each alert fires on its symptom and
    stays quiet otherwise)."""
    result = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"],  # type: ignore[list-item]
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_documented() -> None:
    """Each alert has a promtool test case and a runbook entry in the README."""
    alerts = [rule["alert"] for group in _yaml_docs(DEPLOY / "prometheus/alerts.yml")[0]["groups"]
              for rule in group["rules"] if "alert" in rule]
    tests = (DEPLOY / "prometheus/alerts_test.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert len(alerts) >= 5
    for alert in alerts:
        assert f"alertname: {alert}" in tests, alert
        assert alert in readme, f"{alert} has no runbook entry in README.md"


def test_dashboard_and_alerts_only_use_metrics_the_worker_exports() -> None:
    """Every touchflow_* name in the dashboard and the alert rules exists in service/metrics.py
    (a renamed metric would silently blank a panel or disarm an alert)."""
    exported = _metric_families()
    dashboard = json.loads((DEPLOY / "grafana/dashboards/touchflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = _yaml_docs(DEPLOY / "prometheus/alerts.yml")[0]["groups"][0]["rules"]
    exprs += [r["expr"] for r in rules]
    assert exprs
    for expr in exprs:
        unknown = {n for n in _names_in(expr) if n not in exported}
        assert not unknown, f"{unknown} in {expr!r}"


def test_compose_stack_is_consistent() -> None:
    """compose.yaml: Kafka in KRaft mode (no ZooKeeper), workers on the image built from
    deploy/Dockerfile with only real TOUCHFLOW_* settings and a data volume each, Prometheus
    mounting the shipped config and rules, Grafana provisioned with the dashboard."""
    compose = _yaml_docs(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    kafka = services["kafka"]["environment"]
    assert "broker,controller" in kafka["KAFKA_PROCESS_ROLES"]
    assert not any("zookeeper" in name for name in services)
    known = {f"TOUCHFLOW_{name.upper()}" for name in Settings.model_fields}
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert len(workers) >= 2
    for worker in workers:
        assert set(worker["environment"]) <= known, set(worker["environment"]) - known
        assert any(v.endswith(":/var/lib/touchflow") for v in worker["volumes"])
        assert worker["environment"]["TOUCHFLOW_BROKER"] == "kafka://kafka:9092"
    assert (DEPLOY / services["worker-0"]["build"]["context"]
            / services["worker-0"]["build"]["dockerfile"]).is_file()
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("./prometheus/prometheus.yml", "./prometheus/alerts.yml",
                 "./grafana/provisioning", "./grafana/dashboards"):
        assert path in mounts
        assert (DEPLOY / path).exists()
    scrape = _yaml_docs(DEPLOY / "prometheus/prometheus.yml")[0]
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in targets} == {n for n in services if n.startswith("worker")}


def test_dockerfile_runs_as_non_root_with_a_data_volume() -> None:
    """The image drops root, keeps RocksDB on a volume, and starts the worker."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert 'VOLUME ["/var/lib/touchflow"]' in text
    assert "TOUCHFLOW_DATA_DIR=/var/lib/touchflow" in text
    assert 'CMD ["worker"]' in text and "-slim" in text


def test_kubernetes_manifests_are_consistent() -> None:
    """StatefulSet with a volume per pod, probes on /healthz and /readyz, non-root; Service,
    PodDisruptionBudget and ServiceMonitor select its pods; the ConfigMap only sets real
    settings; SASL secrets come from a Secret, and the shipped example rulebook is valid."""
    docs: dict[str, list[Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _yaml_docs(path):
            docs.setdefault(doc["kind"], []).append(doc)
    (sts,) = docs["StatefulSet"]
    spec = sts["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/var/lib/touchflow"
    for kind in ("Service", "PodDisruptionBudget", "ServiceMonitor"):
        for doc in docs[kind]:
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert selector.items() <= labels.items(), kind
    known = {f"TOUCHFLOW_{name.upper()}" for name in Settings.model_fields}
    settings_map = next(d for d in docs["ConfigMap"] if d["metadata"]["name"] == "touchflow")
    assert set(settings_map["data"]) <= known, set(settings_map["data"]) - known
    (secret,) = docs["Secret"]
    assert "TOUCHFLOW_SASL_PASSWORD" in secret["stringData"]
    assert "TOUCHFLOW_SASL_PASSWORD" not in settings_map["data"]
    rulebook = next(d for d in docs["ConfigMap"] if d["metadata"]["name"] == "touchflow-rulebook")
    from service.domain import parse_rulebook

    assert parse_rulebook(rulebook["data"]["rulebook.yaml"], "configmap.yaml").version
