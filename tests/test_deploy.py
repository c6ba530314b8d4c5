"""Deployment artifacts, built and checked for real: ``bentoml build`` of the CPU and GPU Bentos
(with the quick-profile models), their generated Dockerfiles, the built Bento served by
``bentoml serve``, checkov on the Dockerfiles, the rendered Kubernetes manifests and the pods
KServe makes of ours, and every metric the dashboard and alert rules use present on a live
``/metrics``.

No Docker engine or cluster runs here: images are not built and manifests are not applied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from benchmarks.servers import Server
from modelspec import repository
from service.monitoring.names import METRICS as MONITORING_METRICS
from service.rollout import SHADOW_METRICS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checks" / "bin" / "checkov"))
PACKED = ("service", "modelspec", "deploy", "bentofile.yaml")


@pytest.fixture(scope="module")
def build_context(quick_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a user builds from: sources, deploy/, and ``models/`` filled."""
    context = tmp_path_factory.mktemp("bento-context")
    for name in PACKED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    shutil.copytree(quick_repository, context / "models")
    # A model of the user's own sitting in ./models: the Bentos name the models they pack.
    stray = context / "models" / "not_for_the_image" / "1"
    stray.mkdir(parents=True)
    (stray / "model.onnx").write_bytes(b"\0" * 1_000_000)
    return context


