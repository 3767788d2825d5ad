"""What every benchmark shares: where ../shared is, a timer that takes the median, and the
user's XLA_FLAGS without the kit's CPU device flags. (A benchmark that times a train step
builds its inputs with tests.helpers, as the tests do.)"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from kit.training.runtime import DEVICE_COUNT_FLAG, SINGLE_THREADED

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRACTICE_ZIP = SHARED / "data" / "practice" / "facial-keypoints-detection.zip"
PRACTICE_SOLUTION = SHARED / "data" / "practice" / "solution.csv"


def median_seconds(work: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def without_kit_flags(flags: str) -> str:
    """XLA_FLAGS as they were before kit.training.runtime.configure added the CPU device
    flags (for a program that must run as it would without the kit, such as an older engine
    being timed)."""
    words = flags.split()
    if SINGLE_THREADED.split()[0] not in words:
        return flags
    kept = [w for w in words if not w.startswith(DEVICE_COUNT_FLAG)
            and w not in SINGLE_THREADED.split()]
    return " ".join(kept)
