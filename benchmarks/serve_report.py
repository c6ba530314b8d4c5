"""``serve_bench``'s results for people: a Markdown table per group, the JSON file, and a chart
of each ratio to its floor against its target.

A row (a dict, see ``serve_bench.new_row``) holds our measurement (``ours``) and its floor's
(``floor``), both in the row's ``unit`` (``throughput``: req/s, or images/s), the ratio of
the two, the ratio of the p50 latencies, the targets that apply with whether each was met,
and a status saying why numbers are missing or not to be trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]

TITLES = {
    "a": "(a) One digit per request; floor: bare ASGI app (uvicorn+httptools) reading the "
    "same body, answering a fixed JSON",
    "b": "(b) 64 digits per request, V2 binary tensor extension; floor: ONNX Runtime "
    "in-process at batch 64 (same graph, same digits)",
    "c": "(c) One JPEG per request, /flowers/predict; ceiling: decode + resize (modelspec, every "
    "core) + model at batch 32, in-process, same photo",
    "d": "(d) Workers, V2 JSON; floor: the bare ASGI app with as many uvicorn workers",
    "e": "(e) gRPC vs HTTP, driven by perf_analyzer; floor: a replay server of each protocol "
    "(answers each request with the service's first answer), driven the same way",
    "f": "(f) Tracing cost, V2 JSON: OpenTelemetry off, and exporting OTLP/HTTP to a local sink "
    "at each sampling ratio; floor: the bare ASGI app",
    "g": "(g) Stock BentoML (batchable API, same graph, native JSON body); floor: the bare ASGI "
    "app on the same body",
}


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def target_cell(row: Row) -> str:
    cells = []
    for t in row["targets"]:
        sign = ">=" if t["higher_is_better"] else "<="
        verdict = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        cells.append(f"{t['name']} {sign} {t['limit']:g}x: {verdict}")
    return "; ".join(cells) or "-"


def notes(row: Row) -> str:
    found = []
    ours, floor = row["ours"] or {}, row["floor"] or {}
    if row["concurrency"] == 1 and ours.get("mean_ms") and floor.get("mean_ms"):
        found.append(
            f"mean latency {ours['mean_ms']:.3f} vs {floor['mean_ms']:.3f} ms "
            f"({times(row.get('mean_latency_ratio'))})"
        )
    if row.get("ratio_with_detector") is not None:
        found.append(
            f"{times(row['ratio_with_detector'])} of the model + its OOD detector in-process "
            f"({row['floor_with_detector']['throughput']:,.0f} images/s)"
        )
    if row.get("vs_off") is not None:
        found.append(f"{row['vs_off']:.2f}x tracing-off req/s, p50 {times(row.get('p50_vs_off'))}")
    if row.get("exported"):
        spans = row["exported"].get("spans", 0)
        found.append(f"sink: {spans:,} spans, {row['exported'].get('bytes', 0) / 1e6:.1f} MB")
    if row.get("ours_over_baseline") is not None:
        found.append(
            f"ours: {row['ours_over_baseline']:.2f}x its req/s, "
            f"its p50 {times(row.get('baseline_p50_over_ours'))} ours"
        )
    if row["status"] != "ok":
        reason = row["reason"] if len(row["reason"]) <= 140 else row["reason"][:137] + "..."
        found.insert(0, f"**{row['status']}**" + (f": {reason}" if reason else ""))
    elif row["reason"]:
        found.append(row["reason"][:140])
    return "; ".join(found) or "ok"


def group_table(rows: list[Row]) -> str:
    unit = rows[0]["unit"] if rows[0]["unit"] != "-" else "req/s"
    floor_names = sorted({r["floor"]["name"] for r in rows if r.get("floor")})
    lines = [
        f"| measurement | server | client | c | ours {unit} | p50 ms | p99 ms | floor {unit} "
        f"| floor p50 ms | ours / floor | p50 / floor p50 | target | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ours, floor = row["ours"] or {}, row["floor"] or {}
        lines.append(
            f"| {row['label']} | {row['server']} | {row.get('client', '-')} "
            f"| {row['concurrency'] or '-'} "
            f"| {number(ours.get('throughput'))} | {number(ours.get('p50_ms'), 2)} "
            f"| {number(ours.get('p99_ms'), 2)} | {number(floor.get('throughput'))} "
            f"| {number(floor.get('p50_ms'), 2)} | {times(row['ratio'])} "
            f"| {times(row['p50_ratio'])} | {target_cell(row)} | {notes(row)} |"
        )
    if floor_names:
        lines.append("")
        lines.append("floors: " + "; ".join(floor_names))
    return "\n".join(lines)


def model_floor_line(row: Row) -> str:
    """The in-process figures: the best, then each intra-op thread count's."""
    model = row.get("model_floor") or {}

    def figures(found: dict[str, Any]) -> str:
        return ", ".join(
            f"{k.replace('_images_per_s', '').replace('_', ' ')} {v:,.0f}"
            for k, v in found.items()
            if isinstance(v, int | float)
        )

    line = f"in-process images/s, best: {figures(model)}"
    for threads, found in (model.get("by_threads") or {}).items():
        line += f"; {threads} thread{'s' if int(threads) > 1 else ''}: {figures(found)}"
    return line


