"""K-fold cross-validation of both subsets' networks; the run folder; the fold ensemble.

A run lives in cv/<run-id>/:
    config.json            the Config, enough to reproduce the run
    folds.json             each network's rows and their folds (a row's fold is the same in every
                           network), the near-duplicate groups and the data's fingerprint
    folds/<network>-<k>/   checkpoint.npz while training; model.npz, history.json, oof.npz
                           after (a network per subset, "15" and "4", or one "shared")
    engine.json            what training cost: compile and train seconds, images/s, groups
    oof.csv                out-of-fold predictions: row, subset, fold, column, truth, prediction
    teacher.json           a second pass only (kit.results.teacher): what the teacher run contributed
    report.json/.md, *.png written by kit.results.report; label-noise.csv/.png (kit.results.label_noise)

`run_cv` reads as the recipe: assign folds, train each network's unfinished folds together
(kit.training.engine), keep each fold's model and out-of-fold predictions, gather oof.csv.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd

from kit import config as config_io
from kit.config import Config, ModelConfig
from kit.core import fileio
from kit.core.errors import KitError
from kit.core.keypoints import (
    COLUMN_INDEX,
    COLUMNS,
    CORE_COLUMN_INDICES,
    CORE_COLUMNS,
    SUBSET_COLUMNS,
)
from kit.data.tables import TrainingSet, subset_indices
from kit.model import networks as nets
from kit.runs import folds
from kit.runs.folders import (
    fold_dir,
    locked,
    new_run_dir,
    point_latest,
    resolve_run,
    unfinished_run,
)
from kit.training import checkpoints, engine, programs, runtime, train
from kit.training.engine import Listener

if TYPE_CHECKING:
    from kit.results.teacher import Teaching

__all__ = ["Listener", "fold_dir", "resolve_run", "run_cv"]



SHARED = "shared"


def networks(config: Config) -> tuple[str, ...]:
    """The networks trained on each fold: one per subset, or one shared trunk."""
    return (SHARED,) if config.shared_trunk else tuple(config.subsets)


def task_for(network: str) -> train.Task:
    """A subset's network predicts its columns; the shared one both heads side by side."""
    if network == SHARED:
        fifteen, four = train.Task.of("15", COLUMNS), train.Task.of("4", CORE_COLUMNS)
        flip = fifteen.flip + tuple(len(COLUMNS) + i for i in four.flip)
        return train.Task(SHARED, COLUMNS + CORE_COLUMNS, flip)
    return train.Task.of(network, SUBSET_COLUMNS[network])


def column_indices(subset: str) -> np.ndarray:
    return np.array([COLUMN_INDEX[c] for c in SUBSET_COLUMNS[subset]])


def full_source(keypoints: np.ndarray) -> np.ndarray:
    """Rows of the first annotation source: those with any value beyond the 8 core ones."""
    present = ~np.isnan(keypoints)
    present[:, CORE_COLUMN_INDICES] = False
    return present.any(axis=1)


def network_rows(config: Config, network: str, keypoints: np.ndarray) -> np.ndarray:
    if network != SHARED:
        return subset_indices(keypoints, network)
    return np.unique(np.concatenate([subset_indices(keypoints, s) for s in config.subsets]))


def network_targets(network: str, keypoints: np.ndarray,
                    common: tuple[str, ...] = ()) -> np.ndarray:
    """What a network learns from each row, NaN where it learns nothing.

    The shared network's 15-key head learns from the full source and its core head from the
    core-only source, whose bottom-lip convention differs. The `common` keypoints (eye centres
    and nose tip, say) mean the same in both sources, so both heads learn them from every row.
    """
    if network != SHARED:
        return keypoints[:, column_indices(network)]
    full = full_source(keypoints)[:, None]
    shared = np.isin(np.array([c[:-2] for c in COLUMNS]), common)
    fifteen = np.where(full | shared, keypoints, np.nan)
    core = keypoints[:, CORE_COLUMN_INDICES]
    four = np.where(full & ~shared[CORE_COLUMN_INDICES], np.nan, core)
    return np.concatenate([fifteen, four], axis=1)


def subset_predictions(network: str, subset: str, outputs: np.ndarray,
                       full: np.ndarray | None = None) -> np.ndarray:
    """A subset's values from a network's outputs. For the shared network's 4-key values,
    faces of the full annotation source (where `full` says so) take the 15-key head's core
    values: the head that learned that source's convention (its bottom lip)."""
    if network != SHARED:
        return outputs
    fifteen, four = outputs[:, : len(COLUMNS)], outputs[:, len(COLUMNS):]
    if subset == "15":
        return fifteen
    if full is None:
        return four
    return np.where(np.asarray(full)[:, None], fifteen[:, CORE_COLUMN_INDICES], four)


