"""``hey`` as the load generator for every server, and a parser of its summary.

One outside client for everyone: a Go binary, not one of the servers' own Python clients, so
no server is measured with a client tuned for it. It keeps connections alive and posts the
same body from a file. Its summary prints seconds with four decimals, so latencies are known
to 0.1 ms; throughput here counts only 200 answers (hey's own "Requests/sec" counts errors
and non-200s too, and a server answering 503 fast would look fast).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

INSTALL_HINT = "hey is missing: apt-get install hey (Debian/Ubuntu package 'hey')"


class HeyMissing(RuntimeError):
    pass


@dataclass
class HeyResult:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # connection-level, by message
    percentiles_ms: dict[int, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "requests_per_s": round(self.requests_per_s, 1),
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": self.percentiles_ms.get(50),
            "p99_ms": self.percentiles_ms.get(99),
            **asdict(self),
        }


_TOTAL = re.compile(r"^\s*Total:\s+([\d.]+) secs", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+)% in ([\d.]+) secs", re.MULTILINE)
_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.MULTILINE)
_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$")


def parse(output: str) -> HeyResult:
    """The numbers in hey's default summary. Sections it leaves out stay empty."""
    total = _TOTAL.search(output)
    if total is None:
        raise ValueError(f"not a hey summary: {output[:300]!r}")
    result = HeyResult(seconds=float(total.group(1)))
    for percent, seconds in _PERCENTILE.findall(output):
        # With few requests hey leaves the top slots unfilled and prints them as "0% in 0".
        if int(percent) > 0:
            result.percentiles_ms[int(percent)] = round(float(seconds) * 1000, 1)
    for status, count in _STATUS.findall(output):
        result.statuses[int(status)] = int(count)
    _, _, errors = output.partition("Error distribution:")
    for line in errors.splitlines():
        match = _ERROR.match(line)
        if match:
            result.errors[match.group(2).strip()] = int(match.group(1))
    return result


def find() -> str:
    """The hey binary; installed with apt when missing and this is root on Debian."""
    path = shutil.which("hey")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("hey is missing: apt-get install -y hey", flush=True)
        subprocess.run(["apt-get", "install", "-y", "hey"], check=False)
        path = shutil.which("hey")
        if path:
            return path
    raise HeyMissing(INSTALL_HINT)


def require() -> None:
    """A benchmark's first step: hey found (or installed), else exit saying how to get it."""
    try:
        find()
    except HeyMissing as error:
        sys.exit(str(error))


def run(
    url: str,
    body_file: Path,
    concurrency: int,
    seconds: float,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> HeyResult:
    """POST ``body_file`` (as ``content_type``, with ``headers``) to ``url`` from
    ``concurrency`` workers for ``seconds``."""
    extra = [part for name, value in (headers or {}).items() for part in ("-H", f"{name}: {value}")]
    command = [
        find(),
        *("-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST"),
        *("-T", content_type, *extra, "-D", str(body_file), url),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"hey exited with {done.returncode}: {done.stderr.strip()[:300]}")
    return parse(done.stdout)
