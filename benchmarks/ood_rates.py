"""How often digits' out-of-distribution flag fires, per kind of input, through a running
server's native route (``POST /digits/predict``):

- MNIST test digits (false alarms), sent as JSON floats;
- flower photos (JPEG files, prepared the MNIST way by the service, ``invert=auto``);
- uniform noise (JSON floats);
- letters A-Z and a-z drawn white on black in several fonts, sizes and slants (PNG files,
  ``invert=false``);
- MNIST test digits inverted (black on white) and sent as 28x28 PNGs with ``invert=false``.

    python -m benchmarks.ood_rates --url http://127.0.0.1:3000 --data-dir DATA --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BATCH = 64
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))


def _png(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _fonts(sizes: tuple[int, ...]) -> list[Any]:
    files = [p for d in FONT_DIRS if d.is_dir() for p in sorted(d.glob("*.ttf"))][:6]
    if not files:
        return [ImageFont.load_default(size=s) for s in sizes]
    return [ImageFont.truetype(str(f), s) for f in files for s in sizes]


def letters(count: int, seed: int = 0) -> list[bytes]:
    """Letters white on black, ~100 px, as PNG files; a few fonts, sizes and slants."""
    rng = np.random.default_rng(seed)
    alphabet = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [
        chr(c) for c in range(ord("a"), ord("z") + 1)
    ]
    fonts = _fonts((70, 90))
    found = []
    for i in range(count):
        canvas = Image.new("L", (128, 128), 0)
        draw = ImageDraw.Draw(canvas)
        font = fonts[int(rng.integers(len(fonts)))]
        draw.text((20, 5), alphabet[i % len(alphabet)], fill=255, font=font)
        canvas = canvas.rotate(float(rng.uniform(-12, 12)), fillcolor=0)
        found.append(_png(np.asarray(canvas)))
    return found


def _post(client: httpx.Client, **request: Any) -> list[dict[str, Any]]:
    reply = client.post("/digits/predict", **request)
    reply.raise_for_status()
    return reply.json()["predictions"]


def _json_items(client: httpx.Client, x: np.ndarray) -> list[dict[str, Any]]:
    found = []
    for i in range(0, len(x), BATCH):
        found += _post(client, json={"inputs": x[i : i + BATCH].round(4).tolist()})
    return found


def _files(client: httpx.Client, files: list[bytes], kind: str, invert: str) -> list[dict]:
    found = []
    for i in range(0, len(files), BATCH):
        upload = [("image", (f"{j}.{kind}", data, f"image/{kind}")) for j, data in
                  enumerate(files[i : i + BATCH])]  # fmt: skip
        found += _post(client, files=upload, params={"invert": invert})
    return found


def _rate(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    flagged = sum(1 for p in predictions if not p["in_distribution"])
    scores = [p["ood_score"] for p in predictions]
    return {
        "items": len(predictions),
        "flagged": flagged,
        "rate": flagged / len(predictions),
        "median_score": float(np.median(scores)),
    }


def measure(url: str, data_dir: Path, mnist_count: int, others: int) -> dict[str, Any]:
    with np.load(data_dir / "mnist.npz") as mnist:
        x_test = mnist["x_test"][:mnist_count]
    digits = x_test.astype(np.float32) / 255
    photos = sorted((data_dir / "flowers").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    photos = [photos[i] for i in rng.choice(len(photos), min(others, len(photos)), False)]
    with httpx.Client(base_url=url, timeout=120) as client:
        threshold = client.get("/models/digits").json()["drift"]["ood"]
        results = {
            "mnist_test": _rate(_json_items(client, digits)),
            "flower_photos": _rate(
                _files(client, [p.read_bytes() for p in photos], "jpeg", "auto")
            ),
            "noise": _rate(_json_items(client, rng.random((others, 28, 28), np.float32))),
            "letters": _rate(_files(client, letters(others), "png", "false")),
            "inverted_digits": _rate(
                _files(client, [_png(255 - d) for d in x_test[:others]], "png", "false")
            ),
        }
    return {"detector": threshold, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--mnist", type=int, default=10_000, help="MNIST test digits sent")
    parser.add_argument("--others", type=int, default=500, help="items of each other kind")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    found = measure(args.url, args.data_dir, args.mnist, args.others)
    for kind, figures in found["results"].items():
        print(
            f"{kind:16s} {figures['flagged']:5d} / {figures['items']:5d} flagged "
            f"({100 * figures['rate']:.2f}%), median score {figures['median_score']:.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
