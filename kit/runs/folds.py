"""A run's folds: K-fold splits, plain or grouped so that near-identical frames stay on one
side, and the assignment folds.json holds (each network's rows and their folds).

Kaggle's training faces include runs of near-identical video frames of one person; a plain
split puts copies of a face on both sides and the CV score flatters the model.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import GroupKFold, KFold

from kit.config import Config
from kit.core.errors import KitError
from kit.data.tables import TrainingSet, subset_indices
from kit.model import tasks


def thumbnails(images: np.ndarray, size: int = 24) -> np.ndarray:
    """Unit-norm, zero-mean (N, size*size) thumbnails: cosine similarity is a dot product, and
    brightness or contrast changes between frames do not matter."""
    n, height, _ = images.shape
    factor = height // size
    small = images.astype(np.float32).reshape(n, size, factor, size, factor).mean(axis=(2, 4))
    flat = small.reshape(n, -1)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
    return flat


def near_duplicate_groups(images: np.ndarray, similarity: float, block: int = 2048) -> np.ndarray:
    """Group ids: rows linked by a chain of thumbnail cosine similarities above `similarity`."""
    flat = thumbnails(images)
    rows, cols = [], []
    for start in range(0, len(flat), block):
        sims = flat[start : start + block] @ flat.T
        r, c = np.nonzero(sims > similarity)
        rows.append(r + start)
        cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(flat),) * 2)
    _, labels = connected_components(graph, directed=False)
    return labels


def split(rows: int, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) of each row; grouped when `groups` is given."""
    if folds < 2:
        raise KitError(f"folds={folds}: expected at least 2 folds")
    if rows < folds:
        raise KitError(f"{rows} rows cannot be split into {folds} folds")
    assignment = np.empty(rows, np.int64)
    index = np.arange(rows)
    if groups is None:
        splitter = KFold(folds, shuffle=True, random_state=seed)
        pieces = splitter.split(index)
    else:
        if len(np.unique(groups)) < folds:
            raise KitError(f"only {len(np.unique(groups))} groups of near-identical faces; "
                           f"cannot make {folds} grouped folds (set grouped_folds=0)")
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
        pieces = splitter.split(index, groups=groups)
    for fold, (_, held_out) in enumerate(pieces):
        assignment[held_out] = fold
    return assignment


# ---------------------------------------------------------------- a run's assignment


def assign_folds(config: Config, training: TrainingSet) -> dict:
    """Each network's rows and their fold numbers (grouped by near-duplicates if asked): the
    content of folds.json.

    A row's fold depends on the row, never on the network: the split is drawn once over every
    row any subset uses, and each network keeps its rows' folds. So runs of one seed share
    their folds whatever their networks, and their out-of-fold predictions can be blended.
    """
    groups = None
    if config.grouped_folds:
        groups = near_duplicate_groups(training.images, config.group_similarity)
    union = np.unique(np.concatenate([subset_indices(training.keypoints, s)
                                      for s in config.subsets]))
    if len(union) < config.folds:
        raise KitError(f"{len(union)} training rows carry the subsets' keypoints; "
                       f"{config.folds} folds need more")
    fold_of_row = np.full(len(training), -1, np.int64)
    fold_of_row[union] = split(len(union), config.folds, config.seed,
                               None if groups is None else groups[union])
    out = {"groups": None if groups is None else groups.tolist(), "networks": {},
           "fingerprint": fingerprint(training)}
    for network in tasks.network_names(config):
        rows = tasks.network_rows(config, network, training.keypoints)
        assignment = fold_of_row[rows]
        if len(np.unique(assignment)) < config.folds:
            raise KitError(f"the {network} network has {len(rows)} rows; they do not fill "
                           f"{config.folds} folds")
        out["networks"][network] = {"rows": rows.tolist(), "fold": assignment.tolist()}
    out["training_rows"] = len(training)
    return out


def fingerprint(training: TrainingSet) -> str:
    """A short hash of the training images and keypoints: runs on other data differ."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(training.images).tobytes())
    digest.update(np.nan_to_num(training.keypoints, nan=-1.0).astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def check_data(run_dir: Path, assignment: dict, training: TrainingSet) -> None:
    """Refuse a run made on other training data than the data loaded now."""
    if assignment.get("training_rows") != len(training):
        raise KitError(
            f"{run_dir}: the run was made on {assignment.get('training_rows')} training rows, "
            f"the data has {len(training)}; start a new run (RESUME=0)"
        )


def fold_rows(assignment: dict, network: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """A network's training and held-out rows of one fold."""
    entry = assignment["networks"][network]
    rows, fold_of = np.asarray(entry["rows"]), np.asarray(entry["fold"])
    return rows[fold_of != fold], rows[fold_of == fold]


def fold_of_row(assignment: dict, where: Path) -> np.ndarray:
    """Each training row's fold in the run (-1 where none), merged over its networks; a row
    two networks put in different folds (a run from before runs shared their folds) is
    refused, naming `where` (the folds.json it came from)."""
    merged = np.full(int(assignment["training_rows"]), -1, np.int64)
    for network, entry in assignment["networks"].items():
        rows, folds = np.asarray(entry["rows"], np.int64), np.asarray(entry["fold"], np.int64)
        clash = (merged[rows] >= 0) & (merged[rows] != folds)
        if clash.any():
            row = int(rows[np.flatnonzero(clash)[0]])
            raise KitError(
                f"{where}: the {network} network puts row {row} in fold "
                f"{folds[rows == row][0]}, another network in fold {merged[row]} (a run "
                "from before runs shared their folds); expected one fold per row")
        merged[rows] = folds
    return merged
