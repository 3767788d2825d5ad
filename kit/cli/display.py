"""The view of a CV run: live bars where they can redraw, plain lines elsewhere.

Bars redraw in a terminal, and in Jupyter only through ipywidgets (rich's live display draws
into an ipywidgets Output; without the package it warns at every refresh and shows nothing).
A log (a batch kernel's, `nohup`, CI) and a notebook without ipywidgets get plain lines: each
epoch is one line, and a long epoch adds a progress line every `PLAIN_EVERY` seconds; a
spinner (`Console.status`) is its text printed once.

Imported by the CLI at start: what it imports at the top stays light (rich, and the engine's
Listener hooks); the run's own modules are imported where they are used.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import rich.console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kit.cli.console import clock, redraws
from kit.config import Stage
from kit.model.tasks import SHARED
from kit.recipes.progress import PipelineListener
from kit.training.loop import EpochReport, Listener

if TYPE_CHECKING:
    from kit.runs.cv import FoldPlan

PLAIN_EVERY = 15.0  # seconds between progress lines in a log


def network_label(network: str) -> str:
    return "shared trunk" if network == SHARED else f"{network}-key"


def folds_label(folds: list[int]) -> str:
    numbers = [f + 1 for f in folds]
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"folds {numbers[0]}-{numbers[-1]}"
    return ("fold " if len(numbers) == 1 else "folds ") + ", ".join(map(str, numbers))


class CVDisplay(Listener):
    """The whole run in training steps (so the time left is honest) and the group of folds
    in hand, whose caption carries the last epoch's RMSEs."""

    def __init__(self, console: rich.console.Console, live: bool | None = None,
                 title: str = "whole run"):
        self.console = console
        self.title = title  # a pipeline's stage: "stage 2/5 separate"
        self.live = redraws(console) if live is None else live
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
        ) if self.live else None
        self.run_task = None
        self.group_task = None
        self.steps: dict[tuple[str, int], int] = {}
        self.epochs = 0
        self.total = 0
        self.done = 0
        self.group = ""
        self.group_planned: int | None = None
        self.group_start = 0
        self.started = time.monotonic()
        self.last_line = self.started

    def __enter__(self):
        if self.bars is not None:
            self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.__exit__(*exc)

    def _say(self, text: str) -> None:
        self.console.print(text)

    def run_started(self, run_dir: Path, plan: list[FoldPlan], epochs: int) -> None:
        self._say(f"run folder {run_dir}")
        self.epochs = epochs
        self.steps = {(e.network, e.fold): e.steps_per_epoch for e in plan}
        # An upper bound: early stopping ends some folds sooner.
        self.total = max(sum(e.steps_per_epoch * epochs for e in plan if not e.finished), 1)
        self.started = self.last_line = time.monotonic()
        if self.bars is not None:
            self.run_task = self.bars.add_task(self.title, total=self.total)

    def group_started(self, network: str, folds: list[int], epoch: int, epochs: int) -> None:
        self.group = f"{network_label(network)} {folds_label(folds)}"
        self.group_planned = sum(self.steps.get((network, f), 0) for f in folds) * (
            epochs - epoch)
        self.group_start = self.done
        where = f"from epoch {epoch + 1}/{epochs}" if epoch else f"{epochs} epochs"
        self._say(f"training {self.group} together, {where}")
        if self.bars is not None:
            if self.group_task is not None:
                self.bars.remove_task(self.group_task)
            self.group_task = self.bars.add_task(f"{self.group} epoch {epoch + 1}/{epochs}",
                                                     total=max(self.group_planned, 1))

    def progress(self, network: str, fold_steps: int) -> None:
        self.done += fold_steps
        if self.bars is not None:
            self.bars.advance(self.group_task, fold_steps)
            self.bars.advance(self.run_task, fold_steps)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_EVERY:
            self.last_line = now
            of = "the run" if self.title == "whole run" else self.title
            self._say(f"  {self.group}: {self.done / self.total:.0%} of {of}, "
                      f"{clock(now - self.started)} elapsed, {self._left(now)} left")

    def _left(self, now: float) -> str:
        if not self.done:
            return "?"
        return clock((now - self.started) * (self.total - self.done) / self.done)

    def epoch(self, network: str, reports: list[EpochReport]) -> None:
        if not reports:
            return
        first = reports[0]
        train = sum(r.train_rmse for r in reports) / len(reports)
        text = f"{self.group} epoch {first.epoch}/{first.epochs} train {train:.3f}"
        if first.val_rmse is not None:  # the group's folds are scored at the same epochs
            text += " val " + " ".join(f"{r.val_rmse:.3f}" for r in reports)
        if self.bars is not None:
            self.bars.update(self.group_task, description=text)
            return
        now = time.monotonic()
        self.last_line = now
        self._say(f"{text} ({first.seconds:.0f} s; {clock(now - self.started)} elapsed, "
                  f"{self._left(now)} left)")

    def fold_finished(self, network: str, fold: int, best_val_rmse: float,
                      skipped: bool) -> None:
        note = " (trained earlier, kept)" if skipped else ""
        self._say(f"{network_label(network)} fold {fold + 1}: validation RMSE of the kept "
                  f"weights {best_val_rmse:.4f}{note}")
        if skipped or self.group_planned is None:
            return
        # The group is done; steps its early-stopped folds never took leave the total.
        self.total -= self.group_planned - (self.done - self.group_start)
        self.group_planned = None
        if self.bars is not None:
            self.bars.update(self.run_task, total=max(self.total, 1))

    def note(self, text: str) -> None:
        self._say(f"[yellow]note:[/] {text}")


class PipelineDisplay(PipelineListener):
    """A pipeline's stages as lines, each CV stage's training as a CVDisplay titled with the
    stage and how many there are."""

    def __init__(self, console: rich.console.Console, live: bool | None = None):
        self.console = console
        self.live = live
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]note:[/] {text}")

    def stage_started(self, number: int, count: int, stage: Stage) -> None:
        self.console.print(f"[bold]stage {number}/{count} {stage.name}[/] "
                           f"({clock(time.monotonic() - self.started)} into the pipeline)")

    def stage_kept(self, number: int, count: int, stage: Stage, run_dir: Path) -> None:
        self.console.print(f"stage {number}/{count} {stage.name}: finished earlier, kept "
                           f"({run_dir.name})")

    def stage_finished(self, number: int, count: int, stage: Stage, run_dir: Path,
                       figures: dict, seconds: float) -> None:
        estimate = figures.get("leaderboard_estimate", {}).get("rmse")
        said = "–" if estimate is None else f"{estimate:.4f}"
        self.console.print(f"[green]stage {number}/{count} {stage.name}[/]: {run_dir.name}, "
                           f"OOF {figures['overall_rmse']:.4f}, leaderboard estimate {said} "
                           f"({clock(seconds)})")

    def training(self, number: int, count: int, stage: Stage):
        return CVDisplay(self.console, self.live, title=f"stage {number}/{count} {stage.name}")

    def busy(self, text: str):
        return self.console.status(text)
