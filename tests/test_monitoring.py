"""Watching the models: reference statistics, drift against them, out-of-distribution flags,
sampled payload logs and the live view on ``/``, through real ``bentoml serve`` processes
and quick-trained models.

The models come from the session's quick repository when it has reference statistics (a
repository trained by this code); one trained before them (``TEST_MODEL_REPOSITORY``) has
none, and then bank, autoencoder and digits are trained here, once, into a temporary
repository (``TEST_MONITOR_REPOSITORY`` names one already trained, for quicker local runs).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks import ood_rates
from benchmarks.servers import Server
from modelspec.reference import ALERT, REFERENCE_FILE, SIZE_FEATURES, psi
from modelspec.repository import sha256_file
from reliability.scenarios import faults
from service.config import ConfigError, load_config
from service.monitoring.names import METRICS as MONITORING_METRICS
from service.monitoring.payloads import render
from tests.conftest import train_quick
from training.datasets.bank import load_bank
from training.datasets.flowers import list_flowers

pytestmark = pytest.mark.slow
MODELS = ("bank", "autoencoder", "digits")
WINDOW = 500
PHOTO_WINDOW = 200


@pytest.fixture(scope="module")
def repository(quick_repository: Path, data_dir: Path, tmp_path_factory) -> Path:
    if reused := os.environ.get("TEST_MONITOR_REPOSITORY"):
        return Path(reused).resolve()
    if all((quick_repository / m / "1" / REFERENCE_FILE).is_file() for m in MODELS):
        return quick_repository
    out = tmp_path_factory.mktemp("monitored")
    for model in MODELS:  # the autoencoder first: digits' pairing names it
        result = train_quick(model, data_dir, out)
        assert result.returncode == 0, result.stderr[-4000:]
    return out


def _serve(repository: Path, log: Path, **settings: str) -> Server:
    env = {"MODEL_REPOSITORY": str(repository)}
    env.update({f"SERVING_{k.upper()}": v for k, v in settings.items()})
    server = Server(env=env, log=log)
    server.start()
    try:
        server.wait_until("/readyz", timeout=300)
    except Exception:
        server.stop()
        print(log.read_text()[-4000:])
        raise
    return server


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-monitor") / "serve.log"
    server = _serve(repository, log, drift_window=str(WINDOW), drift_interval_s="0.3")
    try:
        yield server
    finally:
        server.stop()


def _manifest(repository: Path, model: str) -> dict:
    return json.loads((repository / model / "1" / "manifest.json").read_text())


# -- reference statistics ------------------------------------------------------------------


def test_every_version_carries_reference_statistics(repository: Path) -> None:
    for model in MODELS:
        folder = repository / model / "1"
        manifest = _manifest(repository, model)
        assert manifest["files"][REFERENCE_FILE] == sha256_file(folder / REFERENCE_FILE)
    bank = json.loads((repository / "bank" / "1" / REFERENCE_FILE).read_text())
    encoder = _manifest(repository, "bank")["preprocessing"]["encoder"]
    assert set(bank["features"]) == set(encoder["columns"])  # the 16 raw fields
    assert bank["features"]["age"]["kind"] == "numeric"
    assert bank["features"]["job"]["categories"][0] == "admin."
    assert sum(bank["features"]["job"]["counts"]) == bank["items"]
    assert bank["prediction"]["categories"] == ["no", "yes"]
    digits = json.loads((repository / "digits" / "1" / REFERENCE_FILE).read_text())
    assert set(digits["features"]) == {"mean_intensity", "contrast", "ink_fraction"}
    assert len(digits["prediction"]["counts"]) == 10
    # digits is paired with the autoencoder, whose manifest holds the threshold
    assert _manifest(repository, "digits")["ood"]["detector"] == "autoencoder"
    detector = _manifest(repository, "autoencoder")["detector"]
    assert detector["score"] == "reconstruction_mse" and detector["threshold"] > 0


def _digits_like_reference(rng: np.random.Generator, items: int) -> dict:
    """reference.json of ``items`` random 28x28 images and random classes."""
    from modelspec.reference import build

    return build(
        rng.random((items, 28, 28), dtype=np.float32),
        signature="serving_default",
        input_kind="mnist_image",
        classes=rng.integers(0, 10, items),
        source="test",
    )


def _digits_like_version(tmp_path: Path, rng: np.random.Generator, items: int):
    """Version 1 of a synthetic model ``m`` whose folder holds such a reference."""
    from service.descriptor import Version
    from tests.unit.synthetic import manifest

    (tmp_path / REFERENCE_FILE).write_text(json.dumps(_digits_like_reference(rng, items)))
    return Version("m", 1, tmp_path, manifest("m", files={REFERENCE_FILE: "listed"}))


def _two_workers(tmp_path: Path, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    """A digits-like version, and two workers' drift threads (two Drift objects with one
    folder between them, as a server's workers have), windows of 1,000 items."""
    from service.monitoring.drift import Drift

    version = _digits_like_version(tmp_path, rng, 500)
    shared = tmp_path / "shared"
    shared.mkdir()
    first, second = (Drift(window=1000, interval_s=60, shared=shared) for _ in range(2))
    second.pid = os.getppid()  # another live process: the second worker's file is its own
    return version, first, second


