"""What a pipeline says as it runs (kit.recipes.pipeline): the CLI's display implements it,
a test records it; by default it says nothing."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from kit.config import Stage
from kit.training.loop import Listener


class PipelineListener:
    """What a pipeline says as it goes; the CLI prints it, tests record it."""

    def note(self, text: str) -> None:
        pass

    def stage_started(self, number: int, count: int, stage: Stage) -> None:
        pass

    def stage_kept(self, number: int, count: int, stage: Stage, run_dir: Path) -> None:
        pass

    def stage_finished(self, number: int, count: int, stage: Stage, run_dir: Path,
                       figures: dict, seconds: float) -> None:
        pass

    def training(self, number: int, count: int, stage: Stage) -> AbstractContextManager:
        """A context that gives the engine's Listener for the stage's CV run."""
        return nullcontext(Listener())

    def busy(self, text: str) -> AbstractContextManager:
        return nullcontext()
