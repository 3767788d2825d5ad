"""How far apart the labels of near-identical frames are: the noise floor of the labels.

Two frames whose thumbnails are almost the same (cosine similarity of kit.runs.folds'
thumbnails at or above a strict link, 0.95 say) show one face in one pose, so the truth of
each keypoint is the same in both and the difference of their labels is annotation noise
alone. With independent noise of spread sigma on each label, a difference has spread
sigma * sqrt(2); so sigma = rms(difference) / sqrt(2) is the RMSE that even a perfect model
scores against these labels: the room left below a model's score is its score minus that.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS
from kit.runs.folds import thumbnails


@dataclass(frozen=True)
class Agreement:
    """The labels' disagreement over the near-identical pairs of one link."""

    similarity: float
    pairs: int  # pairs of frames at or above the link
    values: int  # labelled coordinates compared (both frames of a pair labelled)
    floor: float  # rms(difference) / sqrt(2), pixels: each label's own noise
    per_column: dict[str, float]  # the same per coordinate (NaN: no pair labels it)


def near_identical_pairs(images: np.ndarray, similarity: float,
                         block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) whose thumbnails' cosine similarity is at least `similarity`."""
    flat = thumbnails(images)
    firsts, seconds = [], []
    for start in range(0, len(flat), block):
        sims = flat[start : start + block] @ flat.T
        r, c = np.nonzero(sims >= similarity)
        keep = c > r + start
        firsts.append(r[keep] + start)
        seconds.append(c[keep])
    return np.concatenate(firsts), np.concatenate(seconds)


def disagreement(keypoints: np.ndarray, firsts: np.ndarray, seconds: np.ndarray,
                 similarity: float) -> Agreement:
    """The labels' noise floor over the pairs (`keypoints`: (N, 30), NaN where missing)."""
    differences = keypoints[firsts] - keypoints[seconds]
    labelled = ~np.isnan(differences)
    if not labelled.any():
        raise KitError(f"no pair of frames at similarity >= {similarity} has a label in common: "
                       "expected a lower link or more rows")
    squared = np.where(labelled, differences, 0.0) ** 2
    counts = labelled.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_column = np.sqrt(squared.sum(axis=0) / counts / 2.0)
    return Agreement(
        similarity=similarity,
        pairs=len(firsts),
        values=int(labelled.sum()),
        floor=float(np.sqrt(squared.sum() / labelled.sum() / 2.0)),
        per_column={name: float(value) for name, value in zip(COLUMNS, per_column)},
    )


def label_floor(images: np.ndarray, keypoints: np.ndarray, similarity: float) -> Agreement:
    """The noise floor of the labels of frames at or above `similarity` to one another."""
    return disagreement(keypoints, *near_identical_pairs(images, similarity), similarity)
