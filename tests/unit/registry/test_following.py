"""service.registry.following: the version policies (latest, specific, all) of a repository
of three versions of a synthetic graph, served in this process by the real Registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.synthetic import B, InProcess, W, affine_onnx, manifest, publish

X = [[1.0, 2.0, 3.0, 4.0]]


def _repository(tmp_path: Path, policy: str) -> tuple[Path, Path]:
    root = tmp_path / "models"
    for number in (1, 2, 3):
        publish(root, manifest("affine", number), {"model.onnx": affine_onnx()})
    config = tmp_path / "serving.yaml"
    config.write_text(f"models:\n  affine:\n    version_policy: {policy}\n")
    return root, config


def _served(service: InProcess) -> dict[int, int]:
    """Status of an inference request to each version, and the version that answers by
    default (key 0)."""
    found = {}
    for number in (1, 2, 3):
        path = f"/v2/models/affine/versions/{number}/infer"
        entry = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[0]}
        found[number] = service.request("POST", path, json={"inputs": [entry]}).status_code
    latest = service.request("POST", "/models/affine/predict", json={"inputs": X})
    assert latest.status_code == 200, latest.text
    np.testing.assert_allclose(latest.json()["outputs"]["y"], np.array(X) @ W + B, rtol=1e-6)
    found[0] = latest.json()["version"]
    return found


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("{latest: 1}", {1: 404, 2: 404, 3: 200, 0: 3}),
        ("{latest: 2}", {1: 404, 2: 200, 3: 200, 0: 3}),
        ("{specific: [1, 2]}", {1: 200, 2: 200, 3: 404, 0: 2}),
        ("{all: true}", {1: 200, 2: 200, 3: 200, 0: 3}),
    ],
)
def test_the_version_policy_chooses_what_is_served(tmp_path: Path, policy, expected) -> None:
    root, config = _repository(tmp_path, policy)
    with InProcess(root, SERVING_CONFIG=str(config)) as service:
        assert _served(service) == expected
        unknown = service.request("POST", "/models/affine/predict?version=3", json={"inputs": X})
        if expected[3] == 404:
            assert unknown.json()["code"] == "unknown_version"
            assert unknown.json()["expected"].startswith("one of [")


def test_the_workers_shared_state_is_seen_by_the_others_only(tmp_path: Path) -> None:
    """One worker's unload or routing change is seen by the others' once-a-second look
    (``SharedState.changed``), not by the worker that wrote it; that look raised
    AttributeError every second once the readers were merged, so no other worker followed
    an API change until the next repository scan, or ever with ``poll_interval: 0``."""
    from service.admin import SharedState
    from service.config import Settings

    writer, other = (SharedState(Settings(state_dir=tmp_path)) for _ in range(2))
    assert not writer.changed() and not other.changed()  # no state files yet
    writer.update_routing("affine", {"labels": {"stable": 1}})
    writer.update_unloaded("affine", True)
    assert not writer.changed(), "its own writes are no change to the writer"
    assert other.changed()
    assert other.routing() == {"affine": {"labels": {"stable": 1}}}
    assert other.unloaded_names() == {"affine"}
    assert not other.changed(), "both files read: nothing changed since"


def test_two_workers_calls_within_a_poll_are_both_kept(tmp_path: Path) -> None:
    """Two workers of one server (one state folder); each takes a repository API call for
    another model before either has polled: both calls stay in force on both workers. Each
    worker wrote its whole view of the state files, so the second write dropped the first
    call (5 of 6 tries lost an unload against a real 2-worker server; the same for labels)."""
    root = tmp_path / "models"
    for name in ("first", "second"):
        publish(root, manifest(name), {"model.onnx": affine_onnx()})
    token = {"authorization": "Bearer t"}
    with (
        InProcess(root, SERVING_ADMIN_TOKEN="t") as one,
        InProcess(root, SERVING_ADMIN_TOKEN="t") as two,
    ):
        for path in ("/v2/repository/models/first/routing", "/v2/repository/models/first/unload"):
            body = {"labels": {"stable": 1}} if path.endswith("routing") else None
            assert one.request("POST", path, headers=token, json=body).status_code == 200
            other = path.replace("first", "second")
            assert two.request("POST", other, headers=token, json=body).status_code == 200
        for worker in (one, two):  # each worker's once-a-second look
            if worker.registry.shared.changed():
                worker.loop.run_until_complete(worker.registry.refresh())
        for worker in (one, two):
            models = worker.registry.models
            assert models["first"].unloaded and models["second"].unloaded
            assert all((m.override or {}).get("labels") == {"stable": 1} for m in models.values())


def test_a_card_of_version_0_names_version_0(tmp_path: Path) -> None:
    """``/versions/0/card`` said "version -1 ... is not served": the 0 was taken for no
    version at all."""
    root, config = _repository(tmp_path, "{all: true}")
    with InProcess(root, SERVING_CONFIG=str(config)) as service:
        for path in ("/models/affine/versions/0/card", "/models/affine/versions/0/files/a.png"):
            refused = service.request("GET", path)
            assert refused.status_code == 404, refused.text
            assert refused.json()["code"] == "unknown_version"
            assert "version 0 " in refused.json()["error"], refused.text


def test_a_change_made_in_the_same_clock_tick_is_still_seen(tmp_path: Path) -> None:
    """Many kernels stamp a file's mtime from a clock that ticks every few milliseconds, and
    two workers' calls at once write one after the other well inside a tick: the second
    file has the first's mtime. The worker that wrote first took the file as read (mtime
    alone) and never applied the other's unload. Set here with os.utime, as that clock
    leaves it."""
    import os

    from service.admin import STATE_FILE, SharedState
    from service.config import Settings

    first, second = (SharedState(Settings(state_dir=tmp_path)) for _ in range(2))
    path = tmp_path / STATE_FILE
    first.update_unloaded("affine", True)
    tick = path.stat().st_mtime_ns
    second.update_unloaded("other", True)
    os.utime(path, ns=(tick, tick))
    assert first.changed(), "the second write is a change to the first writer"
    assert first.unloaded_names() == {"affine", "other"}


def test_a_config_whose_policy_drops_a_version_its_labels_name_changes_nothing(
    tmp_path: Path,
) -> None:
    """``config.yaml`` moving to ``latest: 1`` while its labels and weights still name
    version 1 was reported invalid, yet its version policy was taken: version 1 retired, all
    traffic went to 2 while /models showed the 50/50 split, and ``?version=stable`` was 404.
    Such a file is refused whole: the last good settings stay, both versions serve."""
    root, _ = _repository(tmp_path, "{all: true}")
    (root / "affine" / "3").rename(tmp_path / "unpublished")
    config = root / "affine" / "config.yaml"
    routing = "labels: {stable: 1, canary: 2}\ntraffic: {stable: 50, canary: 50}\n"
    config.write_text("version_policy: {latest: 2}\n" + routing)
    with InProcess(root) as service:
        described = service.request("GET", "/models/affine").json()
        assert described["config_file"]["valid"], described["config_file"]
        config.write_text("version_policy: {latest: 1}\n" + routing)
        service.loop.run_until_complete(service.registry.refresh())
        described = service.request("GET", "/models/affine").json()
        served = {v["version"]: v["state"] for v in described["versions"]}
        stable = service.request(
            "POST", "/models/affine/predict?version=stable", json={"inputs": X}
        )
    assert served == {1: "ready", 2: "ready"}, served
    assert stable.status_code == 200 and stable.json()["version"] == 1, stable.text
    assert not described["config_file"]["valid"]
    assert "would stop serving" in described["config_file"]["error"], described["config_file"]
    assert described["traffic"]["split"] == {"1": 50.0, "2": 50.0}, described["traffic"]
