"""Chunks of training steps handed to the device: each sized to take about
`engine.chunk_seconds` (so progress moves and a checkpoint or Ctrl-C waits no longer than
that), two in flight so the device never waits for the host between them.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jax


def chunk_size(steps: int, seconds: float, target_seconds: float, most: int) -> int:
    """Steps for the next chunk to take about target_seconds at the rate the last one ran
    (`steps` in `seconds`): at least 1, at most `most` (an epoch)."""
    rate = steps / max(seconds, 1e-6)
    return max(1, min(most, round(target_seconds * rate)))


@dataclass
class Pace:
    """Steps per dispatch, 1 until a chunk is timed, then sized by `chunk_size`; kept from
    one epoch to the next."""

    target_seconds: float
    most: int
    size: int = 1

    def timed(self, steps: int, seconds: float) -> None:
        self.size = chunk_size(steps, seconds, self.target_seconds, self.most)


def dispatch(first: int, steps: int, queue_chunk: Callable[[int, int], object],
             pace: Pace) -> Iterator[tuple[int, int]]:
    """Steps first..steps-1 in chunks of `pace.size`, two in flight so the device starts the
    next while the host reads the last one's figures; yields each chunk's (begin, end) once
    it has finished. queue_chunk(begin, end) queues a chunk and returns what to wait on."""
    in_flight: collections.deque = collections.deque()
    step, last_done = first, time.perf_counter()
    while step < steps or in_flight:
        if step < steps and len(in_flight) < 2:
            end = min(steps, step + pace.size)
            in_flight.append((step, end, queue_chunk(step, end)))
            step = end
            continue
        begin, end, pending = in_flight.popleft()
        jax.block_until_ready(pending)
        now = time.perf_counter()
        pace.timed(end - begin, now - last_done)
        last_done = now
        yield begin, end