# ---------------------------------------------------------------- assignment


def assign_folds(config: Config, training: TrainingSet) -> dict:
    """Each network's rows and their fold numbers (grouped by near-duplicates if asked).

    A row's fold depends on the row, never on the network: the split is drawn once over every
    row any subset uses, and each network keeps its rows' folds. So runs of one seed share
    their folds whatever their networks, and their out-of-fold predictions can be blended.
    """
    groups = None
    if config.grouped_folds:
        groups = folds.near_duplicate_groups(training.images, config.group_similarity)
    union = np.unique(np.concatenate([subset_indices(training.keypoints, s)
                                      for s in config.subsets]))
    if len(union) < config.folds:
        raise KitError(f"{len(union)} training rows carry the subsets' keypoints; "
                       f"{config.folds} folds need more")
    fold_of_row = np.full(len(training), -1, np.int64)
    fold_of_row[union] = folds.split(len(union), config.folds, config.seed,
                                     None if groups is None else groups[union])
    out = {"groups": None if groups is None else groups.tolist(), "networks": {},
           "fingerprint": fingerprint(training)}
    for network in networks(config):
        rows = network_rows(config, network, training.keypoints)
        assignment = fold_of_row[rows]
        if len(np.unique(assignment)) < config.folds:
            raise KitError(f"the {network} network has {len(rows)} rows; they do not fill "
                           f"{config.folds} folds")
        out["networks"][network] = {"rows": rows.tolist(), "fold": assignment.tolist()}
    return out


def fingerprint(training: TrainingSet) -> str:
    """A short hash of the training images and keypoints: runs on other data differ."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(training.images).tobytes())
    digest.update(np.nan_to_num(training.keypoints, nan=-1.0).astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def load_assignment(run_dir: Path, training: TrainingSet) -> dict:
    assignment = json.loads((Path(run_dir) / "folds.json").read_text())
    if assignment.get("training_rows") != len(training):
        raise KitError(
            f"{run_dir}: the run was made on {assignment.get('training_rows')} training rows, "
            f"the data has {len(training)}; start a new run (RESUME=0)"
        )
    return assignment


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class FoldPlan:
    network: str
    fold: int
    steps_per_epoch: int
    finished: bool  # trained by an earlier, interrupted call


@dataclass(frozen=True)
class FoldModel:
    params: object
    net_state: object


@dataclass(frozen=True)
class Lesson:
    """What one network learns from. Rows 0..N-1 of images and targets are the training set's
    own, as network_targets makes them: validation and out-of-fold scoring read only those.
    A teacher (kit.results.teacher) may append rows that only training reads: copies of rows with
    doubted labels, test faces with pseudo-labels."""

    images: np.ndarray  # uint8 (rows, 96, 96)
    targets: np.ndarray  # pixels (rows, outputs), NaN where nothing is learned
    weights: np.ndarray | None  # loss weight of each target value; None: all 1
    train_rows: dict[int, np.ndarray]  # each fold's training rows of the above


def plain_lesson(config: Config, network: str, training: TrainingSet,
                 assignment: dict) -> Lesson:
    return Lesson(training.images,
                  network_targets(network, training.keypoints, config.common_keypoints), None,
                  {fold: fold_rows(assignment, network, fold)[0] for fold in range(config.folds)})


def run_cv(config: Config, training: TrainingSet, root: Path, resume: bool = True,
           listener: Listener | None = None, teaching: Teaching | None = None) -> Path:
    """Train every network's fold models; write folds, models, histories and oof.csv.

    A run with `config.teacher` takes `teaching` (kit.teacher.prepare): the teacher's folds,
    and what its networks learn besides the training set's own labels."""
    listener = listener or Listener()
    if bool(config.teacher) != (teaching is not None):
        raise KitError(f"teacher={config.teacher!r} but {'no' if teaching is None else 'a'} "
                       "teaching was given; expected kit.teacher.prepare's for a teacher run")
    run_dir = unfinished_run(root, config) if resume else None
    fresh = run_dir is None
    if fresh:
        run_dir = new_run_dir(root, config)
    with locked(run_dir):
        if fresh:
            if teaching is None:
                assignment = assign_folds(config, training)
                assignment["training_rows"] = len(training)
            else:  # the teacher's folds, exactly: its fold-k models taught fold k
                assignment = teaching.assignment
            fileio.write_json(run_dir / "folds.json", assignment)
            # config.json last: it is what marks a folder as a run that can be resumed.
            fileio.write_json(run_dir / "config.json", config_io.to_dict(config))
        assignment = load_assignment(run_dir, training)
        point_latest(root, run_dir)

        def lesson_for(network: str) -> Lesson:
            if teaching is None:
                return plain_lesson(config, network, training, assignment)
            return teaching.lesson(config, network, training, assignment)

        if teaching is not None:
            fileio.write_json(run_dir / "teacher.json", teaching.record(config))
        plan = [
            FoldPlan(network, fold,
                     train.steps_per_epoch(fold_rows(assignment, network, fold)[0].size
                                           + (teaching.extra_rows(network, fold)
                                              if teaching else 0),
                                           config.train.batch_size),
                     (fold_dir(run_dir, network, fold) / "oof.npz").exists())
            for network in networks(config) for fold in range(config.folds)
        ]
        listener.run_started(run_dir, plan, config.train.epochs)
        stats = engine.Stats()
        started = time.perf_counter()
        with programs.CompileClock() as clock:
            for network in networks(config):
                train_network(config, training, run_dir, network, assignment, listener, stats,
                              lesson=functools.partial(lesson_for, network))
        record_engine(run_dir, stats, time.perf_counter() - started, clock.seconds)
        oof_tables = [table for network in networks(config) for fold in range(config.folds)
                      for table in fold_oof(config, training, run_dir, network, fold)]
        oof = pd.concat(oof_tables, ignore_index=True)
        with fileio.atomic_path(run_dir / "oof.csv") as temporary:
            oof.to_csv(temporary, index=False, float_format="%.5f")
    return run_dir


