"""The run's results for people: a Markdown table, a JSON file and a bar chart.

Each server is one row (a dict, see ``run``): who it is, whether it speaks V2 natively, how it
batches, one ``runs`` entry per concurrency, and a status (with a ``reason`` where there is
more to say) that says why numbers are missing or not to be trusted: install or start failed,
wrong answer, failed requests. The table
shows the lowest concurrency's req/s and p50 (latency of one client alone) and the highest
one's req/s and p99 (throughput under load, and its tail); ratios use the highest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def run_at(row: Row, concurrency: int) -> dict[str, Any] | None:
    return next((r for r in row.get("runs", []) if r["concurrency"] == concurrency), None)


def rps(row: Row | None, concurrency: int) -> float | None:
    run = run_at(row, concurrency) if row else None
    return run["requests_per_s"] if run else None


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def v2(row: Row) -> str:
    return {True: "yes", False: "no (adapted)", None: "-"}[row.get("native_v2")]


def table(rows: list[Row], concurrency: list[int]) -> str:
    low, high = min(concurrency), max(concurrency)
    ours = next((r for r in rows if r["kind"] == "ours"), None)
    floor = next((r for r in rows if r["kind"] == "http floor"), None)
    lines = [
        f"| server | speaks V2 natively | batching | c={low} req/s | c={low} p50 ms "
        f"| c={high} req/s | c={high} p99 ms | vs ours (c={high}) | vs HTTP floor (c={high}) "
        "| status / notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        first, last = run_at(row, low), run_at(row, high)
        reason = row.get("reason", "")
        reason = reason if len(reason) <= 120 else reason[:117] + "..."  # all of it in the JSON
        notes = "; ".join(x for x in (row["status"], reason, row.get("notes", "")) if x)
        lines.append(
            f"| {row['server']} | {v2(row)} | {row.get('batching', '-')} "
            f"| {number(first and first['requests_per_s'])} "
            f"| {number(first and first['p50_ms'], 1)} "
            f"| {number(last and last['requests_per_s'])} "
            f"| {number(last and last['p99_ms'], 1)} "
            f"| {ratio(rps(row, high), rps(ours, high))} "
            f"| {ratio(rps(row, high), rps(floor, high))} | {notes} |"
        )
    return "\n".join(lines)


def model_floor_line(model_floor: dict[str, float]) -> str:
    return "ONNX Runtime in-process (no HTTP), images/s: " + ", ".join(
        f"batch {k.split('_')[1]}: {v:,.0f}" for k, v in model_floor.items()
    )


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def plot(rows: list[Row], concurrency: list[int], path: Path, title: str) -> None:
    """Requests/s per server, one bar per concurrency; failed servers say so instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["server"] for r in rows]
    y = np.arange(len(rows))
    height = 0.8 / len(concurrency)
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(14, 1.0 + 0.6 * len(rows)),
        sharey=True,
        width_ratios=(3, 2),
        layout="constrained",
    )
    for i, level in enumerate(sorted(concurrency)):
        values = [rps(r, level) or 0 for r in rows]
        bars = left.barh(y + i * height, values, height, label=f"c={level}")
        left.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7)
    high = max(concurrency)
    p99 = [(run_at(r, high) or {}).get("p99_ms") or 0 for r in rows]
    bars = right.barh(y + height * (len(concurrency) - 1) / 2, p99, 0.6, color="tab:gray")
    right.bar_label(bars, labels=[f"{v:,.1f}" if v else "" for v in p99], fontsize=7)
    for row, position in zip(rows, y, strict=True):
        if row["status"] not in ("ok", ""):
            left.text(0, position, f"  {row['status']}", va="bottom", fontsize=7, color="tab:red")
    left.set_yticks(y + height * (len(concurrency) - 1) / 2, labels)
    left.invert_yaxis()
    left.set_xlabel("requests/s (200 answers only), more is better")
    left.legend(loc="lower right", fontsize=8)
    right.set_xlabel(f"p99 latency at c={high} (ms), less is better")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
