"""What a network learns from in a run: its images, targets, loss weights and each fold's
training rows. A plain run learns the training set's own labels (averaged over near-identical
frames with average_labels); a taught run (kit.results.teacher) is a Curriculum that changes
and adds rows only training reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kit.config import Config
from kit.data.tables import TrainingSet
from kit.model import tasks
from kit.runs.folds import fold_rows, near_duplicate_groups


@dataclass(frozen=True)
class Lesson:
    """What one network learns from. Rows 0..N-1 of images and targets are the training set's
    own, as tasks.network_targets makes them: validation and out-of-fold scoring read only
    those. A curriculum may append rows that only training reads: copies of rows with
    doubted labels, test faces with pseudo-labels."""

    images: np.ndarray  # uint8 (rows, 96, 96)
    targets: np.ndarray  # pixels (rows, outputs), NaN where nothing is learned
    loss_weights: np.ndarray | None  # loss weight of each target value; None: all 1
    train_rows: dict[int, np.ndarray]  # each fold's training rows of the above


def own_lesson(config: Config, network: str, training: TrainingSet,
               assignment: dict) -> Lesson:
    """The training set's labels as given, each fold training on its own rows."""
    return Lesson(training.images,
                  tasks.network_targets(network, training.keypoints, config.common_keypoints),
                  None,
                  {fold: fold_rows(assignment, network, fold)[0] for fold in range(config.folds)})


def plain_lesson(config: Config, network: str, training: TrainingSet,
                 assignment: dict) -> Lesson:
    """The lesson of a run without a teacher: its own, with average_labels' means in training."""
    own = own_lesson(config, network, training, assignment)
    if not config.average_labels:
        return own
    return train_on(own, averaged_labels(config, network, training, assignment, own.targets))


def train_on(own: Lesson, targets: np.ndarray, weights: np.ndarray | None = None) -> Lesson:
    """`own` (rows 0..N-1 alone) training on `targets` and `weights` (N rows) instead: each row
    whose values or weights differ is appended as a copy holding them, in its place in every
    fold's train_rows."""
    weights = np.ones_like(targets) if weights is None else weights
    rows = changed_rows(own.targets, targets, weights)
    return with_copies(own, rows, targets[rows], weights[rows])


def changed_rows(given: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows whose `targets` differ from the `given` ones (NaN alike) or weigh other than 1."""
    same = (given == targets) | (np.isnan(given) & np.isnan(targets))
    return np.flatnonzero(~same.all(axis=1) | (weights != 1).any(axis=1))


def with_copies(lesson: Lesson, rows: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                folds: tuple[int, ...] | None = None) -> Lesson:
    """The lesson with copies of its `rows` appended (their images, `targets` and `weights`),
    each in its row's place in the train_rows of `folds` (every fold by default). Validation
    reads rows 0..N-1 only, so a held-out face keeps its labels as given."""
    if not len(rows):
        return lesson
    first = len(lesson.targets)
    place = np.arange(first)
    place[rows] = first + np.arange(len(rows))
    train_rows = {fold: place[chosen] if folds is None or fold in folds else chosen
                  for fold, chosen in lesson.train_rows.items()}
    return appended(lesson, lesson.images[rows], targets, weights, train_rows)


def appended(lesson: Lesson, images: np.ndarray, targets: np.ndarray, weights: np.ndarray,
             train_rows: dict[int, np.ndarray]) -> Lesson:
    """The lesson with these rows after its own (images, targets, loss weights), training on
    `train_rows`, which the caller has pointed at them."""
    before = (np.ones_like(lesson.targets) if lesson.loss_weights is None
              else lesson.loss_weights)
    all_weights = np.concatenate([before, weights])
    return Lesson(np.concatenate([lesson.images, images]),
                  np.concatenate([lesson.targets, targets]),
                  None if (all_weights == 1).all() else all_weights, train_rows)


def averaged_labels(config: Config, network: str, training: TrainingSet, assignment: dict,
                    targets: np.ndarray) -> np.ndarray:
    """The network's `targets` (N rows) with each value the mean of that value over the
    rows of its group that carry it: the network's rows linked above config.average_labels
    (folds.near_duplicate_groups), in one fold, so a held-out label never reaches training
    even on folds drawn at another similarity (a teacher's)."""
    entry = assignment["networks"][network]
    rows, fold_of = np.asarray(entry["rows"], np.int64), np.asarray(entry["fold"], np.int64)
    groups = near_duplicate_groups(training.images[rows], config.average_labels)
    _, group_of = np.unique(np.stack([groups, fold_of]), axis=1, return_inverse=True)
    out = targets.copy()
    out[rows] = group_means(targets[rows], group_of.ravel())
    return out


def group_means(values: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Each value replaced by the mean of its column over its group's rows that carry one;
    NaN stays NaN, and a row alone in its group keeps its values exactly."""
    present = ~np.isnan(values)
    sums = np.zeros((group_of.max() + 1, values.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, group_of, np.where(present, values, 0.0))
    np.add.at(counts, group_of, present)
    means = sums[group_of] / np.maximum(counts[group_of], 1)
    return np.where(present, means, np.nan).astype(values.dtype)


class Curriculum(Protocol):
    """What a run with a teacher takes from it (kit.results.teacher.Teaching implements it)."""

    assignment: dict  # the folds to reuse, as folds.json holds them

    def extra_rows(self, network: str, fold: int) -> int:
        """Rows a fold trains on beyond the training set's own."""

    def lesson(self, config: Config, network: str, training: TrainingSet,
               assignment: dict) -> Lesson:
        """The network's lesson."""

    def record(self, config: Config) -> dict:
        """What teacher.json says of it."""
