"""The reliability suite's short profile, run as a user runs it (``python -m reliability``)
against real servers on the quick-profile models: every scenario must meet its target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_short_reliability_profile(quick_repository: Path, data_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "reliability", "--profile", "short"]
    command += ["--repository", str(quick_repository), "--data-dir", str(data_dir)]
    command += ["--out", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    report = json.loads((tmp_path / "reliability.json").read_text())
    scenarios = {s["name"]: s for s in report["scenarios"]}
    failed = {name: s["failures"] for name, s in scenarios.items() if not s["passed"]}
    assert run.returncode == 0 and not failed, (failed, run.stdout[-3000:], run.stderr[-3000:])
    assert (tmp_path / "reliability.md").read_text().count("| pass |") == len(scenarios) == 8

    figures = {name: s["figures"] for name, s in scenarios.items()}
    assert figures["schemathesis fuzzing"]["generated_cases"] >= 300
    assert figures["hostile corpus"]["cases"] >= 100
    load = figures["sustained load (c=64)"]
    assert load["failed"] == 0 and load["wrong"] == 0 and load["answers_checked"] > 0
    assert figures["kill -9 a worker under load"]["error_rate_pct"] < 1
    sigterm = figures["SIGTERM under load"]
    assert sigterm["failed_before"] == 0 and sigterm["exit_code"] == 0
    assert figures["model file corrupted on disk"]["states"]["digits"] == "failed"
    assert figures["overload beyond capacity"]["statuses"].get("503", 0) > 0
    abuse = figures["connection-level abuse"]
    assert abuse["stalled_uploads"]["stalled_answered_408"] == abuse["stalled_uploads"]["stalled"]
    assert abuse["header_floods"]["all_431_json"] and abuse["pipelining"]["first_right"]
    assert max(abuse["decode"]["probe_max_ms"].values()) < 100
