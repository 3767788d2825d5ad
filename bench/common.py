"""What every benchmark shares: where ../shared is, and a timer that takes the median."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

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
