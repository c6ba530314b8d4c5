"""Scenario results: what was measured, whether it met its target, and the report files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ScenarioResult:
    """One scenario: its figures, and every way it fell short (empty when it passed)."""

    name: str
    target: str
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def require(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


def summary_table(results: list[ScenarioResult]) -> str:
    lines = ["| scenario | result | target | figures |", "|---|---|---|---|"]
    for result in results:
        figures = ", ".join(f"{k} {v}" for k, v in result.figures.items())
        status = "pass" if result.passed else "FAIL: " + "; ".join(result.failures)
        lines.append(f"| {result.name} | {status} | {result.target} | {figures} |")
    return "\n".join(lines)


def write_report(results: list[ScenarioResult], profile: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "profile": profile,
        "passed": all(r.passed for r in results),
        "scenarios": [{**asdict(r), "passed": r.passed} for r in results],
    }
    path = out / "reliability.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (out / "reliability.md").write_text(summary_table(results) + "\n")
    return path
