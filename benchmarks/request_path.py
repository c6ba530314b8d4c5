"""How far one request travels: the service modules whose functions run on the event loop's
thread from ``App.__call__`` to the reply, the calls into them, and the calls from
``service/inference.py`` back up into a protocol module (``native.py``, ``protocols/``). Of
those modules, the ones the request passes through (a function of theirs calls into another
service module) apart from the leaves it only visits (called, they return).

    python -m benchmarks.request_path --repository /work/quick-models
    python -m benchmarks.request_path ... --checkout ../before   # the service of another tree

One warm request each: V2 JSON to ``/v2/models/digits/infer`` and a PNG to
``/digits/predict``, scored for its default OOD flag when the autoencoder is there too,
through the real app in this process (``tests.unit.synthetic``'s ``InProcess``: real
registry, batchers, ONNX Runtime; no monitor, so only the first output is asked for).
A call is a ``sys.setprofile`` "call" event, coroutine resumptions included.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PROTOCOL_MODULES = ("service/native.py", "service/protocols/")


def follow(
    root: Path, send: Callable[[], Any], status: int = 200
) -> tuple[list[str], list[str], int, int]:
    send()  # warm: adapters built, memos filled
    modules: set[str] = set()
    onward: set[str] = set()  # modules the request passes through: they call another one
    counts = {"calls": 0, "up": 0}
    service = f"{root / 'service'}/"

    def profile(frame: Any, event: str, _: Any) -> None:
        name = frame.f_code.co_filename
        if event != "call" or not name.startswith(service):
            return
        module = name[len(str(root)) + 1 :]
        modules.add(module)
        counts["calls"] += 1
        caller = frame.f_back
        if caller is not None and caller.f_code.co_filename.startswith(service):
            calling = caller.f_code.co_filename[len(str(root)) + 1 :]
            if calling != module:
                onward.add(calling)
        if (
            caller is not None
            and caller.f_code.co_filename.endswith("service/inference.py")
            and module.startswith(PROTOCOL_MODULES)
        ):
            counts["up"] += 1

    sys.setprofile(profile)
    try:
        response = send()
    finally:
        sys.setprofile(None)
    assert response.status_code == status, response.text
    return sorted(modules), sorted(onward), counts["calls"], counts["up"]


def requests_of(server: Any, model: str = "digits") -> dict[str, tuple[Callable[[], Any], int]]:
    """The requests followed and the status each gets, for an ``InProcess`` server serving
    ``model`` (an image classifier of 28x28 pictures, as digits): V2 JSON and a PNG, each
    answered and refused (a refusal is written by the protocol: its own path down)."""
    picture = io.BytesIO()
    pixels = (np.arange(784) % 255).astype("uint8").reshape(28, 28)
    Image.fromarray(pixels).save(picture, "PNG")
    meta = server.request("GET", f"/v2/models/{model}").json()
    tensor = meta["inputs"][0]
    body = {
        "inputs": [
            {
                "name": tensor["name"],
                "shape": [1, *tensor["shape"][1:]],
                "datatype": "FP32",
                "data": [0.0] * int(np.prod(tensor["shape"][1:])),
            }
        ],
        "outputs": [{"name": meta["outputs"][0]["name"]}],
    }
    wrong = {"inputs": [{**body["inputs"][0], "shape": [1, 27, 29]}]}
    v2, native = f"/v2/models/{model}/infer", f"/{model}/predict"
    return {
        f"V2 JSON {v2}": (lambda: server.request("POST", v2, json=body), 200),
        f"native PNG {native}": (
            lambda: server.request("POST", native, files={"image": ("d.png", picture.getvalue())}),
            200,
        ),
        f"V2 JSON {v2}, refused (wrong shape)": (
            lambda: server.request("POST", v2, json=wrong),
            400,
        ),
        f"native PNG {native}, refused (not an image)": (
            lambda: server.request("POST", native, files={"image": ("d.png", b"not a png")}),
            415,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="holds digits/")
    parser.add_argument("--checkout", type=Path, default=Path(__file__).parents[1])
    args = parser.parse_args()
    root = args.checkout.resolve()
    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.unit.synthetic from here
    sys.path.insert(0, str(root))  # service from the checkout followed
    from tests.unit.synthetic import InProcess

    repository = Path(tempfile.mkdtemp()) / "models"
    for model in ("digits", "autoencoder"):  # digits' OOD detector, when trained beside it
        if (args.repository / model).is_dir():
            shutil.copytree(args.repository / model, repository / model)
    with InProcess(repository) as server:
        for label, (send, status) in requests_of(server).items():
            modules, onward, calls, up = follow(root, send, status)
            print(f"{label}: {len(modules)} modules, {calls} calls, {up} call-backs up")
            print("   ", " ".join(m.removeprefix("service/") for m in modules))
            print(f"  passing through {len(onward)} (the others are called and return):")
            print("   ", " ".join(m.removeprefix("service/") for m in onward))


if __name__ == "__main__":
    main()
