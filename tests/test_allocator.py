"""glibc keeps freed memory for reuse once an entry point has prepared the process
(kit.training.runtime.prepare_process): no page faults on the second of two equal big
allocations, where a plain process, or one that only imported the kit, faults on every page
again."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import ctypes, ctypes.util, resource, sys
if sys.argv[1] == "import":
    import kit, kit.config, kit.runs, kit.training  # noqa: F401, E401  (change nothing)
if sys.argv[1] == "prepared":
    from kit.training import runtime
    runtime.prepare_process()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 200 * 2**20

def faults_of_a_touched_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)  # every page written, as XLA writes its buffers
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_touched_block()
print(faults_of_a_touched_block())
"""


def second_allocation_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True,
                            text=True, timeout=120, check=True)
    return int(result.stdout)


def test_freed_memory_is_reused_after_the_set_up_and_not_after_an_import():
    plain = second_allocation_faults("plain")
    if plain < 10_000:
        pytest.skip(f"this C library already reuses freed memory ({plain} faults without kit)")
    assert second_allocation_faults("prepared") < plain / 20
    assert second_allocation_faults("import") > plain / 2
