"""``/models/{m}/drift.png``: the reference and live distributions of each feature side by
side, drawn with Pillow (the serving install has no matplotlib; a few bars need none)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from modelspec.reference import ALERT

PANEL_W, PANEL_H, COLUMNS = 300, 150, 3
REFERENCE_COLOUR, LIVE_COLOUR, ALERT_COLOUR = (150, 150, 150), (31, 119, 180), (214, 39, 40)


def _labels(spec: dict[str, Any]) -> list[str]:
    if spec["kind"] == "categorical":
        return [str(c) for c in spec["categories"]]
    edges = spec["edges"]
    return [f"<{edges[0]:g}", *[f"{e:g}" for e in edges]]


def render(
    title: str, specs: dict[str, dict[str, Any]], live: dict[str, list[int]], scores: dict
) -> bytes:
    """One panel per feature: grey bars the reference's shares, blue bars the live window's;
    the PSI in the panel's title, red above the alert threshold."""
    font = ImageFont.load_default()
    names = list(specs)
    rows = max(1, -(-len(names) // COLUMNS))
    image = Image.new("RGB", (PANEL_W * COLUMNS, 30 + PANEL_H * rows), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), title, fill="black", font=font)
    draw.rectangle(
        (PANEL_W * COLUMNS - 250, 10, PANEL_W * COLUMNS - 240, 20), fill=REFERENCE_COLOUR
    )
    draw.text((PANEL_W * COLUMNS - 235, 8), "reference", fill="black", font=font)
    draw.rectangle((PANEL_W * COLUMNS - 160, 10, PANEL_W * COLUMNS - 150, 20), fill=LIVE_COLOUR)
    draw.text((PANEL_W * COLUMNS - 145, 8), "live window", fill="black", font=font)
    for index, name in enumerate(names):
        spec = specs[name]
        left = (index % COLUMNS) * PANEL_W + 10
        top = 30 + (index // COLUMNS) * PANEL_H
        score = scores.get(name)
        heading = f"{name}: PSI {score:.3f}" if score is not None else f"{name}: window filling"
        colour = ALERT_COLOUR if score is not None and score > ALERT else "black"
        draw.text((left, top + 2), heading, fill=colour, font=font)
        expected = spec["counts"]
        observed = live.get(name, [0] * len(expected))
        total_e, total_o = max(sum(expected), 1), max(sum(observed), 1)
        shares = [(e / total_e, o / total_o) for e, o in zip(expected, observed, strict=False)]
        tallest = max([max(pair) for pair in shares] + [1e-9])
        base, height = top + PANEL_H - 28, PANEL_H - 50
        width = (PANEL_W - 30) / max(len(shares), 1)
        for j, (e, o) in enumerate(shares):
            x = left + j * width
            bar = max(width / 2 - 1, 1)
            draw.rectangle((x, base - height * e / tallest, x + bar, base), fill=REFERENCE_COLOUR)
            draw.rectangle(
                (x + bar, base - height * o / tallest, x + 2 * bar, base), fill=LIVE_COLOUR
            )
        draw.line((left, base, left + PANEL_W - 30, base), fill="black")
        labels = _labels(spec)
        if labels:
            draw.text((left, base + 3), labels[0][:12], fill="black", font=font)
            draw.text((left + PANEL_W - 100, base + 3), labels[-1][:12], fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
