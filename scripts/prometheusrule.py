"""Write deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml.

The Prometheus operator reads alert rules from a `PrometheusRule` object; plain Prometheus
(compose) reads alerts.yml. Both carry the same groups: edit alerts.yml, then run
`python scripts/prometheusrule.py` (tests/unit/test_deploy.py fails while they differ).
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/alerts.yml"
TARGET = ROOT / "deploy/k8s/prometheusrule.yaml"
_HEADER = ("# Generated from deploy/prometheus/alerts.yml by scripts/prometheusrule.py; "
           "do not edit.\n# Runbook: README.md, section \"Operations\" > \"Alerts\".\n")


def render(rules_text: str) -> str:
    """The PrometheusRule manifest holding the groups of an alerts.yml text."""
    groups = yaml.safe_load(rules_text)["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "touchflow", "labels": {"app.kubernetes.io/name": "touchflow"}},
        "spec": {"groups": groups},
    }
    return _HEADER + yaml.safe_dump(manifest, sort_keys=False, width=100,
                                    allow_unicode=True)


def main() -> None:
    TARGET.write_text(render(RULES.read_text()))
    print(TARGET.relative_to(ROOT))


if __name__ == "__main__":
    main()
