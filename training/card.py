"""The model card: what the model is for, how it was trained, how well it does, and its limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Section = tuple[str, str | Callable[[dict[str, Any]], str]]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Scalar metrics as a Markdown table (nested tables and matrices are left to the plots)."""
    rows = [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if isinstance(v, int | float | str)]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    rows = [
        f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for label, m in per_class.items()
    ]
    return "\n".join(
        ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|", *rows]
    )


def latency_table(latency: dict[str, dict[str, Any]]) -> str:
    """Milliseconds per item at batch 1 and 32, per signature, as the service runs the graph."""
    rows = [
        f"| `{name}` | {m['batch_1_ms_per_item']:.3f} | {m['batch_32_ms_per_item']:.3f} |"
        for name, m in latency.items()
    ]
    first = next(iter(latency.values()))
    return "\n".join(
        [
            f"{first['runtime']}, {first['threads']} thread(s), on the machine that trained it.",
            "",
            "| signature | ms/item, batch 1 | ms/item, batch 32 |",
            "|---|---|---|",
            *rows,
        ]
    )


_RUNTIMES = {
    "keras": "Keras",
    "saved_model": "SavedModel",
    "onnx": "ONNX Runtime",
    "onnx_reference": "ONNX reference",
}


def parity_text(parity: dict[str, Any]) -> str:
    """Which runtimes agreed, on what inputs, within what tolerance, and by how much."""
    reference = parity.get("reference", "keras")
    compared = {b for r in parity["signatures"].values() for b in r["max_abs_diff"]}
    names = ", ".join(_RUNTIMES.get(b, b) for b in [reference, *sorted(compared)])
    relative = parity.get("relative_tolerance") or 0
    bound = f"{parity['tolerance']}" + (f" + {relative} x |value|" if relative else "")
    lines = [
        f"{names} on {parity['input_source']}; tolerance {bound}: "
        f"**{'passed' if parity['passed'] else 'FAILED'}**."
    ]
    for name, r in parity["signatures"].items():
        diffs = ", ".join(
            f"{_RUNTIMES.get(b, b)} {d:.2e}" for b, d in sorted(r["max_abs_diff"].items())
        )
        lines.append(f"- `{name}`: {r['inputs']} inputs, max |diff| {diffs}")
    return "\n".join(lines)


QUICK_NOTICE = (
    "> **Quick profile**: trained on small subsets for 1-2 epochs, for tests and trials. "
    "Its metrics are far below the full recipe's; do not use it for real predictions "
    "(`python -m training train` without `--quick` trains the full model)."
)


def _tensor(t: dict[str, Any]) -> str:
    return f"{t['name']} {t['shape']} {t['dtype']}"


def _signature_line(name: str, signature: dict[str, Any]) -> str:
    inputs = ", ".join(_tensor(t) for t in signature["inputs"])
    outputs = ", ".join(_tensor(t) for t in signature["outputs"])
    return f"- `{name}`: {inputs} -> {outputs} (`{signature['onnx']}`)"


def render(
    manifest: dict[str, Any],
    title: str,
    intended_use: str,
    figures: list[tuple[str, str]],
    sections: list[Section],
    notes: list[str],
) -> str:
    training = manifest["training"]
    parity = manifest["parity"]
    signatures = "\n".join(_signature_line(name, s) for name, s in manifest["signatures"].items())
    parity_lines = parity_text(parity)
    quick = training["profile"] == "quick"
    parts = [
        f"# Model card: {title}" + (" (quick profile)" if quick else ""),
        *([QUICK_NOTICE] if quick else []),
        f"`{manifest['name']}` version {manifest['version']}, created {manifest['created_at']}, "
        f"profile **{training['profile']}**.",
        "## Intended use\n" + intended_use,
        "## Interface\n"
        + signatures
        + "\n\nPreprocessing:\n"
        + "\n".join(
            f"- {k}: {v}" for k, v in manifest["preprocessing"].items() if isinstance(v, str)
        ),
        "## Data\n" + "\n".join(f"- {k}: {v}" for k, v in manifest["data"].items()),
        "## Training\n" + "\n".join(f"- {k}: {v}" for k, v in training.items()),
        "## Test metrics\n" + metrics_table(manifest["metrics"]),
    ]
    if "per_class" in manifest["metrics"]:
        parts.append("### Per class\n" + per_class_table(manifest["metrics"]["per_class"]))
    for heading, body in sections:
        parts.append(f"## {heading}\n{body(manifest) if callable(body) else body}")
    if manifest.get("latency"):
        parts.append("## CPU latency\n" + latency_table(manifest["latency"]))
    parts.append("## Plots\n" + "\n\n".join(f"### {c}\n![{c}]({f})" for c, f in figures))
    parts.append("## Export parity\n" + parity_lines)
    if notes:
        parts.append("## Caveats\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def render_user(manifest: dict[str, Any]) -> str:
    """The short card of a model the project did not train: what it is, how to call it, how
    its export was checked. There are no metrics to report."""
    source = manifest["source"]
    signatures = "\n".join(_signature_line(n, s) for n, s in manifest["signatures"].items())
    parts = [
        f"# Model card: {manifest['title']}",
        f"`{manifest['name']}` version {manifest['version']}, created {manifest['created_at']}. "
        f"**User-supplied**: exported from `{source['path']}` ({source['format']}); no training "
        "metrics, no test split and no intended use are known to this project.",
        "## Interface\n" + signatures,
        "## Export parity\n" + parity_text(manifest["parity"]),
    ]
    if manifest.get("latency"):
        parts.append("## CPU latency\n" + latency_table(manifest["latency"]))
    if manifest.get("notes"):
        parts.append("## Notes\n" + "\n".join(f"- {n}" for n in manifest["notes"]))
    return "\n\n".join(parts) + "\n"
