"""The live view of a CV run: subset, fold, epoch, train and validation RMSE, time left."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kit.cv import SHARED, FoldPlan, Listener
from kit.train import EpochReport


def network_label(network: str) -> str:
    return "shared trunk" if network == SHARED else f"{network}-key"


class CVDisplay(Listener):
    """Two bars: the whole run, in training steps (so the time left is honest), and the fold
    in hand, whose caption carries the last epoch's RMSEs."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
        )
        self.run_task = None
        self.fold_task = None
        self.label = ""
        self.fold_steps_left = 0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def run_started(self, run_dir: Path, plan: list[FoldPlan], epochs: int) -> None:
        self.console.print(f"run folder {run_dir}")
        # An upper bound: early stopping ends some folds sooner, and their rest is taken off.
        total = sum(entry.steps_per_epoch * epochs for entry in plan if not entry.finished)
        self.run_task = self.progress.add_task("whole run", total=max(total, 1))

    def fold_started(self, network: str, fold: int, epochs: int, steps: int) -> None:
        self.label = f"{network_label(network)} fold {fold + 1}"
        if self.fold_task is not None:
            self.progress.remove_task(self.fold_task)
        self.fold_task = self.progress.add_task(f"{self.label} epoch 1/{epochs}",
                                                total=epochs * steps)
        self.fold_steps_left = epochs * steps

    def step(self, done: int, total: int) -> None:
        self.fold_steps_left -= 1
        self.progress.advance(self.fold_task)
        self.progress.advance(self.run_task)

    def epoch(self, network: str, fold: int, report: EpochReport) -> None:
        self.progress.update(self.fold_task, description=(
            f"{self.label} epoch {report.epoch}/{report.epochs} train {report.train_rmse:.3f} "
            f"val {report.val_rmse:.3f} best {report.best_val_rmse:.3f}"
        ))

    def fold_finished(self, network: str, fold: int, best_val_rmse: float,
                      skipped: bool) -> None:
        note = " (trained earlier, kept)" if skipped else ""
        self.console.print(f"{network_label(network)} fold {fold + 1}: best validation RMSE "
                           f"{best_val_rmse:.4f}{note}")
        if skipped or self.fold_task is None:
            return
        run_total = next(t.total for t in self.progress.tasks if t.id == self.run_task)
        self.progress.update(self.run_task, total=run_total - self.fold_steps_left)
