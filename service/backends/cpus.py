"""How many CPUs this process may really use, container limits included."""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_v2_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _cgroup_v1_quota(root: Path = Path("/sys/fs/cgroup/cpu")) -> float | None:
    try:
        quota = int((root / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


def available_cpus() -> int:
    """The smaller of the CPU affinity set and the cgroup quota (rounded up), at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_v2_quota() or _cgroup_v1_quota()
    if quota is not None:
        count = min(count or 1, math.ceil(quota))
    return max(1, count or 1)
