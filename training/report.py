"""Printing re-evaluation results next to what the manifest recorded."""

from __future__ import annotations

from typing import Any

# Recorded and recomputed metrics must agree this closely; float32 runtimes differ a little.
DRIFT_TOLERANCE = 1e-3


def compare(metrics: dict[str, Any], recorded: dict[str, Any]) -> list[tuple[str, float, Any]]:
    """(metric, now, recorded) for each scalar metric."""
    return [(k, v, recorded.get(k)) for k, v in metrics.items() if isinstance(v, int | float)]


def print_evaluation(results: list[dict[str, Any]]) -> None:
    for result in results:
        header = f"{result['model']} v{result.get('version', '?')}"
        if "error" in result:
            print(f"{header}: ERROR {result['error']}")
            continue
        print(f"{header} ({result['backend']})")
        print(f"  {'metric':<16}{'now':>12}{'recorded':>12}")
        drift = []
        for name, now, recorded in compare(result["metrics"], result["recorded"]):
            recorded_text = (
                f"{recorded:12.4f}" if isinstance(recorded, int | float) else f"{'-':>12}"
            )
            print(f"  {name:<16}{now:12.4f}{recorded_text}")
            if isinstance(recorded, int | float) and abs(now - recorded) > DRIFT_TOLERANCE:
                drift.append(name)
        result["drift"] = drift
        if drift:
            print(f"  DRIFT beyond {DRIFT_TOLERANCE}: {', '.join(drift)}")
