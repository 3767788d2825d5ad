"""Stopping a training process cleanly, for Ctrl-C (SIGINT) and SIGTERM (`timeout`, a
scheduler, the end of a Kaggle session) alike.

SIGTERM's default ends the process on the spot: no final checkpoint, and the run folder's
`.lock` left behind. Under `sigterm_as_interrupt` it raises `Terminated` instead, a
KeyboardInterrupt, so it unwinds as Ctrl-C does (every `finally` runs, the lock is released).
During training `Deferred` holds the first of either signal until the loop reaches a point
where it can save; a second one stops at once. The CLI prints either as one line and exits
with `exit_status`: 128 + the signal's number, as a shell reports a process it ended.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: the same clean stop."""


def stop_for(signum: int) -> KeyboardInterrupt:
    """The exception that a signal stops the process with."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def exit_status(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def _in_main_thread() -> bool:
    # Python runs signal handlers in the main thread only, and only it may install them.
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While this lasts, SIGTERM raises Terminated (in the main thread; elsewhere nothing
    changes)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Deferred:
    """Holds the first Ctrl-C or SIGTERM until `check()`, which raises it; a second signal
    raises at once and sets `forced` (it may land where the loop's state is half-updated,
    so nothing is saved then). Outside the main thread it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None  # the signal held, if any
        self.forced = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        if _in_main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.forced = True
            raise stop_for(signum)
        self.signal = signum

    def check(self) -> None:
        if self.requested:
            raise stop_for(self.signal)

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back from here.
            if previous is not None:
                signal.signal(signum, previous)