def build(context: Path, home: Path, bentofile: str | None = None) -> Path:
    """``bentoml build`` as an operator runs it; the built Bento's folder in the store."""
    command = [sys.executable, "-m", "bentoml", "build", "--output", "tag", "."]
    if bentofile:
        command[4:4] = ["-f", bentofile]
    env = {**os.environ, "BENTOML_HOME": str(home)}
    result = subprocess.run(command, cwd=context, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", result.stdout).group(1)
    name, version = tag.split(":")
    return home / "bentos" / name / version


@pytest.fixture(scope="module")
def bento_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home")


@pytest.fixture(scope="module")
def cpu_bento(build_context: Path, bento_home: Path) -> Path:
    return build(build_context, bento_home)


@pytest.fixture(scope="module")
def gpu_bento(build_context: Path, bento_home: Path) -> Path:
    return build(build_context, bento_home, "deploy/bentofile.gpu.yaml")


def dockerfile_facts(bento: Path) -> dict[str, list[str]]:
    """Instruction -> its arguments, in order, from the generated Dockerfile."""
    facts: dict[str, list[str]] = {}
    text = (bento / "env" / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line and not line.startswith("#") and line.split()[0].isupper():
            instruction, _, rest = line.partition(" ")
            facts.setdefault(instruction, []).append(rest.strip())
    return facts


def check_dockerfile(bento: Path) -> dict[str, list[str]]:
    facts = dockerfile_facts(bento)
    assert facts["USER"][-1] == "bentoml", "the image must end as the non-root user"
    assert "ARG BENTO_USER_UID=10001" in (bento / "env/docker/Dockerfile").read_text()
    assert "3000" in facts["EXPOSE"]
    assert facts["ENTRYPOINT"] == ['[ "/home/bentoml/bento/env/docker/entrypoint.sh" ]']
    (healthcheck,) = facts["HEALTHCHECK"]
    assert "/readyz" in healthcheck and "--start-period=300s" in healthcheck
    assert "MODEL_REPOSITORY=$MODEL_REPOSITORY" in facts["ENV"]
    assert "SERVING_CONFIG=$SERVING_CONFIG" in facts["ENV"]
    return facts


def test_cpu_bento_packs_service_configuration_and_models(cpu_bento, quick_repository) -> None:
    source = cpu_bento / "src"
    assert (source / "service" / "service.py").is_file()
    assert (source / "service" / "protocols" / "v2.py").is_file()
    assert yaml.safe_load((source / "deploy" / "serving.yaml").read_text())["backend"] == "onnx"
    assert cpu_bento.parent.name == "keras-model-serving"  # the name deploy/README.md uses
    packed_models = sorted(p.name for p in (source / "models").iterdir())
    assert packed_models == ["autoencoder", "bank", "digits", "flowers"]
    for model in packed_models:
        version = repository.latest_version(quick_repository, model)
        packed = repository.version_dir(source / "models", model, version)
        manifest = repository.read_manifest(packed)
        # What the ONNX backend opens, intact; what it never opens, left out.
        assert repository.verify_files(packed, manifest, repository.unused_by("onnx")) == []
        assert not (packed / repository.SAVED_MODEL_DIR).exists()
        assert not list(packed.glob("*.keras"))
        assert list(packed.glob("*.onnx")) and (packed / "model_card.md").is_file()
    requirements = (cpu_bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "bentoml==1.4.39" in requirements
    facts = check_dockerfile(cpu_bento)
    assert facts["FROM"][0].startswith("python:3.11-slim")


def bento_bytes(bento: Path) -> int:
    return sum(f.stat().st_size for f in bento.rglob("*") if f.is_file())


def test_bentos_pack_only_what_is_served(cpu_bento, gpu_bento, quick_repository) -> None:
    """Both Bentos pack the same models, and no more than the service opens: the files of
    the four models less SavedModels and Keras files, plus sources (under 1 MiB)."""
    served = sum(
        f.stat().st_size
        for model in ("digits", "flowers", "bank", "autoencoder")
        for f in (quick_repository / model).rglob("*")
        if f.is_file()
        and repository.SAVED_MODEL_DIR not in f.parts
        and f.suffix != ".keras"
        and not any(part.startswith(".") for part in f.relative_to(quick_repository).parts)
    )
    for bento in (cpu_bento, gpu_bento):
        size = bento_bytes(bento)
        assert served <= size <= served + 2**20, (
            f"{bento.parent.name}:{bento.name}: {size / 2**20:.1f} MiB packed, for "
            f"{served / 2**20:.1f} MiB of served model files (+ at most 1 MiB of sources)"
        )


def test_gpu_bento_uses_cuda_13_and_onnxruntime_gpu(gpu_bento) -> None:
    facts = check_dockerfile(gpu_bento)
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime", facts["FROM"][0])
    requirements = (gpu_bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime-gpu==" in requirements
    assert "\nonnxruntime==" not in requirements
    assert any("pip install" in run and "uv==" in run for run in facts["RUN"])


def test_built_bento_serves(cpu_bento, bento_home, data_dir) -> None:
    """The packed Bento, started the way its container starts it (its ENV, from the store)."""
    environment = {
        "BENTOML_HOME": str(bento_home),
        "MODEL_REPOSITORY": "models",
        "SERVING_CONFIG": "deploy/serving.yaml",
    }
    tag = f"{cpu_bento.parent.name}:{cpu_bento.name}"
    with Server(target=tag, env=environment) as server:
        server.wait_until("/readyz", timeout=180)
        pixels = np.zeros((1, 28, 28)).tolist()
        response = httpx.post(f"{server.url}/digits/predict", json={"inputs": pixels}, timeout=30)
        assert response.status_code == 200, response.text
        models = httpx.get(f"{server.url}/models", timeout=30).json()["models"]
        assert {m["name"]: m["state"] for m in models} == dict.fromkeys(
            ("digits", "flowers", "bank", "autoencoder"), "ready"
        )


def test_checkov_passes_on_dockerfiles_and_manifests(cpu_bento, gpu_bento, tmp_path) -> None:
    # Imported here: without kubectl that module stops the whole run at collection, and an
    # import at the top would repeat its message for this module.
    from tests.test_deploy_manifests import KUSTOMIZATIONS, kserve_made, kserve_objects, render, the

    assert CHECKOV.is_file(), f"checkov not found at {CHECKOV}: `make test` installs it"
    for name in KUSTOMIZATIONS:
        (tmp_path / f"k8s-{name}.yaml").write_text(yaml.safe_dump_all(render(name)))
    # checkov has no checks for KServe's custom resources; the pods KServe makes of them it has.
    (tmp_path / "kserve-pods.yaml").write_text(yaml.safe_dump_all(kserve_made()))
    runtime = the(render("kserve"), "ServingRuntime")
    bucket = kserve_objects(runtime, the(render("kserve-bucket"), "InferenceService"))
    (tmp_path / "kserve-bucket-pods.yaml").write_text(yaml.safe_dump_all(bucket))
    for name, bento in (("cpu", cpu_bento), ("gpu", gpu_bento)):
        (tmp_path / name).mkdir()
        shutil.copy(bento / "env" / "docker" / "Dockerfile", tmp_path / name / "Dockerfile")
    frameworks = ["--framework", "kubernetes", "dockerfile"]
    result = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), *frameworks, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    linted = {  # the files checkov actually ran checks on
        "kubernetes": {"/k8s-cpu.yaml", "/k8s-gpu.yaml", "/k8s-bucket.yaml", "/kserve-pods.yaml"}
        | {"/kserve-bucket-pods.yaml"},
        "dockerfile": {"/cpu/Dockerfile", "/gpu/Dockerfile"},
    }
    for report in reports:
        failed = report["results"]["failed_checks"]
        assert failed == [], [(c["check_id"], c["resource"]) for c in failed]
        passed = {c["file_path"] for c in report["results"]["passed_checks"]}
        assert linted[report["check_type"]] <= passed, passed
        skipped = report["results"]["skipped_checks"]
        assert len(skipped) == report["summary"]["skipped"]
        for check in skipped:  # a skip only with a written reason beside it
            assert check["check_result"].get("suppress_comment"), check["check_id"]


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(?:serving|bentoml)_[a-z_]+\b", text))


def test_dashboard_and_alerts_use_real_metrics(service_url: str) -> None:
    """Every series the dashboard and the alert rules query exists on a live ``/metrics``."""
    with httpx.Client(base_url=service_url, timeout=60) as client:
        zeros = np.zeros((1, 28, 28)).tolist()
        assert client.post("/digits/predict", json={"inputs": zeros}).status_code == 200
        assert client.post("/digits/predict", json={"inputs": [[1]]}).status_code == 422
        exposed, in_flight = set(), 0.0
        for line in client.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name = re.split(r"[{ ]", line, maxsplit=1)[0]
                exposed.add(name)
                if name == "serving_requests_in_flight":
                    in_flight += float(line.rsplit(" ", 1)[1])
    monitoring = ROOT / "deploy" / "monitoring"
    queried = used_metrics((monitoring / "dashboard.json").read_text())
    queried |= used_metrics((monitoring / "prometheusrule.yaml").read_text())
    assert "serving_requests_in_flight" in exposed
    assert in_flight == 0  # every answered request left the gauge
    assert queried, "no metric found in the dashboard or rules"
    # The monitoring series need monitored traffic: tests/test_monitoring.py checks them.
    queried -= set(MONITORING_METRICS) | set(SHADOW_METRICS)  # tests/test_rollout.py checks these
    assert queried <= exposed, sorted(queried - exposed)
