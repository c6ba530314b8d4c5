"""Kubernetes manifests: each overlay renders with kustomize and every built-in object
validates against the Kubernetes schemas; the security and probe settings operators rely on
are present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
CUSTOM_KINDS = {"ServiceMonitor"}  # Prometheus Operator CRD: checked by hand below


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (Debian package) is needed to render the kustomize overlays"
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_objects_are_valid(overlay: str) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "ServiceMonitor"} <= kinds
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


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
