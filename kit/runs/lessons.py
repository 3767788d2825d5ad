"""What a network learns from in a run: its images, targets, loss weights and each fold's
training rows. A plain run learns the training set's own labels; a taught run
(kit.results.teacher) is a Curriculum that adds rows only training reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kit.config import Config
from kit.data.tables import TrainingSet
from kit.model import tasks
from kit.runs.folds import fold_rows


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


def plain_lesson(config: Config, network: str, training: TrainingSet,
                 assignment: dict) -> Lesson:
    return Lesson(training.images,
                  tasks.network_targets(network, training.keypoints, config.common_keypoints),
                  None,
                  {fold: fold_rows(assignment, network, fold)[0] for fold in range(config.folds)})


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
