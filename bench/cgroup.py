"""A fixed CPU share for a process, from a Linux cgroup's CFS quota (cgroup v1 `cpu` or v2 `cpu.max`).

Issue 8 asks whether two ingest processes drain 1.8x what one does. On this two-core machine the broker and the
database share the cores with the ingest, so the uncapped figure measures the machine's ceiling, not the
scale-out. Holding every ingest process to the same fraction of a core, small enough that the processes, the
broker and the database all fit in the cores, measures the scale-out itself: what a second process adds when it
gets as much CPU as the first, as it would on a machine of its own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# A short period hands out the quota in short slices: with the default 100 ms, a process that spends its share
# early (several threads on both cores) then stalls for up to the rest of the period.
PERIOD_US = 20_000


def _v1_dir() -> Path | None:
    path = ROOT / "cpu"
    return path if (path / "cpu.cfs_quota_us").exists() and os.access(path, os.W_OK) else None


def _v2_dir() -> Path | None:
    controllers = ROOT / "cgroup.controllers"
    if not controllers.exists() or "cpu" not in controllers.read_text().split() or not os.access(ROOT, os.W_OK):
        return None
    return ROOT


def unavailable_reason() -> str | None:
    """Why CPU caps cannot be set here (None when they can)."""
    if _v1_dir() or _v2_dir():
        return None
    return f"no writable cgroup cpu controller under {ROOT} (needs root and cgroup v1 'cpu' or v2 'cpu.max')"


class CpuCap:
    """A cgroup holding its processes to `cores` of CPU together; removed by close()."""

    def __init__(self, name: str, cores: float) -> None:
        quota = max(1000, round(cores * PERIOD_US))
        v1 = _v1_dir()
        if v1 is not None:
            self.path = v1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            v2 = _v2_dir()
            if v2 is None:
                raise RuntimeError(unavailable_reason())
            with contextlib.suppress(OSError):  # already enabled, or the parent forbids it (then mkdir tells)
                (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.path = v2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move a process with all its threads (and the threads it starts later) into the cap."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds the cap held its processes back so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":  # v1, ns
                return int(value) / 1e9
            if key == "throttled_usec":  # v2
                return int(value) / 1e6
        return 0.0

    def close(self) -> None:
        """Remove the cgroup (its processes must have exited; the kernel refuses otherwise)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
