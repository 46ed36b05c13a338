"""Where a drain's CPU went, from /proc: the ingest processes, PostgreSQL, the broker, and the machine as a whole.

On a 2-core machine that runs the broker and the database next to the ingest, the machine's CPU is the ceiling
of a scale-out figure: these numbers show when a drain has reached it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def with_children(pid: int) -> list[int]:
    """A process and its direct children (a postmaster and its backends)."""
    found = [pid]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if _parent(int(name)) == pid:
                    found.append(int(name))
            except (OSError, ValueError, IndexError):
                continue  # gone while we looked
    return found


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core since boot (/proc/stat: user nice system idle iowait irq softirq
    steal; guest time is already in user). Steal is a hypervisor's other tenants: in the total, not busy."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq
    return busy / TICK, (busy + idle + iowait + steal) / TICK


# A role's processes, listed again at each snapshot (PostgreSQL starts a backend per connection).
Roles = Mapping[str, Callable[[], list[int]]]


@dataclass(frozen=True)
class Snapshot:
    by_role: dict[str, float]
    busy: float
    total: float


def snapshot(roles: Roles) -> Snapshot:
    by_role: dict[str, float] = {}
    for role, pids in roles.items():
        seconds = 0.0
        for pid in pids():
            try:
                seconds += cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited: its time since the last snapshot is lost (counted under "other")
        by_role[role] = seconds
    busy, total = machine_seconds()
    return Snapshot(by_role, busy, total)


def split(before: Snapshot, after: Snapshot, *, messages: int) -> dict[str, float]:
    """µs of CPU a message for each role and for the rest of the machine, and how busy the machine was (0-1)."""
    per_msg = {
        role: round((after.by_role[role] - before.by_role.get(role, 0.0)) / messages * 1e6, 1) for role in after.by_role
    }
    busy = after.busy - before.busy
    per_msg["other"] = round(max(0.0, busy / messages * 1e6 - sum(per_msg.values())), 1)
    per_msg["machine_busy"] = round(busy / max(after.total - before.total, 1e-9), 3)
    return per_msg
