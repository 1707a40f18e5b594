"""How many CPU threads a process computes with: ``train.num_threads``, else the physical cores.

PyTorch's default is the number of logical CPUs it sees; with hyper-threads, a CPU quota
smaller than the machine (containers) or several processes on one machine (torchrun) that
oversubscribes the cores: on a 2-core machine an epoch took 62 s at torch's default and
25.5 s at 2 threads (issue 20). The default here is the physical cores this process may use,
divided among the processes of a torchrun job on this machine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def _physical_cores(cpus: set[int]) -> int:
    """Distinct (package, core) pairs among ``cpus`` (Linux sysfs), else ``len(cpus)``."""
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def _cpu_quota() -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (rounded up), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def default_threads(local_processes: int = 1) -> int:
    """Physical cores this process may use (CPU affinity and cgroup quota respected), shared
    among ``local_processes`` processes on this machine; at least 1."""
    cores = _physical_cores(_allowed_cpus())
    quota = _cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores // max(1, local_processes))


def choose_threads(requested: int | None, local_processes: int = 1) -> tuple[int, str]:
    """``(threads, why)``: ``requested`` (``train.num_threads``) when set, else :func:`default_threads`."""
    if requested:
        return int(requested), "train.num_threads"
    n = default_threads(local_processes)
    return n, "physical cores" + (f" / {local_processes} processes" if local_processes > 1 else "")
