"""schemathesis against the service's own OpenAPI schema: no 5xx, responses conform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.servers import Server
from reliability.report import ScenarioResult

# What a fuzzer may assert about this API. Left out, on purpose: positive_data_acceptance
# (the schemas cannot say "a decodable PNG" or "values within the model's range", so
# schema-valid bodies are rightly refused) and the stateful/auth checks (no state, no auth).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
)


def run_fuzz(server: Server, max_examples: int, out: Path, seed: int = 20261123) -> ScenarioResult:
    result = ScenarioResult(
        "schemathesis fuzzing", "no 5xx; status, content type, headers and bodies as documented"
    )
    out = out.resolve()
    report_dir = out / "schemathesis"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/docs.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(max_examples),
        "--phases", "examples,coverage,fuzzing", "--seed", str(seed), "--workers", "1",
        "--report", "json", "--report-dir", str(report_dir), "--request-timeout", "30",
    ]  # fmt: skip
    # In ``out``: schemathesis keeps a cache folder in its working directory.
    run = subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=1800)
    (out / "schemathesis.log").write_text(run.stdout + run.stderr)
    reports = sorted(report_dir.glob("*.json"))
    if not reports:
        result.failures.append(f"schemathesis wrote no report: {run.stderr[-500:]}")
        return result
    report = json.loads(reports[-1].read_text())
    cases = report["test_cases"]
    result.figures = {
        "operations_tested": report["operations"]["tested"],
        "generated_cases": cases["generated"],
        "cases_with_failures": cases["with_failures"],
        "errored": cases["errored"],
    }
    for failure in report["failures"]:
        result.failures.append(f"{failure['code']} {failure['title']}: {failure['operations']}")
    for error in report["errors"]:
        result.failures.append(f"error: {json.dumps(error)[:300]}")
    result.require(run.returncode == 0, f"schemathesis exited {run.returncode}")
    untested = report["operations"]["total"] - report["operations"]["tested"]
    result.require(untested == 0, f"{untested} operations not tested")
    return result
