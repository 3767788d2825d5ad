"""K-fold splits, plain or grouped so that near-identical frames stay on one side.

Kaggle's training faces include runs of near-identical video frames of one person; a plain
split puts copies of a face on both sides and the CV score flatters the model.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import GroupKFold, KFold

from kit.core.errors import KitError


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
