"""glibc's malloc, tuned for XLA on the CPU before JAX starts its threads.

XLA:CPU allocates every step's temporary buffers afresh (a seed-network step needs about
240 MB of them). By default glibc serves such blocks with mmap, or from per-thread arenas that
it shrinks on free, and hands the memory back to the kernel; the next step then pays a page
fault for every 4 KB it touches again. Measured on a 2-core machine: 60,000 faults and 85 ms
of system time in a 146 ms step. With one arena, no mmap for big blocks and a high trim
threshold, freed memory stays in the process and the next step reuses it (the same step:
86 ms, no faults). The cost is a process that keeps its peak memory until it exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep and reuse freed memory; False where the C library is not glibc
    (macOS, musl), which is left as it is."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    # glibc only: other C libraries' mallopt take other parameter numbers, or none.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(parameter, value) == 1 for parameter, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
