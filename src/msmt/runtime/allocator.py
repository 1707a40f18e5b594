"""Process-wide CPU runtime setting for training and scoring: glibc malloc keeps freed memory.

PyTorch's CPU tensors come from the C library's ``malloc``. By default glibc hands large freed
blocks back to the kernel (blocks above the mmap threshold are unmapped; free space at the top
of the heap above the trim threshold is trimmed), so the next training step, which allocates
the same intermediates again, faults every page back in zero-filled. An M2M step at batch 1024
allocates several 4–8 MB intermediates and took ~750–1,100 minor page faults per step with
glibc's defaults; with the thresholds raised, a few dozen, and 1.1–1.2× the samples/s in float32
(the "Allocator" table of ``benchmarks/speed.py``, docs/speed.md). Allocators such as jemalloc
and tcmalloc keep freed memory in the same way.

Cost: memory freed by a step stays with the process for the next one (RSS stays at its
high-water mark instead of dropping between steps). The ``msmt`` command applies it before it
runs any subcommand; ``MSMT_TUNE_ALLOCATOR=0`` turns it off. Code that trains through the Python
API calls :func:`tune_allocator` itself. Outside glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit; larger blocks are still mapped
TRIM_THRESHOLD = 1024 * 1024 * 1024  # free heap space kept before trimming

_applied: bool | None = None


def allocator_tuning_enabled(env: dict[str, str] | None = None) -> bool:
    """False when ``MSMT_TUNE_ALLOCATOR`` is set to ``0``/``false``/``no``/``off``."""
    value = (os.environ if env is None else env).get("MSMT_TUNE_ALLOCATOR", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they are in force.

    Idempotent; a no-op returning False off Linux/glibc or when ``MSMT_TUNE_ALLOCATOR=0``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or not allocator_tuning_enabled():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
