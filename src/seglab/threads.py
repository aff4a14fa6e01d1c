"""OpenMP defaults for a shared machine, set before torch loads its OpenMP runtime.

OpenMP reads its settings once, when the library is loaded (``import torch``). By default its
worker threads spin-wait between parallel regions; when another process holds one of the
cores, the spinning threads steal that core's time from the thread doing the work and every
parallel region waits for the slowest thread. Passive waiting (threads sleep when idle) keeps
a training step from collapsing on a busy laptop and costs little when the machine is idle.

``apply_defaults()`` runs from ``seglab/__init__.py``, before any seglab module imports torch.
A variable the user already set always wins. When torch was imported before seglab, the
settings still reach child processes but not this one (``THREAD_DEFAULTS.before_torch``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

# OMP_WAIT_POLICY is read by GNU libgomp (torch's pip wheels) and LLVM/Intel OpenMP;
# KMP_BLOCKTIME is Intel/LLVM OpenMP's own spin time (conda builds link libiomp5).
PASSIVE_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


@dataclass
class ThreadDefaults:
    """What ``apply_defaults`` set (variables the user had set are not listed)."""

    applied: dict[str, str] = field(default_factory=dict)
    threads: int = 0  # the thread budget found (physical cores this process may use)
    before_torch: bool = True


THREAD_DEFAULTS = ThreadDefaults()


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by a cgroup quota (containers), rounded up; None without a quota."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            if quota == "max":
                return None
            return max(1, -(-int(quota) // int(period)))
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else max(1, -(-quota_us // period_us))
    except (OSError, ValueError):
        return None
    return None


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _physical_cores(cpus: list[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among ``cpus`` (hyperthread siblings counted once)."""
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)  # no topology (not Linux): count logical CPUs
    return len(cores) or len(cpus)


def thread_budget() -> int:
    """Physical cores this process may run on, capped by a container's CPU quota.

    Compute-bound kernels (convolutions) gain nothing from hyperthread siblings, and a
    container's quota is invisible to OpenMP, which would otherwise start one thread per
    host CPU and be throttled.
    """
    budget = _physical_cores(_allowed_cpus())
    limit = _cgroup_cpu_limit()
    return max(1, min(budget, limit) if limit else budget)


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> ThreadDefaults:
    """Set passive OpenMP waiting and ``OMP_NUM_THREADS`` where the user has not.

    Without ``environ`` this sets the process environment and records the result in
    ``THREAD_DEFAULTS`` (what ``seglab/__init__.py`` does on import).
    """
    env = os.environ if environ is None else environ
    result = ThreadDefaults(threads=thread_budget(), before_torch="torch" not in sys.modules)
    wanted = {**PASSIVE_WAITING, "OMP_NUM_THREADS": str(result.threads)}
    for name, value in wanted.items():
        if name not in env:
            env[name] = value
            result.applied[name] = value
    if environ is None:
        global THREAD_DEFAULTS
        THREAD_DEFAULTS = result
    return result