def fold_rows(assignment: dict, network: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    entry = assignment["networks"][network]
    rows, fold_of = np.asarray(entry["rows"]), np.asarray(entry["fold"])
    return rows[fold_of != fold], rows[fold_of == fold]


def train_network(config: Config, training: TrainingSet, run_dir: Path, network: str,
                  assignment: dict, listener: Listener, stats: engine.Stats,
                  only: tuple[int, ...] | None = None,
                  lesson: Callable[[], Lesson] | None = None) -> None:
    """Train the network's unfinished folds (or those of `only`) together; keep each one's
    model, history and out-of-fold predictions as its group finishes. `lesson` makes what
    the network learns from (plain_lesson's by default), only if a fold is left to train."""
    jobs = []
    for fold in only if only is not None else range(config.folds):
        folder = fold_dir(run_dir, network, fold)
        if (folder / "oof.npz").exists():
            listener.fold_finished(network, fold, _best_val(folder), skipped=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(fold)
    if not jobs:
        return
    taught = (lesson or functools.partial(plain_lesson, config, network, training,
                                          assignment))()
    jobs = [engine.FoldJob(fold, taught.train_rows[fold], fold_rows(assignment, network, fold)[1],
                           fold_dir(run_dir, network, fold) / checkpoints.CHECKPOINT)
            for fold in jobs]
    task = task_for(network)
    placement = programs.Placement.for_batch(config.train.batch_size)
    data = engine.DeviceData.put(taught.images, taught.targets, placement, taught.weights)
    val_rows = {job.fold: job.val_rows for job in jobs}
    for result in engine.fit_folds(config, task, data, jobs, listener, stats, network):
        folder = fold_dir(run_dir, network, result.fold)
        save_fold_model(folder, result.params, result.net_state)
        fileio.write_json(folder / "history.json", {
            "history": result.history, "best_epoch": result.best_epoch,
            "best_val_rmse": result.best_val_rmse, "select": config.train.select,
        })
        predictions = predict_images(config, task, [FoldModel(result.params, result.net_state)],
                                     training.images[val_rows[result.fold]])
        with fileio.atomic_path(folder / "oof.npz") as temporary, open(temporary, "wb") as f:
            np.savez(f, rows=val_rows[result.fold], predictions=predictions)
        (folder / checkpoints.CHECKPOINT).unlink(missing_ok=True)
        listener.fold_finished(network, result.fold, result.best_val_rmse, skipped=False)


def record_engine(run_dir: Path, stats: engine.Stats, seconds: float,
                  compile_seconds: float) -> None:
    """engine.json: what this call's training cost (a resumed run lists each call)."""
    path = Path(run_dir) / "engine.json"
    calls = json.loads(path.read_text())["calls"] if path.exists() else []
    calls.append({
        "backend": jax.default_backend(), "devices": jax.device_count(),
        "seconds": round(seconds, 2), "train_seconds": round(stats.train_seconds, 2),
        # Every compile of the call (programs, initialisation, prediction), cache reads too.
        "compile_seconds": round(compile_seconds, 2),
        "group_compile_seconds": round(stats.compile_seconds, 2), "images": stats.images,
        "images_per_second": round(stats.images_per_second, 1), "groups": stats.groups,
        "versions": runtime.running(),
    })
    fileio.write_json(path, {"calls": calls})


def fold_oof(config: Config, training: TrainingSet, run_dir: Path, network: str,
             fold: int) -> list[pd.DataFrame]:
    """A finished fold's OOF lines for each subset its network answers."""
    with np.load(fold_dir(run_dir, network, fold) / "oof.npz", allow_pickle=False) as stored:
        return oof_tables(config, training, network, fold, stored["rows"],
                          stored["predictions"])


def oof_tables(config: Config, training: TrainingSet, network: str, fold: int,
               rows: np.ndarray, outputs: np.ndarray) -> list[pd.DataFrame]:
    """OOF lines of a fold's held-out `rows` from the network's `outputs` on them."""
    tables = []
    subsets = config.subsets if network == SHARED else (network,)
    for subset in subsets:
        mine = np.isin(rows, subset_indices(training.keypoints, subset))
        columns = column_indices(subset)
        truth = training.keypoints[rows[mine]][:, columns]
        values = subset_predictions(network, subset, outputs[mine],
                                    full_source(training.keypoints[rows[mine]]))
        tables.append(_long_table(subset, fold, rows[mine], columns, truth, values))
    return tables


def _best_val(folder: Path) -> float:
    return float(json.loads((folder / "history.json").read_text())["best_val_rmse"])


def _long_table(subset, fold, rows, columns, truth, predictions) -> pd.DataFrame:
    """One line per (row, column) with a truth: the format report and plots read."""
    row_grid = np.repeat(rows, len(columns))
    column_grid = np.tile(columns, len(rows))
    truth_flat, prediction_flat = truth.ravel(), predictions.ravel()
    present = ~np.isnan(truth_flat)
    return pd.DataFrame({
        "row": row_grid[present], "subset": subset, "fold": fold,
        "column": column_grid[present], "truth": truth_flat[present],
        "prediction": prediction_flat[present],
    })


# ---------------------------------------------------------------- models and prediction


def save_fold_model(folder: Path, params, net_state) -> None:
    checkpoints.save_tree(Path(folder) / "model.npz", (params, net_state))


def load_fold_models(run_dir: Path, network: str) -> list[FoldModel]:
    config = config_io.load(Path(run_dir) / "config.json")
    task = task_for(network)
    net = nets.build(config.model, task.outputs)
    like = net.init(jax.random.PRNGKey(0), np.zeros((1, 96, 96), np.float32), True)
    fold_models = []
    for fold in range(config.folds):
        path = fold_dir(run_dir, network, fold) / "model.npz"
        if not path.exists():
            raise KitError(f"{path}: missing; the run is unfinished (run `make cv` to finish it)")
        (params, net_state), _ = checkpoints.load_tree(path, like)
        fold_models.append(FoldModel(params, net_state))
    return fold_models


def predict_images(config: Config, task: train.Task, fold_models: list[FoldModel],
                   images: np.ndarray) -> np.ndarray:
    """The ensemble's pixel keypoints: the mean over fold models (and flips, if configured)."""
    predict = _predictor(config.model, task, config.flip_tta,
                         train.tta_views(config.tta_shift, config.tta_zoom, config.tta_rotate))
    outputs = [
        programs.predict_batched(predict, m.params, m.net_state, images,
                                 config.train.eval_batch_size)
        for m in fold_models
    ]
    return np.mean(outputs, axis=0)


@functools.lru_cache(maxsize=8)
def _predictor(model: ModelConfig, task: train.Task, flip_tta: bool, views: tuple):
    return train.make_predict(nets.build(model, task.outputs), task, flip_tta, views)


def predict_run(run_dir: Path, subset: str, images: np.ndarray,
                on_model: Callable[[int], None] | None = None,
                full: np.ndarray | None = None) -> np.ndarray:
    """Predict any uint8 (N, 96, 96) images with a saved run's ensemble for one subset.

    `full` marks the images of the full annotation source (the test faces the lookup table
    asks all values of): their 4-key values are made as the OOF's were on such faces, so a
    blend or choice fitted on that OOF meets the same predictions on the test set. Without
    it, every image is taken as the core-only source's."""
    config = config_io.load(Path(run_dir) / "config.json")
    if subset not in config.subsets:
        raise KitError(f"{run_dir}: the run has no {subset}-key models (its subsets: "
                       f"{', '.join(config.subsets)})")
    network = SHARED if config.shared_trunk else subset
    outputs = predict_images(config, task_for(network), load_fold_models(run_dir, network),
                             images)
    return subset_predictions(network, subset, outputs, full)