def test_workers_score_their_windows_together(tmp_path: Path) -> None:
    """Two workers' drift threads (two Drift objects, one folder between them as a server's
    workers have): each has seen 600 items of a 1,000-item window, so neither alone scores;
    together they do, with the counts of both, and a dead worker's counts no longer count."""
    rng = np.random.default_rng(7)
    version, first, second = _two_workers(tmp_path, rng)
    shared = tmp_path / "shared"
    for drift in (first, second):
        for _ in range(6):
            drift.observe(version, rng.random((100, 28, 28), dtype=np.float32) ** 4, None)
    first.count()  # shares its 600 items; sees nobody else yet
    assert first.state[("m", 1)]["scores"] == {} and first.state[("m", 1)]["workers"] == 1
    second.count()  # shares its 600, sees the first's
    together = second.state[("m", 1)]
    assert together["workers"] == 2 and together["items"] == 1200 and together["full"]
    assert together["scores"]["mean_intensity"] > 0.25  # x**4 darkens every image
    first.count()  # nothing new here, but the other worker's counts changed: rescored
    assert first.state[("m", 1)]["scores"] == together["scores"]

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    os.replace(shared / f"drift-{second.pid}.json", shared / f"drift-{dead.stdout.strip()}.json")
    first.observe(version, rng.random((1, 28, 28), dtype=np.float32), None)
    first.count()
    assert first.state[("m", 1)]["workers"] == 1 and first.state[("m", 1)]["scores"] == {}
    first.stop()
    assert not (shared / f"drift-{first.pid}.json").exists()


def test_workers_together_score_only_the_latest_window_of_items(tmp_path: Path) -> None:
    """Found against a 2-worker server (window 50): 50 records then 50 shifted ones scored
    3.50, the PSI of the 70 items the two workers' rings held, not 7.45, that of the last 50
    sent. Each ring keeps ``window`` items, so the sum was up to workers x window items, and
    an idle worker's old items never left it. Here a worker saw 1,000 items like the
    reference, then another 1,000 shifted ones: the server's window is the shifted ones."""
    from service.monitoring.drift import Window

    rng = np.random.default_rng(11)
    version, old, new = _two_workers(tmp_path, rng)
    old.observe(version, rng.random((1000, 28, 28), dtype=np.float32), None)
    old.count()
    time.sleep(0.01)
    shifted = rng.random((1000, 28, 28), dtype=np.float32) ** 4
    new.observe(version, shifted, None)
    new.count()
    alone = Window(json.loads((tmp_path / REFERENCE_FILE).read_text()), None, 1000)
    alone.add(shifted, None, None)
    expected = alone.snapshot()["scores"]
    old.count()  # sees the other worker's newer items
    for drift in (old, new):
        state = drift.state[("m", 1)]
        assert state["items"] == 2000 and state["workers"] == 2, state
        assert state["scores"] == expected, (state["scores"], expected)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0)
    assert psi([10, 20, 30], [30, 20, 10]) > ALERT


