"""Triton's perf_analyzer against our V2 endpoint, with real MNIST digits as input.

``python -m benchmarks.perf_analyzer --url 127.0.0.1:3000 --data-dir ../shared/datasets``

perf_analyzer ships on PyPI (``perf-analyzer``) as a wheel for glibc >= 2.38. Where the
system's glibc is older (Debian 12 has 2.36), pip refuses it; this module then fetches the
same wheel with ``pip download --platform``, and the C/C++ runtime libraries of Debian 13
with ``apt-get download`` (no root, nothing installed system-wide), and runs the binary
through that runtime's own loader. Everything lands in a cache folder and is reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.payloads import mnist_test
from modelspec import digits

VERSION = "2.60.0"
WHEEL_PLATFORM = "manylinux_2_38_x86_64"
RUNTIME_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1", "libssl3t64", "zlib1g")
RUNTIME_SOURCE = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian trixie main\n"
)
CACHE = Path(os.environ.get("PERF_ANALYZER_CACHE", Path.home() / ".cache" / "keras-model-serving"))


def command(cache: Path = CACHE) -> list[str]:
    """The command line that runs perf_analyzer here, fetching what it needs once."""
    installed = shutil.which("perf_analyzer")
    if installed and _runs([installed]):
        return [installed]
    binary = _fetch_binary(cache / f"perf_analyzer-{VERSION}")
    if _runs([str(binary)]):
        return [str(binary)]
    libs = _fetch_runtime(cache / "trixie-runtime") / "usr" / "lib" / "x86_64-linux-gnu"
    wrapped = [str(libs / "ld-linux-x86-64.so.2"), "--library-path", str(libs), str(binary)]
    if not _runs(wrapped):
        raise RuntimeError(f"perf_analyzer does not run here, even with {libs}")
    return wrapped


def _runs(cmd: list[str]) -> bool:
    """perf_analyzer without a model prints usage; a loader failure mentions GLIBC."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    output = result.stdout + result.stderr
    return "GLIBC" not in output and "error while loading" not in output


def _fetch_binary(folder: Path) -> Path:
    binary = folder / "perf_analyzer" / "bin" / "perf_analyzer"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        pip += ["--platform", WHEEL_PLATFORM, "-d", download, f"perf-analyzer=={VERSION}"]
        subprocess.run(pip, check=True, capture_output=True)
        (wheel,) = Path(download).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
    binary.chmod(0o755)
    return binary


def _fetch_runtime(folder: Path) -> Path:
    """Debian 13's glibc and libstdc++, unpacked into ``folder`` (not installed)."""
    root = folder / "root"
    if (root / "usr" / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2").is_file():
        return root
    state = folder / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(RUNTIME_SOURCE)
    options = [
        f"-oDir::Etc::SourceList={state / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={state / 'lists'}",
        f"-oDir::Cache={state / 'cache'}",
        "-oAPT::Sandbox::User=root",
    ]
    subprocess.run(["apt-get", *options, "update"], check=True, capture_output=True)
    subprocess.run(
        ["apt-get", *options, "download", *RUNTIME_PACKAGES],
        check=True,
        capture_output=True,
        cwd=state / "debs",
    )
    for deb in (state / "debs").glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def write_input_data(images: np.ndarray, path: Path) -> Path:
    """perf_analyzer's input-data JSON: one real digit per request, cycled through."""
    pixels = digits.scale_pixels(images)
    steps = [{"image": {"content": p.ravel().tolist(), "shape": [28, 28]}} for p in pixels]
    path.write_text(json.dumps({"data": steps}))
    return path


def run(
    url: str,
    model: str,
    input_data: Path,
    concurrency: str,
    out: Path,
    interval_ms: int = 2000,
    protocol: str = "http",
    stability_pct: int = 10,
    max_trials: int | None = None,
    label: str = "",
) -> list[dict[str, float]]:
    """One perf_analyzer run over V2 (``http``: binary tensors; ``grpc``: raw contents); its
    CSV rows as numbers. ``max_trials`` bounds the measurement windows per concurrency (10 by
    default); ``label`` tells apart the CSV and log of runs with the same model and protocol."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"perf_analyzer_{model}_{protocol}{label and '_' + label}"
    report = out / f"{name}.csv"
    args = ["-m", model, "-u", url, "-i", protocol, "--concurrency-range", concurrency]
    args += ["--measurement-interval", str(interval_ms), "--input-data", str(input_data)]
    # perf_analyzer repeats a window until three agree within this; tests on a busy machine
    # only need the numbers to exist, so they widen it.
    args += ["--stability-percentage", str(stability_pct)]
    if max_trials is not None:
        args += ["--max-trials", str(max_trials)]
    args += ["-f", str(report)]
    result = subprocess.run(command() + args, capture_output=True, text=True, timeout=600)
    (out / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{result.stdout[-3000:]}{result.stderr}")
    with report.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:3000", help="host:port of the service")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist.npz")
    parser.add_argument("--concurrency", default="1:8:7", help="perf_analyzer range start:end:step")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    images, _ = mnist_test(options.data_dir, 256)
    data = write_input_data(images, options.out / "perf_analyzer_digits.json")
    rows = run(
        options.url, "digits", data, options.concurrency, options.out, protocol=options.protocol
    )
    (options.out / "perf_analyzer_digits_summary.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(
            f"concurrency {row['Concurrency']:.0f}: {row['Inferences/Second']:.0f} infer/s, "
            f"p50 {row['p50 latency'] / 1000:.2f} ms, p99 {row['p99 latency'] / 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
