"""K-fold cross-validation of both subsets' networks; the run folder; the fold ensemble.

A run lives in cv/<run-id>/:
    config.json            the Config, enough to reproduce the run
    folds.json             each training row's fold per subset, and the near-duplicate groups
    folds/<subset>-<k>/    checkpoint.npz while training; model.npz and history.json after
    oof.csv                out-of-fold predictions: row, subset, fold, column, truth, prediction
    report.json/.md, *.png written by kit.report
"""
from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from kit import config as config_io
from kit import fileio, folds, models, train
from kit.config import Config, ModelConfig
from kit.data import TrainingSet, subset_indices
from kit.errors import KitError
from kit.keypoints import COLUMN_INDEX, SUBSET_COLUMNS

LATEST = "latest"


def task_for(subset: str) -> train.Task:
    return train.Task(subset, SUBSET_COLUMNS[subset])


def column_indices(subset: str) -> np.ndarray:
    return np.array([COLUMN_INDEX[c] for c in SUBSET_COLUMNS[subset]])


# ---------------------------------------------------------------- run folders


def new_run_dir(root: Path, config: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = Path(root) / f"{stamp}-{config.preset}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(root) / f"{stamp}-{config.preset}-{suffix}"
    return run_dir


def resolve_run(root: Path, name: str | None = None) -> Path:
    """A run folder from an id, a path or None (cv/latest)."""
    root = Path(root)
    candidate = Path(name) if name else root / LATEST
    if not candidate.exists() and name:
        candidate = root / name
    if not (candidate / "config.json").exists():
        if name:
            raise KitError(f"{candidate}: no CV run there (no config.json); see `ls {root}`")
        raise KitError(f"{root / LATEST}: no CV run yet; run `make cv` first")
    return candidate.resolve()


def point_latest(root: Path, run_dir: Path) -> None:
    link = Path(root) / LATEST
    temporary = Path(root) / f".{LATEST}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name)
    os.replace(temporary, link)


def unfinished_run(root: Path, config: Config) -> Path | None:
    """The newest run with this exact config that has no report yet: a run to resume."""
    runs = sorted(Path(root).glob("*/config.json"), reverse=True)
    for path in runs:
        run_dir = path.parent
        if run_dir.is_symlink() or (run_dir / "report.json").exists():
            continue
        try:
            if config_io.load(path) == config:
                return run_dir
        except KitError:
            continue
    return None


def fold_dir(run_dir: Path, subset: str, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"{subset}-{fold}"


# ---------------------------------------------------------------- assignment


def assign_folds(config: Config, training: TrainingSet) -> dict:
    """Each subset's rows and their fold numbers (grouped by near-duplicates if asked)."""
    groups = None
    if config.grouped_folds:
        groups = folds.near_duplicate_groups(training.images, config.group_similarity)
    out = {"groups": None if groups is None else groups.tolist(), "subsets": {}}
    for subset in config.subsets:
        rows = subset_indices(training.keypoints, subset)
        if len(rows) < config.folds:
            raise KitError(f"subset {subset} has {len(rows)} rows; {config.folds} folds need more")
        assignment = folds.split(len(rows), config.folds, config.seed,
                                 None if groups is None else groups[rows])
        out["subsets"][subset] = {"rows": rows.tolist(), "fold": assignment.tolist()}
    return out


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
    subset: str
    fold: int
    steps_per_epoch: int
    finished: bool  # trained by an earlier, interrupted call


@dataclass(frozen=True)
class FoldModel:
    params: object
    net_state: object


# ---------------------------------------------------------------- listeners


class Listener:
    """Hooks a display implements; the defaults do nothing (tests and scripts)."""

    def run_started(self, run_dir: Path, plan: list[FoldPlan], epochs: int) -> None: ...
    def fold_started(self, subset: str, fold: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def epoch(self, subset: str, fold: int, report: train.EpochReport) -> None: ...
    def fold_finished(self, subset: str, fold: int, best_val_rmse: float,
                      skipped: bool) -> None: ...



def run_cv(config: Config, training: TrainingSet, root: Path, resume: bool = True,
           listener: Listener | None = None) -> Path:
    """Train every subset's fold models; write folds, models, histories and oof.csv."""
    listener = listener or Listener()
    run_dir = unfinished_run(root, config) if resume else None
    if run_dir is None:
        run_dir = new_run_dir(root, config)
        run_dir.mkdir(parents=True)
        assignment = assign_folds(config, training)
        assignment["training_rows"] = len(training)
        fileio.write_json(run_dir / "folds.json", assignment)
        # config.json last: it is what marks a folder as a run that can be resumed.
        fileio.write_json(run_dir / "config.json", config_io.to_dict(config))
    assignment = load_assignment(run_dir, training)
    point_latest(root, run_dir)

    plan = [
        FoldPlan(subset, fold,
                 max(_fold_rows(assignment, subset, fold)[0].size // config.train.batch_size, 1),
                 (fold_dir(run_dir, subset, fold) / "oof.npz").exists())
        for subset in config.subsets for fold in range(config.folds)
    ]
    listener.run_started(run_dir, plan, config.train.epochs)

    oof_tables = []
    for entry in plan:
        subset, fold = entry.subset, entry.fold
        train_rows, val_rows = _fold_rows(assignment, subset, fold)
        oof_tables.append(
            _train_fold(config, training, run_dir, subset, fold, train_rows, val_rows, listener)
        )
    oof = pd.concat(oof_tables, ignore_index=True)
    with fileio.atomic_path(run_dir / "oof.csv") as temporary:
        oof.to_csv(temporary, index=False, float_format="%.5f")
    return run_dir


def _fold_rows(assignment: dict, subset: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    entry = assignment["subsets"][subset]
    rows, fold_of = np.asarray(entry["rows"]), np.asarray(entry["fold"])
    return rows[fold_of != fold], rows[fold_of == fold]


def _train_fold(config, training, run_dir, subset, fold, train_rows, val_rows,
                listener) -> pd.DataFrame:
    task = task_for(subset)
    columns = column_indices(subset)
    folder = fold_dir(run_dir, subset, fold)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "oof.npz"
    if not done.exists():
        steps = max(len(train_rows) // config.train.batch_size, 1)
        listener.fold_started(subset, fold, config.train.epochs, steps)
        result = train.fit(
            config, task,
            training.images[train_rows], training.keypoints[train_rows][:, columns],
            training.images[val_rows], training.keypoints[val_rows][:, columns],
            fold_seed=fold, checkpoint_dir=folder,
            on_step=listener.step,
            on_epoch=lambda report: listener.epoch(subset, fold, report),
        )
        save_fold_model(folder, result.params, result.net_state)
        fileio.write_json(folder / "history.json", {
            "history": result.history, "best_epoch": result.best_epoch,
            "best_val_rmse": result.best_val_rmse,
        })
        predictions = predict_images(config, task, [FoldModel(result.params, result.net_state)],
                                     training.images[val_rows])
        with fileio.atomic_path(done) as temporary, open(temporary, "wb") as f:
            np.savez(f, rows=val_rows, predictions=predictions)
        (folder / train.CHECKPOINT).unlink(missing_ok=True)
        listener.fold_finished(subset, fold, result.best_val_rmse, skipped=False)
    else:
        listener.fold_finished(subset, fold, _best_val(folder), skipped=True)
    with np.load(done, allow_pickle=False) as stored:
        rows, predictions = stored["rows"], stored["predictions"]
    truth = training.keypoints[rows][:, columns]
    return _long_table(subset, fold, rows, columns, truth, predictions)


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
    train.save_tree(Path(folder) / "model.npz", (params, net_state))


def load_fold_models(run_dir: Path, subset: str) -> list[FoldModel]:
    config = config_io.load(Path(run_dir) / "config.json")
    task = task_for(subset)
    net = models.build(config.model, task.outputs)
    like = net.init(jax.random.PRNGKey(0), np.zeros((1, 96, 96), np.float32), True)
    fold_models = []
    for fold in range(config.folds):
        path = fold_dir(run_dir, subset, fold) / "model.npz"
        if not path.exists():
            raise KitError(f"{path}: missing; the run is unfinished (run `make cv` to finish it)")
        (params, net_state), _ = train.load_tree(path, like)
        fold_models.append(FoldModel(params, net_state))
    return fold_models


def predict_images(config: Config, task: train.Task, fold_models: list[FoldModel],
                   images: np.ndarray) -> np.ndarray:
    """The ensemble's pixel keypoints: the mean over fold models (and flips, if configured)."""
    predict = _predictor(config.model, task, config.flip_tta)
    outputs = [
        train.predict_batched(predict, m.params, m.net_state, images, config.train.eval_batch_size)
        for m in fold_models
    ]
    return np.mean(outputs, axis=0)


@functools.lru_cache(maxsize=8)
def _predictor(model: ModelConfig, task: train.Task, flip_tta: bool):
    return train.make_predict(models.build(model, task.outputs), task, flip_tta)


def predict_run(run_dir: Path, subset: str, images: np.ndarray,
                on_model: Callable[[int], None] | None = None) -> np.ndarray:
    """Predict any uint8 (N, 96, 96) images with a saved run's ensemble for one subset."""
    config = config_io.load(Path(run_dir) / "config.json")
    if subset not in config.subsets:
        raise KitError(f"{run_dir}: the run has no {subset}-key models (its subsets: "
                       f"{', '.join(config.subsets)})")
    return predict_images(config, task_for(subset), load_fold_models(run_dir, subset), images)
