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

from service.ops.metrics import Metrics
from service.ops.settings import Settings

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
        describe = getattr(collector, "describe", collector.collect)  # (process_*: no describe)
        for family in describe():
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
    """Every touchflow_* name in the dashboard and the alert rules exists in service/ops/metrics.py
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
    PodDisruptionBudget select its pods; the ConfigMap only sets real
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
    for kind in ("Service", "PodDisruptionBudget"):  # (the ServiceMonitor selects a Service)
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
    from service.domain import parse_rulebook

    rulebook = DEPLOY / "k8s/rulebook/rulebook.yaml"
    assert parse_rulebook(rulebook.read_text(), str(rulebook)).version


def _k8s_docs() -> dict[str, list[Any]]:
    docs: dict[str, list[Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _yaml_docs(path):
            docs.setdefault(doc["kind"], []).append(doc)
    return docs


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml_docs(DEPLOY / "prometheus/alerts.yml")[0]["groups"]
            for rule in group["rules"]]


def test_each_pod_is_scraped_once_under_the_job_the_alerts_match() -> None:
    """The ServiceMonitor selects exactly one Service (two would scrape every pod twice); the
    operator names the job after that Service, and plain Prometheus (prometheus.yml) uses the
    same job name, which is the one `TouchflowWorkerDown` and every other `job=` matcher in
    the rules name, so the alert can fire under both."""
    docs = _k8s_docs()
    (monitor,) = docs["ServiceMonitor"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in docs["Service"] if wanted.items() <= s["metadata"]["labels"].items()]
    assert len(scraped) == 1, [s["metadata"]["name"] for s in scraped]
    (service,) = scraped
    (sts,) = docs["StatefulSet"]
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"][
        "labels"].items()
    job_label = monitor["spec"].get("jobLabel")
    operator_job = (service["metadata"]["labels"][job_label] if job_label
                    else service["metadata"]["name"])
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    scrape = _yaml_docs(DEPLOY / "prometheus/prometheus.yml")[0]
    (plain_job,) = [c["job_name"] for c in scrape["scrape_configs"]]
    assert operator_job == plain_job
    matchers = [m for rule in _alert_rules()
                for m in re.findall(r'job=~?"([^"]*)"', rule["expr"])]
    down = next(r for r in _alert_rules() if r.get("alert") == "TouchflowWorkerDown")
    assert f'job="{plain_job}"' in down["expr"]
    assert matchers and set(matchers) == {plain_job}


def test_the_prometheusrule_holds_exactly_the_alert_rules() -> None:
    """deploy/k8s/prometheusrule.yaml is what scripts/prometheusrule.py generates from
    deploy/prometheus/alerts.yml (same groups, same rules): an alert edited in one place
    cannot be missing from the other; kustomize ships it."""
    from scripts.prometheusrule import render

    rules_text = (DEPLOY / "prometheus/alerts.yml").read_text()
    shipped = (DEPLOY / "k8s/prometheusrule.yaml").read_text()
    assert shipped == render(rules_text), "run: python scripts/prometheusrule.py"
    (rule,) = _k8s_docs()["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(rules_text)["groups"]
    kustomization = _yaml_docs(DEPLOY / "k8s/kustomization.yaml")[0]
    assert "prometheusrule.yaml" in kustomization["resources"]


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    """The pod template passes Pod Security "restricted": non-root, seccomp RuntimeDefault,
    no privilege escalation, every capability dropped, only ConfigMap/Secret/emptyDir/PVC
    volumes, no host namespaces or ports."""
    (sts,) = _k8s_docs()["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"configMap", "secret", "emptyDir",
                                          "persistentVolumeClaim", "projected"}, volume
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert context.get("privileged") is not True
        assert context.get("seccompProfile", pod["securityContext"]["seccompProfile"])[
            "type"] in ("RuntimeDefault", "Localhost")
        assert not any("hostPort" in port for port in container["ports"])


def test_the_image_is_pinned_to_the_project_version() -> None:
    """The worker image is a pinned tag, the package version in pyproject.toml, never
    `latest` or untagged (a restart would otherwise pull whatever was pushed last)."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (sts,) = _k8s_docs()["StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].rpartition(":")
    assert name and tag == version, container["image"]


def test_rulebook_edits_reach_the_pods() -> None:
    """The rulebook is mounted as a directory (no subPath, which kubelet never updates) at
    the directory TOUCHFLOW_RULES points into, from a ConfigMap kustomize generates with a
    content hash in its name, so an edit changes the StatefulSet's pod template and rolls it."""
    docs = _k8s_docs()
    (sts,) = docs["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not any("subPath" in m for m in container["volumeMounts"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "rulebook")
    volume = next(v for v in pod["volumes"] if v["name"] == "rulebook")
    settings_map = next(d for d in docs["ConfigMap"] if d["metadata"]["name"] == "touchflow")
    rules = Path(settings_map["data"]["TOUCHFLOW_RULES"])
    assert rules.parent == Path(mount["mountPath"])
    kustomization = _yaml_docs(DEPLOY / "k8s/kustomization.yaml")[0]
    (generated,) = [g for g in kustomization["configMapGenerator"]
                    if g["name"] == volume["configMap"]["name"]]
    assert generated.get("options", {}).get("disableNameSuffixHash") is not True
    assert [Path(f).name for f in generated["files"]] == [rules.name]
    assert all((DEPLOY / "k8s" / f).is_file() for f in generated["files"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_a_rollout_on_rulebook_change(tmp_path: Path) -> None:
    """`kubectl kustomize` builds deploy/k8s; the StatefulSet refers to the hashed rulebook
    ConfigMap, and a one-line edit of the rulebook changes that name (so it rolls the pods)."""

    def rendered(directory: Path) -> tuple[str, str]:
        out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                             text=True, check=True).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"]
                      if v["name"] == "rulebook")["configMap"]["name"]
        maps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
        assert volume in maps
        return volume, out

    shutil.copytree(DEPLOY / "k8s", tmp_path / "k8s")
    before, _ = rendered(tmp_path / "k8s")
    assert before.startswith("touchflow-rulebook-")
    rulebook = tmp_path / "k8s/rulebook/rulebook.yaml"
    rulebook.write_text(rulebook.read_text().replace("k8s-example-1", "k8s-example-2"))
    after, _ = rendered(tmp_path / "k8s")
    assert after != before


def test_metrics_include_the_process_collectors() -> None:
    """The worker's registry exports prometheus_client's process, platform and GC collectors:
    `process_resident_memory_bytes` (the soak and the memory panel read it), CPU seconds,
    `python_info` and `python_gc_*`."""
    text = Metrics().render().decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "python_info", "python_gc_collections_total"):
        assert re.search(rf"^{name}(\{{| )", text, re.M), name