def tables(rows: list[Row], report: dict[str, Any]) -> str:
    machine = report["machine"]
    out = [
        f"serve_bench: {report['command']}",
        f"machine: {machine['usable_cpus']} usable CPUs ({machine['cpu_model'] or '?'}), load "
        f"average {machine['load_average_start']} at start, "
        f"{machine.get('load_average_end', '-')} at end; checkout "
        f"{report['checkout']['path']} ({(report['checkout']['commit'] or '?')[:12]}); "
        f"{report['seconds_per_measurement']:g} s per measurement",
    ]
    for letter in sorted({r["letter"] for r in rows}):
        group = [r for r in rows if r["letter"] == letter]
        out += ["", f"### {TITLES[letter]}", "", group_table(group)]
        for row in group:
            if row.get("model_floor"):
                out.append(model_floor_line(row))
    return "\n".join(out)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def plot(rows: list[Row], report: dict[str, Any], path: Path) -> None:
    """Left: each row's throughput over its floor's, the target marked where there is one;
    right: p50 over the floor's p50 at the lowest concurrency (less is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def label(row: Row) -> str:
        return f"({row['letter']}) {row['label']}, c={row['concurrency']}"

    lowest = min(report["concurrency"])
    # Throughput under load on the left (every concurrency but the lowest, and the batch
    # groups); latency alone at the lowest on the right.
    shown = [
        r
        for r in rows
        if r["ratio"] is not None and (r["concurrency"] != lowest or r["letter"] in "bc")
    ]
    latency = [r for r in rows if r["p50_ratio"] is not None and r["concurrency"] == lowest]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(15, 1.5 + 0.42 * max(len(shown), len(latency), 1)),
        width_ratios=(3, 2),
        layout="constrained",
    )
    for ax, chosen, key in ((left, shown, "ratio"), (right, latency, "p50_ratio")):
        y = list(range(len(chosen)))
        values = [r[key] for r in chosen]
        latency_side = key == "p50_ratio"
        wanted = [[t for t in r["targets"] if is_latency(t) == latency_side] for r in chosen]
        bars = ax.barh(y, values, color=[colour(found) for found in wanted])
        ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], fontsize=7)
        for position, found in zip(y, wanted, strict=True):
            for t in found:
                ax.plot([t["limit"]] * 2, [position - 0.4, position + 0.4], color="black")
        ax.set_yticks(y, [label(r) for r in chosen], fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    left.axvline(1.0, color="black", linewidth=0.5, linestyle=":")
    left.set_xlabel("ours / floor (throughput; more is better; black tick: target)")
    right.set_xlabel(f"p50 / floor p50 at c={lowest} (less is better; tick: target)")
    machine = report["machine"]
    fig.suptitle(
        f"serve_bench: {machine['usable_cpus']} CPUs shared by client and server, load average "
        f"{machine['load_average_start'][0]:.1f} at start, "
        f"{report['seconds_per_measurement']:g} s per point (green: target met, red: not)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def is_latency(target: dict[str, Any]) -> bool:
    return target["name"].startswith("p50")


def colour(targets: list[dict[str, Any]]) -> str:
    """Green when every target is met, red when one is not, grey without targets."""
    verdicts = [t["met"] for t in targets if t["met"] is not None]
    if not verdicts:
        return "tab:gray"
    return "tab:green" if all(verdicts) else "tab:red"
