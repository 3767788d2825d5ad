"""K-fold cross-validation of a config's networks, into a run folder (kit.runs.files).

`run_cv` reads as the recipe: assign folds (kit.runs.folds), train each network's unfinished
folds together (kit.training.loop), keep each fold's model, history and out-of-fold
predictions as its group finishes, gather oof.csv.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from kit.config import Config
from kit.core.errors import KitError
from kit.data.tables import TrainingSet, subset_indices
from kit.model import tasks
from kit.runs import files
from kit.runs.folders import locked, new_run_dir, point_latest, unfinished_run
from kit.runs.folds import assign_folds, check_data, fold_rows
from kit.runs.lessons import Curriculum, Lesson, plain_lesson
from kit.runs.predict import FoldModel, predict_images, save_fold_model
from kit.training import checkpoints, hardware, loop, programs, runtime, train
from kit.training.loop import Listener


@dataclass(frozen=True)
class FoldPlan:
    network: str
    fold: int
    steps_per_epoch: int
    finished: bool  # trained by an earlier, interrupted call


def run_cv(config: Config, training: TrainingSet, root: Path, resume: bool = True,
           listener: Listener | None = None, teaching: Curriculum | None = None) -> Path:
    """Train every network's fold models; write folds, models, histories and oof.csv.

    A run with `config.teacher` takes `teaching` (kit.results.teacher.prepare): the teacher's
    folds, and what its networks learn besides the training set's own labels."""
    listener = listener or Listener()
    if bool(config.teacher) != (teaching is not None):
        raise KitError(f"teacher={config.teacher!r} but {'no' if teaching is None else 'a'} "
                       "teaching was given; expected kit.results.teacher.prepare's for a "
                       "teacher run")
    run_dir = unfinished_run(root, config) if resume else None
    fresh = run_dir is None
    if fresh:
        run_dir = new_run_dir(root, config)
    with locked(run_dir):
        if fresh:
            # The teacher's folds, exactly: its fold-k models taught fold k.
            files.write_folds(run_dir, assign_folds(config, training) if teaching is None
                              else teaching.assignment)
            # config.json last: it is what marks a folder as a run that can be resumed.
            files.write_config(run_dir, config)
        assignment = files.read_folds(run_dir)
        check_data(run_dir, assignment, training)
        point_latest(root, run_dir)

        def lesson_for(network: str) -> Lesson:
            if teaching is None:
                return plain_lesson(config, network, training, assignment)
            return teaching.lesson(config, network, training, assignment)

        if teaching is not None:
            files.write_teacher(run_dir, teaching.record(config))
        plan = [
            FoldPlan(network, fold,
                     train.steps_per_epoch(fold_rows(assignment, network, fold)[0].size
                                           + (teaching.extra_rows(network, fold)
                                              if teaching else 0),
                                           config.train.batch_size),
                     files.fold_trained(run_dir, network, fold))
            for network in tasks.network_names(config) for fold in range(config.folds)
        ]
        listener.run_started(run_dir, plan, config.train.epochs)
        stats = loop.Stats()
        started = time.perf_counter()
        with programs.CompileClock() as clock:
            for network in tasks.network_names(config):
                train_network(config, training, run_dir, network, assignment, listener, stats,
                              lesson=functools.partial(lesson_for, network))
        record_engine(run_dir, stats, time.perf_counter() - started, clock.seconds)
        oof = pd.concat([table for network in tasks.network_names(config)
                         for fold in range(config.folds)
                         for table in fold_oof(config, training, run_dir, network, fold)],
                        ignore_index=True)
        files.write_oof(run_dir, oof)
    return run_dir


