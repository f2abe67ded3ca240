"""How many threads torch should use here: the CPUs this process may really run on.

Torch's default is the host's core count, not the container's quota: on a CPU-limited or busy host
that oversubscribes (a small DiT call went from 68 ms to 1.2 s, an app start from 3 s to 159 s).
:func:`default_threads` takes the smallest of the CPU affinity mask and the cgroup CPU quota (v2
``cpu.max`` or v1 ``cpu.cfs_quota_us``), rounded down, at least 1; ``BIGAIN_THREADS`` overrides it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

ENV = "BIGAIN_THREADS"
_CGROUP = Path("/sys/fs/cgroup")


def _quota(root: Path = _CGROUP) -> float | None:
    """CPUs the cgroup quota allows (None: no quota or no cgroup file)."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q, p = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if q.is_file() and p.is_file():
            quota_us = int(q.read_text())
            return None if quota_us <= 0 else quota_us / int(p.read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = _CGROUP) -> int:
    """CPUs this process can use: min(affinity mask, cgroup quota), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    q = _quota(root)
    if q is not None:
        n = min(n, max(1, math.floor(q)))
    return max(1, n)


def default_threads(root: Path = _CGROUP) -> int:
    """``$BIGAIN_THREADS`` when it is a positive integer, else :func:`available_cpus`."""
    env = os.environ.get(ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{ENV} must be a positive integer, got {env[:40]!r}")
        return int(env)
    return available_cpus(root)


def configure(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default_threads`); returns the count set."""
    import torch

    n = default_threads() if n is None else int(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
