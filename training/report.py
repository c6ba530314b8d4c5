"""Printing re-evaluation results next to what the manifest recorded."""

from __future__ import annotations

from typing import Any

# Recorded and recomputed metrics must agree this closely; float32 runtimes differ a little.
DRIFT_TOLERANCE = 1e-3


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def find_drift(metrics: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Metrics whose recomputed value differs from the recorded one beyond the tolerance."""
    before = _scalars(recorded)
    return [
        k
        for k, v in _scalars(metrics).items()
        if k in before and abs(v - before[k]) > DRIFT_TOLERANCE
    ]


def _cell(value: float) -> str:
    return f"{value:12d}" if isinstance(value, int) else f"{value:12.4f}"


def print_evaluation(results: list[dict[str, Any]]) -> None:
    for result in results:
        header = f"{result['model']} v{result.get('version', '?')}"
        if "error" in result:
            print(f"{header}: ERROR {result['error']}")
            continue
        recorded = _scalars(result["recorded"])
        print(f"{header} ({result['backend']})")
        print(f"  {'metric':<28}{'now':>12}{'recorded':>12}")
        for name, now in _scalars(result["metrics"]).items():
            before = _cell(recorded[name]) if name in recorded else f"{'-':>12}"
            print(f"  {name:<28}{_cell(now)}{before}")
        if result["drift"]:
            print(f"  DRIFT beyond {DRIFT_TOLERANCE}: {', '.join(result['drift'])}")