@pytest.mark.parametrize("group_bytes", [4 << 20, 10_000])
def test_a_pass_of_many_batches_fills_the_window_as_one_batch_at_a_time(
    group_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counting thread bins a pass's batches together, joined a few MB at a time; rings,
    # counts, OOD rate and scores must be those of adding each batch in turn (windows smaller
    # and larger than a pass, groups of one batch and of many).
    from service.monitoring import drift
    from service.monitoring.drift import Window

    monkeypatch.setattr(drift, "GROUP_BYTES", group_bytes)

    rng = np.random.default_rng(3)
    reference = _digits_like_reference(rng, 300)
    for size in (10, 64, 500):
        batches = []
        for _ in range(30):
            n = int(rng.integers(1, 80))
            ood = rng.random(n) > 0.9 if rng.random() > 0.3 else None
            shifted = rng.random((n, 28, 28), dtype=np.float32) ** 2
            batches.append((shifted, rng.integers(0, 10, n), ood))
        one_by_one, at_once = Window(reference, None, size), Window(reference, None, size)
        for batch in batches:
            one_by_one.add(*batch)
        at_once.add_many(batches)
        assert at_once.snapshot() == one_by_one.snapshot(), size
        assert at_once.snapshot()["full"] and at_once.snapshot()["scores"]


def test_the_window_of_a_version_no_longer_served_is_dropped(tmp_path: Path) -> None:
    """Versions come and go for as long as a server runs: a retired version's window leaves
    memory and /models, and its drift gauges go to 0, once the event loop hands the drift
    thread the versions served now."""
    from prometheus_client import CollectorRegistry, Gauge

    from service.descriptor import Version
    from service.monitoring.drift import Drift

    rng = np.random.default_rng(5)
    first = _digits_like_version(tmp_path, rng, 200)
    versions = {n: Version("m", n, tmp_path, {**first.manifest, "version": n}) for n in (1, 2)}
    prometheus = CollectorRegistry()
    gauge = Gauge("drift_score", "psi", ["model", "version", "feature"], registry=prometheus)
    drift = Drift(window=20, interval_s=60, gauge=gauge)
    for version in versions.values():
        drift.observe(
            version, rng.random((30, 28, 28), dtype=np.float32) ** 3, rng.integers(0, 10, 30)
        )
    drift.count()
    assert set(drift.state) == {("m", 1), ("m", 2)}
    score = {"model": "m", "version": "1", "feature": "prediction"}
    assert prometheus.get_sample_value("drift_score", score) > 0

    drift.keep = {("m", 2): versions[2]}  # version 1 retired
    drift.count()
    assert set(drift.state) == {("m", 2)} and drift.window_of(("m", 1)) is None
    assert prometheus.get_sample_value("drift_score", score) == 0
    assert prometheus.get_sample_value("drift_score", {**score, "version": "2"}) > 0


def test_drift_and_payload_settings_come_from_the_environment() -> None:
    found = load_config({"SERVING_DRIFT_WINDOW": "250", "SERVING_PAYLOAD_LOG_SAMPLE": "0.1",
                         "SERVING_PAYLOAD_LOG_INPUTS": "hash"})  # fmt: skip
    assert (found.drift_window, found.payload_log_sample, found.payload_log_inputs) == (
        250,
        0.1,
        "hash",
    )
    assert load_config({}).payload_log_sample == 0  # off by default
    for bad in ({"SERVING_PAYLOAD_LOG_SAMPLE": "1.5"}, {"SERVING_PAYLOAD_LOG_INPUTS": "some"}):
        with pytest.raises(ConfigError):
            load_config(bad)


# -- drift ---------------------------------------------------------------------------------


def _send(client: httpx.Client, records: list[dict]) -> None:
    for i in range(0, len(records), 50):
        reply = client.post("/bank/predict", json={"records": records[i : i + 50]})
        assert reply.status_code == 200, reply.text


def _drift_after(client: httpx.Client, total: int, model: str = "bank", workers: int = 1) -> dict:
    """The model's drift once the counting threads have seen ``total`` items, counted by
    ``workers`` workers (a second worker may still be loading when /readyz first answers)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get(f"/models/{model}").json()["drift"]["versions"]["1"]
        if state["items"] >= total and state["workers"] >= workers:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the drift window saw {state['items']} of {total} items")


def test_bank_traffic_like_the_test_split_stays_below_the_alert_and_shifts_cross_it(
    server: Server, repository: Path, data_dir: Path
) -> None:
    table = load_bank(data_dir)
    indices = list(_manifest(repository, "bank")["test_split"]["indices"])
    # The table is sorted by date: traffic from the test split's period arrives in no order.
    random.Random(0).shuffle(indices)
    records = [table.records[i] for i in indices]
    assert len(records) >= WINDOW
    client = httpx.Client(base_url=server.url, timeout=60)
    sent = len(records)
    _send(client, records)
    state = _drift_after(client, sent)
    assert state["full"], state
    worst = max(state["scores"].items(), key=lambda kv: kv[1])
    assert worst[1] < ALERT, f"test-split traffic drifted: {state['scores']}"
    assert "prediction" in state["scores"]
    metrics = client.get("/metrics").text
    assert 'serving_drift_score{feature="age",model="bank",version="1"}' in metrics

    # Shifts that are still valid inputs (an unknown job is refused by the encoder with a
    # 422, so "a new job category" is all-students: a category 2% of training had).
    sample = records[:WINDOW]
    shifts = {
        "age": [{**r, "age": r["age"] + 30} for r in sample],
        "month": [{**r, "month": "dec"} for r in sample],
        "job": [{**r, "job": "student"} for r in sample],
    }
    for feature, shifted in shifts.items():
        _send(client, shifted)
        sent += len(shifted)
        state = _drift_after(client, sent)
        assert state["scores"][feature] > ALERT, (feature, state["scores"])
        assert feature in state["drifted"]
    plot = client.get("/models/bank/drift.png")
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    for absent in ("9", "0", "1&version=2"):  # a version not served, not "no reference.json"
        reply = client.get(f"/models/bank/drift.png?version={absent}")
        assert reply.status_code == 404 and reply.json()["code"] == "unknown_version", reply.text


def _logged(log: Path) -> list[str]:
    """The ids in a rotated payload log, oldest first (the highest backup number first)."""
    while True:
        files = sorted(log.parent.glob(log.name + ".[0-9]*"), key=lambda f: -int(f.suffix[1:]))
        try:
            lines = [line for f in [*files, log] for line in f.read_text().splitlines()]
        except FileNotFoundError:  # renamed while we read: read again
            continue
        return [json.loads(line)["id"] for line in lines]


def test_two_workers_score_the_same_window(repository: Path, data_dir: Path, tmp_path) -> None:
    """A server of two workers: the drift figures are both workers' windows added up
    (service.monitoring.drift), whichever worker answers; each connection keeps to one
    worker, so two clients spread the traffic. Both workers also write one payload log."""
    log = tmp_path / "payloads.jsonl"
    server = _serve(repository, tmp_path / "serve.log", workers="2", drift_window="200",
                    drift_interval_s="0.3", payload_log_sample="1", payload_log_file=str(log),
                    payload_log_max_bytes="1024", payload_log_backups="200")  # fmt: skip
    try:
        records = load_bank(data_dir).records[:400]
        clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(2)]
        for i in range(0, len(records), 20):
            reply = clients[i // 20 % 2].post(
                "/bank/predict", json={"records": records[i : i + 20]}
            )
            assert reply.status_code == 200, reply.text
        for client in clients:  # a second worker may still be loading when /readyz answers
            state = _drift_after(client, len(records), workers=2)
            assert state["full"] and state["scores"], state

        # Each worker rotated the file under the other: one went on writing into a file the
        # other had renamed (out of order), then deleted as the oldest backup (its records
        # lost, though counted as written) (found by helper rt3). One request at a time, each
        # on a fresh connection (spread over both workers): each is logged, in order.
        last = [f"last-{n:02d}" for n in range(40)]
        for rid in last:
            with httpx.Client(base_url=server.url, timeout=60) as fresh:
                reply = fresh.post("/bank/predict", json=records[0], headers={"x-request-id": rid})
                assert reply.status_code == 200, reply.text
            deadline = time.monotonic() + 10
            while rid not in (logged := _logged(log)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rid in logged, f"{rid} not in the kept files"
        assert [rid for rid in _logged(log) if rid in last] == last

        # A worker killed is started again by BentoML: /metrics shows the live workers only.
        # The dead one's serving_model_ready and serving_model_info stayed at 1 (3 workers
        # "ready" of 2), and a livesum gauge such as serving_requests_in_flight would have
        # kept its last value (found by helper rt3).
        victim = faults.workers(server)[0]
        victim.kill()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            live = {w.pid for w in faults.workers(server)}
            if victim.pid not in live and len(live) == 2:
                break
            time.sleep(0.5)
        server.wait_until("/readyz", timeout=240)
        ready: set[int] = set()
        while time.monotonic() < deadline and ready != live:
            time.sleep(0.5)
            text = httpx.get(server.url + "/metrics", timeout=60).text
            ready = {
                int(line.split('pid="')[1].split('"')[0])
                for line in text.splitlines()
                if line.startswith('serving_model_ready{model="bank"')
            }
        assert ready == live, (ready, live, victim.pid)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def flowers_repository(
    quick_repository: Path, data_dir: Path, weights_file: str, tmp_path_factory
) -> Path:
    """Flowers alone, with the photo size features in its reference: the session's quick
    model when this code trained it, else one trained here (a repository trained before the
    size features has none; ~2-3 min)."""
    out = tmp_path_factory.mktemp("flowers-sized")
    found = quick_repository / "flowers" / "1" / REFERENCE_FILE
    if found.is_file() and set(SIZE_FEATURES) <= set(json.loads(found.read_text())["features"]):
        shutil.copytree(quick_repository / "flowers", out / "flowers")
        return out
    result = train_quick("flowers", data_dir, out, "--weights", weights_file)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def _jpegs(files: list[Path], side: int | None = None) -> list[bytes]:
    """The photos as JPEG files, at their own size or squeezed to side x side pixels."""
    found = []
    for file in files:
        if side is None:
            found.append(file.read_bytes())
            continue
        buffer = io.BytesIO()
        with Image.open(file) as photo:
            photo.convert("RGB").resize((side, side)).save(buffer, format="JPEG")
        found.append(buffer.getvalue())
    return found


def test_photo_sizes_like_the_training_photos_stay_below_the_alert_and_tiny_ones_cross_it(
    flowers_repository: Path, data_dir: Path, tmp_path: Path, record_property
) -> None:
    """The original size of uploaded photos, which the resize hides from the model inputs, is
    checked against the training photos' sizes (``width`` and ``height``)."""
    reference = json.loads((flowers_repository / "flowers" / "1" / REFERENCE_FILE).read_text())
    assert reference["features"]["width"]["kind"] == "numeric", reference["features"].keys()
    listing = list_flowers(data_dir)
    # Photos of the same folder, most of them not among the quick model's 300 (same sizes).
    chosen = random.Random(0).sample(range(len(listing.files)), PHOTO_WINDOW)
    files = [listing.root / listing.files[i] for i in chosen]
    server = _serve(
        flowers_repository,
        tmp_path / "serve.log",
        drift_window=str(PHOTO_WINDOW),
        drift_interval_s="0.3",
    )
    figures = {}
    try:
        client = httpx.Client(base_url=server.url, timeout=120)
        sent = 0
        for name, photos in (("same", _jpegs(files)), ("40x40", _jpegs(files, 40))):
            for i in range(0, len(photos), 10):
                uploads = [("image", ("p.jpg", data, "image/jpeg")) for data in photos[i : i + 10]]
                reply = client.post("/flowers/predict", files=uploads)
                assert reply.status_code == 200, reply.text
            sent += len(photos)
            state = _drift_after(client, sent, "flowers")
            figures[name] = {f: state["scores"].get(f) for f in SIZE_FEATURES}
            record_property(f"size_psi_{name}", json.dumps(figures[name]))
        print("size PSI:", json.dumps(figures))
        metrics = client.get("/metrics").text
        plot = client.get("/models/flowers/drift.png")
    finally:
        server.stop()
    for feature in SIZE_FEATURES:
        assert figures["same"][feature] < ALERT, figures
        assert figures["40x40"][feature] > ALERT, figures
    assert 'serving_drift_score{feature="width",model="flowers",version="1"}' in metrics
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"


# -- out-of-distribution flags -------------------------------------------------------------


def test_digits_carry_ood_flags_and_the_rates_are_as_expected(
    server: Server, data_dir: Path, record_property
) -> None:
    found = ood_rates.measure(server.url, data_dir, mnist_count=1000, others=200)
    results = found["results"]
    print(json.dumps(found, indent=1))
    for kind, figures in results.items():
        record_property(f"ood_{kind}", f"{figures['flagged']}/{figures['items']}")
    # Loose bounds: the threshold is the 99th percentile of the test split, so ~1% false
    # alarms; noise and inverted digits are far from anything an autoencoder of MNIST knows.
    assert results["mnist_test"]["rate"] < 0.05, results
    assert results["noise"]["rate"] > 0.9, results
    assert results["inverted_digits"]["rate"] > 0.9, results
    client = httpx.Client(base_url=server.url, timeout=60)
    body = {
        "inputs": [
            {"name": "image", "shape": [2, 28, 28], "datatype": "FP32", "data": [0.0] * 1568}
        ]
    }
    reply = client.post("/v2/models/digits/infer", json=body).json()
    names = {o["name"]: o for o in reply["outputs"]}
    assert names["in_distribution"]["datatype"] == "BOOL"
    assert len(names["ood_score"]["data"]) == 2
    # TF Serving answers keep their one-output form: rows of 10 probabilities.
    rows = client.post("/v1/models/digits:predict", json={"instances": [[[0.0] * 28] * 28]})
    assert len(rows.json()["predictions"][0]) == 10, rows.text
    native = client.post("/digits/predict", json={"inputs": [[[0.0] * 28] * 28]}).json()
    assert isinstance(native["predictions"][0]["in_distribution"], bool)
    state = client.get("/models/digits").json()["drift"]
    assert state["ood"]["items"] >= 1000 and state["ood"]["unavailable"] is None
    # The counter (counted in plain Python, handed over at the flush before each scrape)
    # holds every item scored and every one flagged, as /models does.
    scraped: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("serving_ood_items_total{") and 'model="digits"' in line:
            inside = line.split('in_distribution="')[1].split('"')[0]
            scraped[inside] = scraped.get(inside, 0) + float(line.split()[-1])
    assert sum(scraped.values()) == state["ood"]["items"], (scraped, state["ood"])
    assert scraped.get("false", 0) == state["ood"]["flagged"], (scraped, state["ood"])


def _detector_scores(repository: Path, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The autoencoder's score of each item, computed here: its ONNX graph in ONNX Runtime,
    then each item's mean squared difference to its reconstruction; and the threshold the
    autoencoder's manifest records."""
    import onnxruntime as ort

    folders = [p for p in (repository / "autoencoder").iterdir() if p.name.isdigit()]
    folder = max(folders, key=lambda p: int(p.name))
    manifest = json.loads((folder / "manifest.json").read_text())
    signature = manifest["signatures"]["reconstruct"]
    session = ort.InferenceSession(
        str(folder / signature["onnx"]), providers=["CPUExecutionProvider"]
    )
    items = x.reshape(len(x), -1).astype(np.float32)
    (rebuilt,) = session.run(None, {signature["inputs"][0]["name"]: items})
    return ((rebuilt.astype(np.float64) - items) ** 2).mean(axis=1), manifest["detector"][
        "threshold"
    ]


def test_each_request_in_a_batch_gets_the_detector_score_of_its_own_items(
    server: Server, repository: Path, data_dir: Path
) -> None:
    """Requests sent together (they share batches, which the detector scores at once) each
    get the reconstruction error of their own items, as ONNX Runtime computes it here, and
    the flag its threshold gives: MNIST digits mostly in, noise out."""
    from benchmarks.payloads import mnist_test
    from modelspec import digits

    images, _ = mnist_test(data_dir, 16)
    noise = np.random.default_rng(5).random((8, 28, 28))
    x = np.concatenate([digits.scale_pixels(images), noise]).astype(np.float32)
    expected, threshold = _detector_scores(repository, x)
    # 24 requests of one item each, and 3 of three items (rotating through the same x).
    requests = [[i] for i in range(len(x))] + [[i, (i + 7) % 24, (i + 13) % 24] for i in (0, 5, 9)]

    async def send_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(indices: list[int]) -> dict:
                data = x[indices].reshape(-1).tolist()
                tensor = {"name": "image", "shape": [len(indices), 28, 28], "datatype": "FP32"}
                body = {"inputs": [{**tensor, "data": data}]}
                reply = await client.post("/v2/models/digits/infer", json=body)
                assert reply.status_code == 200, reply.text
                return {o["name"]: o["data"] for o in reply.json()["outputs"]}

            return await asyncio.gather(*(one(r) for r in requests * 3))

    answers = asyncio.run(send_all())
    flags = []
    for indices, answer in zip(requests * 3, answers, strict=True):
        got = np.asarray(answer["ood_score"], np.float64)
        np.testing.assert_allclose(
            got, expected[indices], rtol=1e-4, atol=1e-6, err_msg=str(indices)
        )
        for i, inside in zip(indices, answer["in_distribution"], strict=True):
            if abs(expected[i] - threshold) > 1e-4 * threshold:  # not on the edge
                assert inside == bool(expected[i] <= threshold), (i, expected[i], threshold)
            flags.append(inside)
    # Both kinds of answer came back, so a score given to the wrong request would show.
    assert any(flags) and not all(flags), (expected.round(4).tolist(), threshold)


def test_flags_missing_for_a_reason_still_answer_and_follow_the_detector(
    repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The pairing's reasons for no flags (a detector taking another size, the detector
    unloaded, a detector version without a threshold): each answer still comes, with
    ``ood_score`` null and ``in_distribution`` true, the reason under /models, and nothing
    counted; the detector's versions are followed as they come and go."""
    from benchmarks.payloads import bank_records

    repo = tmp_path / "repo"
    for model in ("bank", "digits", "autoencoder"):
        shutil.copytree(repository / model / "1", repo / model / "1")
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  bank:\n    ood: {detector: autoencoder, threshold: 0.1}\n")
    token = "ood-test-admin-token"
    server = _serve(
        repo, tmp_path / "serve.log", workers="1", config=str(config), admin_token=token,
        poll_interval="0.3",
    )  # fmt: skip
    admin = {"authorization": f"Bearer {token}"}
    client = httpx.Client(base_url=server.url, timeout=60)
    digit = {"inputs": [[[0.0] * 28] * 28]}

    def digits_flag() -> tuple[dict, dict]:
        reply = client.post("/digits/predict", json=digit)
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"][0], client.get("/models/digits").json()["drift"]["ood"]

    def unflagged(prediction: dict, state: dict, reason: str) -> None:
        assert prediction["ood_score"] is None and prediction["in_distribution"] is True, prediction
        assert reason in (state["unavailable"] or ""), state

    try:
        prediction, state = digits_flag()
        assert isinstance(prediction["ood_score"], float) and state["unavailable"] is None, state
        # A detector that takes another number of values per item: bank answers unflagged.
        reply = client.post("/bank/predict", json=bank_records(data_dir, 1)[0])
        assert reply.status_code == 200, reply.text
        bank = client.get("/models/bank").json()["drift"]["ood"]
        unflagged(reply.json()["predictions"][0], bank, "takes 784 values per item, not 51")
        assert bank["items"] == 0, bank
        # The detector unloaded, then loaded again: followed at the next batch.
        counted = state["items"]
        assert client.post("/v2/repository/models/autoencoder/unload", headers=admin).is_success
        prediction, state = digits_flag()
        unflagged(prediction, state, "detector 'autoencoder' is not served")
        assert state["items"] == counted, state
        assert client.post("/v2/repository/models/autoencoder/load", headers=admin).is_success
        prediction, state = digits_flag()
        assert isinstance(prediction["ood_score"], float) and state["unavailable"] is None, state
        assert state["items"] == counted + 1, state
        # A new detector version whose manifest records no threshold: flags stop when it
        # goes live (published as the CLI publishes: files first, the manifest last).
        stage = repo / "autoencoder" / ".stage-2"
        shutil.copytree(repo / "autoencoder" / "1", stage)
        manifest = json.loads((stage / "manifest.json").read_text())
        del manifest["detector"]
        (stage / "manifest.json").write_text(json.dumps(manifest))
        stage.rename(repo / "autoencoder" / "2")
        deadline = time.monotonic() + 120
        while prediction["ood_score"] is not None and time.monotonic() < deadline:
            time.sleep(0.3)
            prediction, state = digits_flag()
        unflagged(prediction, state, "no threshold")
        served = client.get("/models/autoencoder").json()
        assert [v["version"] for v in served["versions"] if v["state"] == "ready"] == [2], served
    finally:
        client.close()
        server.stop()


# -- the page ------------------------------------------------------------------------------


def test_the_page_shows_each_model_live(server: Server, tmp_path: Path) -> None:
    from tests.test_page import BROWSER, _visit

    if BROWSER is None:
        pytest.fail("no chromium: install Debian's package `chromium`")
    client = httpx.Client(base_url=server.url, timeout=60)
    x = np.random.default_rng(0).random((40, 28, 28)).round(3).tolist()
    assert client.post("/digits/predict", json={"inputs": x}).status_code == 200
    paths = list(client.get("/docs.json").json()["paths"])  # drawn before the DOM is read
    dom, requests, png = asyncio.run(_visit(BROWSER, server.url + "/", tmp_path / "profile", paths))
    (tmp_path / "page.png").write_bytes(png)
    assert 'id="health-table"' in dom
    assert 'data-model="bank"' in dom and 'class="drift-plot"' in dom
    assert "drift-score" in dom  # the scores once the window is full (after the bank test)
    assert ">n/a<" in dom  # labels, traffic, shadow, storage error: not in this server yet
    assert any(urlsplit(r).path == "/models/bank/drift.png" for r in requests), requests
    ours = urlsplit(server.url).netloc
    assert [r for r in requests if urlsplit(r).netloc not in (ours, "")] == []


# -- payload logs --------------------------------------------------------------------------


class Blackhole:
    """A collector that accepts connections and never answers: a dead HTTP sink."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/events"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


SAMPLE = 0.3


@pytest.fixture(scope="module")
def logging_server(repository: Path, tmp_path_factory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("payloads")
    sink = Blackhole()
    server = _serve(
        repository,
        folder / "serve.log",
        payload_log_sample=str(SAMPLE),
        payload_log_file=str(folder / "payloads.jsonl"),
        payload_log_url=sink.url,
        payload_log_max_bytes="16384",
        payload_log_backups="50",
        payload_log_queue="4",
    )
    try:
        yield server, folder
    finally:
        server.stop()
        sink.close()


def test_payload_logs_are_sampled_written_rotated_and_a_dead_sink_delays_nothing(
    logging_server: tuple[Server, Path], repository: Path, data_dir: Path
) -> None:
    server, folder = logging_server
    table = load_bank(data_dir)
    indices = _manifest(repository, "bank")["test_split"]["indices"]
    client = httpx.Client(base_url=server.url, timeout=60)
    sent, latency = 600, {}
    for n in range(sent):
        rid = f"req-{n:04d}"
        started = time.perf_counter()
        reply = client.post(
            "/bank/predict", json=table.records[indices[n]], headers={"x-request-id": rid}
        )
        latency[rid] = time.perf_counter() - started
        assert reply.status_code == 200
    time.sleep(1.0)  # the file sink's thread writes what is queued
    files = sorted(folder.glob("payloads.jsonl*"))
    assert len(files) > 1, "no rotation"
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    logged = {line["id"] for line in lines}
    # Binomial(600, 0.3): mean 180, sd 11.2; 5 sd either side.
    assert abs(len(lines) - sent * SAMPLE) < 5 * (sent * SAMPLE * (1 - SAMPLE)) ** 0.5, len(lines)
    first = lines[0]
    assert first["model"] == "bank" and first["version"] == 1
    assert first["inputs"]["age"] == table.records[indices[int(first["id"][4:])]]["age"]
    assert set(first["outputs"]) == {"probability", "label"}
    assert first["latency_ms"] > 0 and first["time"].endswith("+00:00")
    # The HTTP sink never answers: its queue of 4 fills and the rest are dropped, counted.
    metrics = client.get("/metrics").text
    dropped = [m for m in metrics.splitlines() if m.startswith("serving_payload_log_dropped")]
    assert any('sink="http"' in m and float(m.split()[-1]) > 10 for m in dropped), dropped
    # Requests that were logged (offered to the dead sink) took no longer than the others.
    sampled = statistics.median(v for k, v in latency.items() if k in logged)
    others = statistics.median(v for k, v in latency.items() if k not in logged)
    assert sampled < 2 * others + 0.005, (
        f"median {sampled * 1000:.2f} ms logged vs {others * 1000:.2f} ms not logged "
        "(limit: twice + 5 ms)"
    )


def test_inputs_can_be_hashed_or_left_out() -> None:
    body = b'{"age": 41}'
    record = ("r1", "bank", 1, "/bank/predict", 0.0, body, "application/json", {}, 0.001)
    assert render(record, "full")["inputs"] == {"age": 41}
    hashed = render(record, "hash")
    assert "inputs" not in hashed and len(hashed["inputs_sha256"]) == 64
    assert "inputs" not in render(record, "none") and "inputs_sha256" not in render(record, "none")


def _exposed(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=60).text
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}


def test_the_dashboard_and_rules_query_monitoring_series_that_exist(
    server: Server, logging_server: tuple[Server, Path]
) -> None:
    """After the tests above sent their traffic (drift windows full, digits scored, payloads
    logged), every monitoring series deploy/monitoring queries is on a live /metrics."""
    from tests.test_deploy import ROOT, used_metrics

    monitoring = ROOT / "deploy" / "monitoring"
    queried = used_metrics((monitoring / "dashboard.json").read_text())
    queried |= used_metrics((monitoring / "prometheusrule.yaml").read_text())
    wanted = queried & set(MONITORING_METRICS)
    assert wanted == set(MONITORING_METRICS), wanted
    exposed = _exposed(server.url) | _exposed(logging_server[0].url)
    assert wanted <= exposed, sorted(wanted - exposed)


def test_a_users_model_exported_with_reference_inputs_gets_drift_checks(tmp_path: Path) -> None:
    import keras

    from tests.conftest import run_cli

    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(3, activation="softmax", name="scores")(inputs)
    keras.Model(inputs, outputs, name="iris_mlp").save(tmp_path / "iris.keras")
    sample = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    np.save(tmp_path / "train.npy", sample)
    repository = tmp_path / "models"
    result = run_cli(
        "export", "--model", str(tmp_path / "iris.keras"), "--repository", str(repository),
        "--reference-inputs", str(tmp_path / "train.npy"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = repository / "iris_mlp" / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][REFERENCE_FILE] == sha256_file(folder / REFERENCE_FILE)
    reference = json.loads((folder / REFERENCE_FILE).read_text())
    assert set(reference["features"]) == {"x0", "x1", "x2", "x3"}  # one histogram per column
    assert reference["items"] == 500
    np.save(tmp_path / "wrong.npy", sample[:, :3])
    result = run_cli(
        "export", "--model", str(tmp_path / "iris.keras"), "--repository", str(repository),
        "--reference-inputs", str(tmp_path / "wrong.npy"),
    )  # fmt: skip
    assert result.returncode != 0 and "does not fit input 'features'" in result.stderr
    assert not (repository / "iris_mlp" / "2").exists()
