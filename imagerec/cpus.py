"""How many CPUs this process may use: for torch's threads in a worker and gunicorn's processes.

Neither ``os.cpu_count()`` nor the affinity mask knows a container's CPU quota, and a
container on a large host that sizes itself by them starts far more threads or processes
than it may run. Standard library only: gunicorn's configuration imports it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_quota() -> float | None:
    """The CPU time a container may use, in CPUs (cgroup v2, then v1); None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_share() -> int:
    """CPUs this process may run on: its affinity mask, capped by a container's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        # Rounded down: threads beyond the quota only get the process throttled.
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)