def train_network(config: Config, training: TrainingSet, run_dir: Path, network: str,
                  assignment: dict, listener: Listener, stats: loop.Stats,
                  only: tuple[int, ...] | None = None,
                  lesson: Callable[[], Lesson] | None = None) -> None:
    """Train the network's unfinished folds (or those of `only`) together; keep each one's
    model, history and out-of-fold predictions as its group finishes. `lesson` makes what
    the network learns from (plain_lesson's by default), only if a fold is left to train."""
    jobs = []
    for fold in only if only is not None else range(config.folds):
        folder = files.fold_dir(run_dir, network, fold)
        if files.fold_trained(run_dir, network, fold):
            listener.fold_finished(network, fold,
                                   float(files.read_history(folder)["best_val_rmse"]),
                                   skipped=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(fold)
    if not jobs:
        return
    taught = (lesson or functools.partial(plain_lesson, config, network, training,
                                          assignment))()
    jobs = [loop.FoldJob(fold, taught.train_rows[fold], fold_rows(assignment, network, fold)[1],
                         files.fold_dir(run_dir, network, fold) / checkpoints.CHECKPOINT)
            for fold in jobs]
    task = tasks.task_for(network)
    data = loop.NetworkData(taught.images, taught.targets, taught.loss_weights)
    val_rows = {job.fold: job.val_rows for job in jobs}
    for result in loop.train_folds(config, task, network, data, jobs, listener, stats):
        folder = files.fold_dir(run_dir, network, result.fold)
        save_fold_model(folder, result.params, result.net_state)
        files.write_history(folder, {
            "history": result.history, "best_epoch": result.best_epoch,
            "best_val_rmse": result.best_val_rmse, "select": config.train.select,
        })
        predictions = predict_images(config, task, [FoldModel(result.params, result.net_state)],
                                     training.images[val_rows[result.fold]])
        files.write_fold_oof(folder, val_rows[result.fold], predictions)
        (folder / checkpoints.CHECKPOINT).unlink(missing_ok=True)
        listener.fold_finished(network, result.fold, result.best_val_rmse, skipped=False)


def record_engine(run_dir: Path, stats: loop.Stats, seconds: float,
                  compile_seconds: float) -> None:
    """engine.json: what this call's training cost (a resumed run lists each call)."""
    files.append_engine_call(run_dir, {
        "backend": jax.default_backend(), "devices": jax.device_count(),
        "seconds": round(seconds, 2), "train_seconds": round(stats.train_seconds, 2),
        # Every compile of the call (programs, initialisation, prediction), cache reads too.
        "compile_seconds": round(compile_seconds, 2),
        "group_compile_seconds": round(stats.compile_seconds, 2), "images": stats.images,
        "images_per_second": round(stats.images_per_second, 1), "groups": stats.groups,
        "versions": {**runtime.running(), "hardware": hardware.survey()},
    })


def fold_oof(config: Config, training: TrainingSet, run_dir: Path, network: str,
             fold: int) -> list[pd.DataFrame]:
    """A finished fold's OOF lines for each subset its network answers."""
    rows, predictions = files.read_fold_oof(files.fold_dir(run_dir, network, fold))
    return oof_tables(config, training, network, fold, rows, predictions)


def oof_tables(config: Config, training: TrainingSet, network: str, fold: int,
               rows: np.ndarray, outputs: np.ndarray) -> list[pd.DataFrame]:
    """OOF lines of a fold's held-out `rows` from the network's `outputs` on them."""
    tables = []
    for subset in tasks.subsets_answered(config, network):
        mine = np.isin(rows, subset_indices(training.keypoints, subset))
        columns = tasks.column_indices(subset)
        truth = training.keypoints[rows[mine]][:, columns]
        values = tasks.subset_predictions(network, subset, outputs[mine],
                                          tasks.full_source(training.keypoints[rows[mine]]))
        tables.append(_long_table(subset, fold, rows[mine], columns, truth, values))
    return tables


def _long_table(subset, fold, rows, columns, truth, predictions) -> pd.DataFrame:
    """One line per (row, column) with a truth: the format of oof.csv."""
    row_grid = np.repeat(rows, len(columns))
    column_grid = np.tile(columns, len(rows))
    truth_flat, prediction_flat = truth.ravel(), predictions.ravel()
    present = ~np.isnan(truth_flat)
    return pd.DataFrame({
        "row": row_grid[present], "subset": subset, "fold": fold,
        "column": column_grid[present], "truth": truth_flat[present],
        "prediction": prediction_flat[present],
    })
