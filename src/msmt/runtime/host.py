"""The machine a measurement ran on, in one line for results pages.

Speed and even training results differ between CPUs (vector width, native bfloat16), so every
page names the CPU model, its cores and the widest vector instructions it has, read from Linux's
``/proc/cpuinfo`` (elsewhere: what :mod:`platform` says), e.g.
``AMD EPYC, 2 cores, AVX-512 with BF16``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# the widest vector extension first: (flags that must all be present, how the page names it)
VECTOR_LEVELS = (
    (("amx_tile", "amx_bf16"), "AMX and AVX-512"),
    (("avx512f", "avx512_bf16"), "AVX-512 with BF16"),
    (("avx512f",), "AVX-512"),
    (("avx2",), "AVX2"),
    (("avx",), "AVX"),
)


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model name, flags) of the first processor in ``/proc/cpuinfo``'s text (x86 layout)."""
    name, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def vector_level(flags: set[str]) -> str | None:
    """The widest vector extension among ``flags`` (:data:`VECTOR_LEVELS`), None without any."""
    return next((label for needed, label in VECTOR_LEVELS if set(needed) <= flags), None)


def describe_cpu(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """``"<model>, <n> cores, <vector level>"``; ``cpuinfo`` defaults to this machine's file."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    name, flags = parse_cpuinfo(cpuinfo)
    cores = cores if cores is not None else os.cpu_count()
    parts = [name or platform.processor() or platform.machine(), f"{cores} cores" if cores else None, vector_level(flags)]
    return ", ".join(p for p in parts if p)
