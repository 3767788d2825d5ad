"""What every benchmark shares: where ../shared is, a timer that takes the median, and the
user's XLA_FLAGS without the kit's CPU device flags. (A benchmark that times a train step
builds its inputs with tests.helpers, as the tests do.)"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kit.data import download, tables
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


def load_practice() -> tuple[tables.TrainingSet, tables.TestSet]:
    """The practice competition's training and test sets, unpacked into a temporary folder
    (never the checkout's data/) that is gone when they are loaded."""
    folder = Path(tempfile.mkdtemp(prefix="kit-bench-practice-"))
    try:
        download.download(folder / "data", archive=PRACTICE_ZIP)
        return tables.load_training(folder / "data"), tables.load_test(folder / "data")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
