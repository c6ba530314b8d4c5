"""``python -m reliability``: every scenario against real servers, a JSON report and a table.

Exit status 0 only when every scenario met its target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.payloads import flower_files
from benchmarks.servers import Server
from reliability.corpus import corpus
from reliability.report import ScenarioResult, summary_table, write_report
from reliability.scenarios import abuse, faults
from reliability.scenarios.fuzz import run_fuzz
from reliability.scenarios.hostile import run_hostile
from reliability.scenarios.load import run_sustained_load
from reliability.traffic import Graphs, bank_exchanges, digit_exchanges, mixed_traffic


@dataclass(frozen=True)
class Profile:
    fuzz_examples: int
    load_requests: int
    load_max_seconds: float
    kill_seconds: float
    overload_seconds: float
    abuse: abuse.AbuseProfile


PROFILES = {
    "short": Profile(fuzz_examples=15, load_requests=6_000, load_max_seconds=300,
                     kill_seconds=6, overload_seconds=4, abuse=abuse.SHORT),
    "long": Profile(fuzz_examples=150, load_requests=100_000, load_max_seconds=1800,
                    kill_seconds=30, overload_seconds=20, abuse=abuse.LONG),
}  # fmt: skip


def timed(run: Callable[[], ScenarioResult]) -> ScenarioResult:
    started = time.monotonic()
    result = run()
    result.seconds = round(time.monotonic() - started, 1)
    status = "pass" if result.passed else "FAIL"
    print(f"[{status}] {result.name} ({result.seconds} s): {result.figures}", flush=True)
    for failure in result.failures[:20]:
        print(f"    - {failure}", flush=True)
    return result


def run_all(repository: Path, data_dir: Path, profile: Profile, out: Path) -> list[ScenarioResult]:
    graphs = Graphs(repository)
    traffic = mixed_traffic(graphs, data_dir)
    probe = digit_exchanges(graphs, data_dir, 1)[0]
    other_model = bank_exchanges(graphs, data_dir, 1)[0]
    flowers = [f.read_bytes() for f in flower_files(data_dir, 8)]
    results = []
    with Server(env={"MODEL_REPOSITORY": str(repository)}, log=out / "serve.log") as server:
        server.wait_until("/readyz")
        results.append(timed(lambda: run_fuzz(server, profile.fuzz_examples, out)))
        results.append(timed(lambda: run_hostile(server, corpus(), probe)))
        results.append(
            timed(
                lambda: run_sustained_load(
                    server, traffic, profile.load_requests, 64, profile.load_max_seconds
                )
            )
        )
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        results.append(
            timed(lambda: faults.kill_worker_under_load(repository, traffic, profile.kill_seconds))
        )
        grace = faults.deployment_grace_seconds()
        results.append(timed(lambda: faults.sigterm_under_load(repository, flowers, grace)))
        results.append(
            timed(lambda: faults.corrupted_model_at_start(repository, work, other_model))
        )
        results.append(
            timed(lambda: faults.overload(repository, work, flowers, profile.overload_seconds))
        )
    results.append(timed(lambda: abuse.run_abuse(repository, other_model, profile.abuse)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Reliability suite: load, faults, hostile input")
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, required=True, help="the real datasets")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--out", type=Path, default=Path("reliability/results"))
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    results = run_all(
        options.repository.resolve(), options.data_dir, PROFILES[options.profile], options.out
    )
    path = write_report(results, options.profile, options.out)
    print(summary_table(results))
    print(f"report: {path}")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
