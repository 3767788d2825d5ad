"""K-fold cross-validation of both subsets' networks; the run folder; the fold ensemble.

A run lives in cv/<run-id>/:
    config.json            the Config, enough to reproduce the run
    folds.json             each network's rows and their folds, and the near-duplicate groups
    folds/<network>-<k>/   checkpoint.npz while training; model.npz, history.json, oof.npz
                           after (a network per subset, "15" and "4", or one "shared")
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
from kit.keypoints import (
    COLUMN_INDEX,
    COLUMNS,
    CORE_COLUMN_INDICES,
    CORE_COLUMNS,
    SUBSET_COLUMNS,
)

LATEST = "latest"


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
                       keypoints: np.ndarray | None = None) -> np.ndarray:
    """A subset's values from a network's outputs. For the shared network's 4-key values,
    rows of the full source (where keypoints say so) take the 15-key head's core values."""
    if network != SHARED:
        return outputs
    fifteen, four = outputs[:, : len(COLUMNS)], outputs[:, len(COLUMNS):]
    if subset == "15":
        return fifteen
    if keypoints is None:
        return four
    return np.where(full_source(keypoints)[:, None], fifteen[:, CORE_COLUMN_INDICES], four)


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


def fold_dir(run_dir: Path, network: str, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"{network}-{fold}"


# ---------------------------------------------------------------- assignment


def assign_folds(config: Config, training: TrainingSet) -> dict:
    """Each network's rows and their fold numbers (grouped by near-duplicates if asked)."""
    groups = None
    if config.grouped_folds:
        groups = folds.near_duplicate_groups(training.images, config.group_similarity)
    out = {"groups": None if groups is None else groups.tolist(), "networks": {}}
    for network in networks(config):
        rows = network_rows(config, network, training.keypoints)
        if len(rows) < config.folds:
            raise KitError(f"the {network} network has {len(rows)} rows; "
                           f"{config.folds} folds need more")
        assignment = folds.split(len(rows), config.folds, config.seed,
                                 None if groups is None else groups[rows])
        out["networks"][network] = {"rows": rows.tolist(), "fold": assignment.tolist()}
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
    network: str
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
    def fold_started(self, network: str, fold: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def epoch(self, network: str, fold: int, report: train.EpochReport) -> None: ...
    def fold_finished(self, network: str, fold: int, best_val_rmse: float,
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
        FoldPlan(network, fold,
                 max(fold_rows(assignment, network, fold)[0].size // config.train.batch_size,
                     1),
                 (fold_dir(run_dir, network, fold) / "oof.npz").exists())
        for network in networks(config) for fold in range(config.folds)
    ]
    listener.run_started(run_dir, plan, config.train.epochs)

    oof_tables = []
    for entry in plan:
        network, fold = entry.network, entry.fold
        train_rows, val_rows = fold_rows(assignment, network, fold)
        oof_tables += train_fold(config, training, run_dir, network, fold, train_rows, val_rows,
                                 listener)
    oof = pd.concat(oof_tables, ignore_index=True)
    with fileio.atomic_path(run_dir / "oof.csv") as temporary:
        oof.to_csv(temporary, index=False, float_format="%.5f")
    return run_dir


def fold_rows(assignment: dict, network: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    entry = assignment["networks"][network]
    rows, fold_of = np.asarray(entry["rows"]), np.asarray(entry["fold"])
    return rows[fold_of != fold], rows[fold_of == fold]


def train_fold(config, training, run_dir, network, fold, train_rows, val_rows,
               listener) -> list[pd.DataFrame]:
    """Train (or find trained) one network on one fold; its OOF lines for each subset."""
    task = task_for(network)
    targets = network_targets(network, training.keypoints, config.common_keypoints)
    folder = fold_dir(run_dir, network, fold)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "oof.npz"
    if not done.exists():
        steps = max(len(train_rows) // config.train.batch_size, 1)
        listener.fold_started(network, fold, config.train.epochs, steps)
        result = train.fit(
            config, task,
            training.images[train_rows], targets[train_rows],
            training.images[val_rows], targets[val_rows],
            fold_seed=fold, checkpoint_dir=folder,
            on_step=listener.step,
            on_epoch=lambda report: listener.epoch(network, fold, report),
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
        listener.fold_finished(network, fold, result.best_val_rmse, skipped=False)
    else:
        listener.fold_finished(network, fold, _best_val(folder), skipped=True)
    with np.load(done, allow_pickle=False) as stored:
        rows, outputs = stored["rows"], stored["predictions"]
    tables = []
    subsets = config.subsets if network == SHARED else (network,)
    for subset in subsets:
        mine = np.isin(rows, subset_indices(training.keypoints, subset))
        columns = column_indices(subset)
        truth = training.keypoints[rows[mine]][:, columns]
        values = subset_predictions(network, subset, outputs[mine], training.keypoints[rows[mine]])
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
    train.save_tree(Path(folder) / "model.npz", (params, net_state))


def load_fold_models(run_dir: Path, network: str) -> list[FoldModel]:
    config = config_io.load(Path(run_dir) / "config.json")
    task = task_for(network)
    net = models.build(config.model, task.outputs)
    like = net.init(jax.random.PRNGKey(0), np.zeros((1, 96, 96), np.float32), True)
    fold_models = []
    for fold in range(config.folds):
        path = fold_dir(run_dir, network, fold) / "model.npz"
        if not path.exists():
            raise KitError(f"{path}: missing; the run is unfinished (run `make cv` to finish it)")
        (params, net_state), _ = train.load_tree(path, like)
        fold_models.append(FoldModel(params, net_state))
    return fold_models


def predict_images(config: Config, task: train.Task, fold_models: list[FoldModel],
                   images: np.ndarray) -> np.ndarray:
    """The ensemble's pixel keypoints: the mean over fold models (and flips, if configured)."""
    predict = _predictor(config.model, task, config.flip_tta, config.tta_shift)
    outputs = [
        train.predict_batched(predict, m.params, m.net_state, images, config.train.eval_batch_size)
        for m in fold_models
    ]
    return np.mean(outputs, axis=0)


@functools.lru_cache(maxsize=8)
def _predictor(model: ModelConfig, task: train.Task, flip_tta: bool, tta_shift: float):
    return train.make_predict(models.build(model, task.outputs), task, flip_tta, tta_shift)


def predict_run(run_dir: Path, subset: str, images: np.ndarray,
                on_model: Callable[[int], None] | None = None) -> np.ndarray:
    """Predict any uint8 (N, 96, 96) images with a saved run's ensemble for one subset."""
    config = config_io.load(Path(run_dir) / "config.json")
    if subset not in config.subsets:
        raise KitError(f"{run_dir}: the run has no {subset}-key models (its subsets: "
                       f"{', '.join(config.subsets)})")
    network = SHARED if config.shared_trunk else subset
    outputs = predict_images(config, task_for(network), load_fold_models(run_dir, network),
                             images)
    # Test images of the core-only block come from the core-only source: the 4-key head.
    return subset_predictions(network, subset, outputs)
