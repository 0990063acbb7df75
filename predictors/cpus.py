"""How many CPU cores this process may really use: its affinity and its cgroup's CPU quota.

In a container with ``resources.limits.cpu: 2`` on a 64-core node, ``os.cpu_count()`` says 64;
torch would start 64 threads and the quota would throttle them all. The quota (cgroup v2
``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) and the affinity mask are the truth.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cores(cgroup: Path = CGROUP) -> float:
    """Cores this process can use at once: the smaller of its affinity and its CPU quota."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    return min(cores, quota) if quota is not None else cores


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU limit in cores, or None where there is none (or it cannot be read)."""
    try:
        text = (cgroup / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def default_threads(cgroup: Path = CGROUP) -> int:
    """Intra-op threads for torch and ONNX Runtime: the whole usable cores, at least one."""
    return max(1, math.floor(available_cores(cgroup)))
