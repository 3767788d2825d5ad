"""A second pass taught by a finished run: its folds, its pseudo-labels for the test faces, and
its verdict on which training labels are wrong (kit.results.label_noise).

A student run (`--set teacher=<run-id>`) reuses the teacher's folds.json exactly, so fold k of
both runs holds out the same faces. Then:

- pseudo_labels: fold k also trains on the test faces labelled by the teacher's fold-k model,
  and by no other. That model never saw fold k's held-out faces, so they reach the student's
  fold k neither directly nor through the pseudo-labels, and its out-of-fold score stays an
  honest estimate. (The ensemble of all the teacher's folds would label better, but it has
  seen every face; a student fold taught by it would be scored on faces it learned from.)
- flagged_labels: the labels the teacher's OOF residuals flag are dropped from (or weigh
  DOWNWEIGHT in) the training targets only. Held-out faces are scored on every label as
  given, so oof.csv's truth is the data's. A mild second-order leak remains: a label of fold
  j is flagged by the teacher's fold-j model, which trained on fold k's held-out faces, and
  the flag then shapes what the student's fold k trains on.
- fill_labels: on fold k's training rows, the 15-key head's missing values (most rows carry
  only the core keypoints) are the teacher's fold-k model's, so that head learns from every
  face. That model trained on exactly those rows, never on fold k's held-out ones, which keep
  their labels as given. A filled row replaces its original in that fold's training only, so
  a fold trains on as many rows as before.
- soft_targets: on every fold's training rows, each label the teacher's oof.csv predicts
  becomes (1 - soft_targets) * label + soft_targets * that prediction, in copies that replace
  their originals in training only; held-out faces and oof.csv's truth keep the labels as
  given. The leak is flagged_labels': a row of fold j's OOF value was made by the teacher's
  fold-j model, which trained on fold k's held-out faces, and it then shapes what the
  student's fold k trains on.
- average_labels (a plain run's lever too, kit.runs.lessons): applied to the labels before
  softening, after dropping the doubted ones, so a doubted label moves no mean.

Which head learns which test face follows the submission's convention (kit.data.lookup's
blocks): faces the lookup table asks more than the 8 core values come from the full
annotation source and teach the 15-key head (or network) all 30 values; the others come from
the core-only source and teach the 4-key head (or network) its 8.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import Config
from kit.core.errors import KitError
from kit.core.keypoints import IMAGE_SIZE
from kit.data import tables
from kit.data.lookup import BLOCK_SUBSET, image_blocks
from kit.data.tables import LookupTable, TestSet, TrainingSet
from kit.model import tasks
from kit.results import label_noise
from kit.runs import files
from kit.runs.folds import fingerprint, fold_rows
from kit.runs.lessons import (
    Lesson,
    appended,
    averaged_labels,
    changed_rows,
    own_lesson,
    with_copies,
)
from kit.runs.predict import FoldModel, load_fold_models, predict_images

# The loss weight of a doubted label with flagged_labels=downweight: it still pulls, a quarter
# as hard, in case the residual was the model's fault and not the annotator's.
DOWNWEIGHT = 0.25


@dataclass(frozen=True)
class Teaching:
    """What a student run takes from its teacher, ready for kit.runs.cv.run_cv."""

    run_id: str
    flagged_labels: str  # the student's config.flagged_labels
    assignment: dict  # the teacher's folds.json, copied as the student's
    flagged_rows: np.ndarray  # training rows and columns of the flagged labels' values
    flagged_columns: np.ndarray
    test_images: np.ndarray  # uint8 (T, 96, 96)
    # network -> (indices of the test faces it learns from, each fold's (faces, outputs)
    # pseudo-targets, NaN where a face teaches nothing)
    pseudo: dict[str, tuple[np.ndarray, list[np.ndarray]]]
    # network -> each fold's (training rows with values to fill, the teacher's fold model's
    # outputs on them); empty without fill_labels
    filled: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    soft_targets: float = 0.0  # the student's config.soft_targets
    # The teacher's out-of-fold prediction of each training value (N, 30), NaN where none;
    # None without soft_targets
    oof_predictions: np.ndarray | None = None

    def extra_rows(self, network: str, fold: int) -> int:
        """Rows fold `fold` trains on beyond the training set's: its pseudo-labelled faces."""
        return len(self.pseudo[network][0]) if network in self.pseudo else 0

    def lesson(self, config: Config, network: str, training: TrainingSet,
               assignment: dict) -> Lesson:
        """The network's own lesson, its rows replaced in training by copies whose labels
        are dropped or down-weighted where doubted, averaged (average_labels), softened
        (soft_targets) and filled (fill_labels), and each fold's pseudo-labelled test faces
        appended."""
        own = own_lesson(config, network, training, assignment)
        targets, weights = own.targets.copy(), np.ones_like(own.targets)
        if self.flagged_labels != "keep" and len(self.flagged_rows):
            doubted = doubted_targets(network, training.keypoints, config.common_keypoints,
                                      self.flagged_rows, self.flagged_columns)
            if self.flagged_labels == "drop":
                targets[doubted] = np.nan  # before averaging: a doubted label moves no mean
            else:
                weights[doubted] = DOWNWEIGHT
        if config.average_labels:
            targets = averaged_labels(config, network, training, assignment, targets)
        if self.soft_targets:
            targets = softened(targets, self.soft_targets, network, training.keypoints,
                               config.common_keypoints, self.oof_predictions)
        changed = changed_rows(own.targets, targets, weights)
        lesson = with_copies(own, changed, targets[changed], weights[changed])
        # The row that stands for each of the training set's in every fold's training so far.
        standing = np.arange(len(training))
        standing[changed] = len(training) + np.arange(len(changed))
        missing = tasks.fillable(network, own.targets)
        for fold, (rows, outputs) in enumerate(self.filled.get(network, ())):
            copies = targets[rows].copy()
            copies[missing[rows]] = outputs[missing[rows]]
            # Each fold's own copies: fold j's teacher model filled them, not fold k's.
            lesson = with_copies(lesson, standing[rows], copies, weights[rows], folds=(fold,))
        faces, per_fold = self.pseudo.get(network, (np.zeros(0, np.int64), []))
        first = len(lesson.targets)
        train_rows = {fold: np.concatenate([chosen, first + fold * len(faces)
                                            + np.arange(len(faces))])
                      for fold, chosen in lesson.train_rows.items()}
        pseudo_targets = np.concatenate([lesson.targets[:0], *per_fold])
        return appended(lesson, np.concatenate([lesson.images[:0],
                                                *[self.test_images[faces]] * len(per_fold)]),
                        pseudo_targets, np.ones_like(pseudo_targets), train_rows)

    def record(self, config: Config) -> dict:
        """teacher.json: what the teacher contributed to this run."""
        labels = len(self.flagged_rows) // 2  # a label is a keypoint's x and y
        return {
            "teacher": self.run_id,
            "pseudo_labels": config.pseudo_labels,
            "pseudo_images_per_fold": {network: [len(faces)] * config.folds
                                       for network, (faces, _) in self.pseudo.items()},
            "flagged_labels": self.flagged_labels,
            "labels_changed": labels,
            "downweight": DOWNWEIGHT if self.flagged_labels == "downweight" else None,
            "fill_labels": config.fill_labels,
            "filled_rows_per_fold": {network: [len(rows) for rows, _ in per_fold]
                                     for network, per_fold in self.filled.items()},
            "soft_targets": self.soft_targets,
        }


# ---------------------------------------------------------------- pure parts


def doubted_targets(network: str, keypoints: np.ndarray, common: tuple[str, ...],
                    rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Which of a network's target values come from the given training values.

    The values are marked infinite, not missing, so each row keeps its annotation source (a
    shared network's heads split rows by which values are present) and the marks follow each
    value into whichever heads learn it."""
    marked = keypoints.astype(np.float64)
    marked[rows, columns] = np.inf
    return np.isinf(tasks.network_targets(network, marked, common))


def softened(targets: np.ndarray, share: float, network: str, keypoints: np.ndarray,
             common: tuple[str, ...], predictions: np.ndarray) -> np.ndarray:
    """A network's training `targets` moved `share` of the way to the teacher's out-of-fold
    `predictions` of the training values (N, 30, NaN where none), where both exist.

    Predictions stand in for the labels they predict and missing ones are marked infinite,
    so tasks.network_targets lays them out as it lays out the labels (which head, which row)."""
    labelled = ~np.isnan(keypoints)
    marked = np.where(labelled & np.isnan(predictions), np.inf, predictions)
    marked[~labelled] = np.nan
    teacher = tasks.network_targets(network, marked, common)
    mix = np.isfinite(teacher) & ~np.isnan(targets)
    out = targets.copy()
    out[mix] = ((1.0 - share) * targets[mix].astype(np.float64) + share * teacher[mix])
    return out


def oof_keypoints(oof: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """oof.csv's prediction of each training value (`shape`: rows, 30), NaN where it has none;
    a row's 15-key line over its 4-key one, the answer that learned its source's convention
    (what tasks.subset_predictions gives a shared network's 4-key line anyway)."""
    out = np.full(shape, np.nan)
    for subset in ("4", "15"):
        lines = oof[oof["subset"] == subset]
        out[lines["row"].to_numpy(), lines["column"].to_numpy()] = lines["prediction"]
    return out


def pseudo_targets(network: str, outputs: np.ndarray, blocks: np.ndarray,
                   subsets: tuple[str, ...]) -> np.ndarray:
    """A network's pseudo-targets from its teacher's outputs on the test faces: each face's
    values for the head of its block's subset (if the run has that subset), NaN elsewhere."""
    targets = np.full(outputs.shape, np.nan, np.float32)
    for block, subset in BLOCK_SUBSET.items():
        faces = blocks == block
        if subset not in subsets:
            continue
        if subset in tasks.subsets_with_heads(network):
            head = tasks.head_slice(network, subset)
            targets[faces, head] = outputs[faces, head]
    return targets


# ---------------------------------------------------------------- from the teacher's folder


def prepare_from(config: Config, root: Path, training: TrainingSet, data_dir: Path,
                 lookup: LookupTable | None) -> Teaching | None:
    """prepare(), reading the test faces from `data_dir` only where pseudo-labels need them
    (and the lookup table, which says which head learns each face, was found)."""
    needs_test = config.pseudo_labels and lookup is not None
    test = tables.load_test(data_dir) if needs_test else None
    return prepare(config, root, training, test, lookup)


def prepare(config: Config, root: Path, training: TrainingSet, test: TestSet | None = None,
            lookup: LookupTable | None = None) -> Teaching | None:
    """The teaching for a run with `config.teacher` (None without one), or one KitError line
    saying why the teacher cannot teach this run."""
    if not config.teacher:
        return None
    run_dir = Path(root) / config.teacher
    if run_dir.is_symlink():  # `latest` moves: the record and a resumed run would lose it
        raise KitError(f"{run_dir}: teacher={config.teacher!r} is a link; expected the id it "
                       f"points to ({run_dir.resolve().name})")
    if run_dir.resolve().parent != Path(root).resolve() or not files.is_run(run_dir):
        raise KitError(f"{run_dir}: teacher={config.teacher!r} is no run (no config.json); "
                       f"expected the id of a finished run in {root}")
    if not files.is_finished(run_dir):
        raise KitError(f"{run_dir}: the teacher run is unfinished (no oof.csv); expected a "
                       "finished run (finish it with `make cv`, or name another)")
    teacher_config = files.read_config(run_dir)
    check_alike(run_dir, teacher_config, config)
    assignment = files.read_folds(run_dir)
    check_data(run_dir, assignment, training)
    rows = columns = np.zeros(0, np.int64)
    oof = files.read_oof(run_dir) if config.flagged_labels != "keep" or config.soft_targets else None
    if config.flagged_labels != "keep":
        rows, columns = label_noise.flagged_values(label_noise.flag(oof))
    # Each network's fold models, read once for whatever of them the student takes.
    models = ({network: load_fold_models(run_dir, network) for network in tasks.network_names(config)}
              if config.pseudo_labels or config.fill_labels else {})
    pseudo, images = {}, np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    if config.pseudo_labels:
        if test is None or lookup is None:
            raise KitError(f"pseudo_labels=True (teacher {config.teacher}): expected the test "
                           "images and IdLookupTable.csv in the data folder")
        images = test.images
        blocks = image_blocks(lookup, test.image_ids)
        for network in tasks.network_names(config):
            per_fold = [
                pseudo_targets(network, predict_images(teacher_config, tasks.task_for(network),
                                                       [model], images),
                               blocks, config.subsets)
                for model in models[network]
            ]
            faces = np.flatnonzero(~np.isnan(per_fold[0]).all(axis=1))
            pseudo[network] = (faces, [targets[faces] for targets in per_fold])
    filled = {}
    for network in tasks.network_names(config) if config.fill_labels else ():
        per_fold = fill_values(config, teacher_config, models[network], network, training,
                               assignment)
        if any(len(fill_rows) for fill_rows, _ in per_fold):
            filled[network] = per_fold
    predictions = (oof_keypoints(oof, training.keypoints.shape) if config.soft_targets
                   else None)
    return Teaching(config.teacher, config.flagged_labels, assignment, rows, columns, images,
                    pseudo, filled, config.soft_targets, predictions)


def fill_values(config: Config, teacher_config: Config, fold_models: list[FoldModel],
                network: str, training: TrainingSet,
                assignment: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each fold's training rows with a value for the student (`config`) to fill, and the
    teacher's fold model's outputs there."""
    targets = tasks.network_targets(network, training.keypoints, config.common_keypoints)
    open_rows = np.flatnonzero(tasks.fillable(network, targets).any(axis=1))
    per_fold = []
    for fold, model in enumerate(fold_models):
        rows = np.intersect1d(fold_rows(assignment, network, fold)[0], open_rows)
        outputs = predict_images(teacher_config, tasks.task_for(network), [model],
                                 training.images[rows])
        per_fold.append((rows, outputs.astype(np.float32)))
    return per_fold


def check_alike(run_dir: Path, teacher: Config, student: Config) -> None:
    """The student must split and train like its teacher, or its folds cannot be copied."""
    for name, theirs, ours in (
        ("folds", teacher.folds, student.folds),
        ("subsets", ",".join(teacher.subsets), ",".join(student.subsets)),
        ("networks", ",".join(tasks.network_names(teacher)), ",".join(tasks.network_names(student))),
    ):
        if theirs != ours:
            raise KitError(f"{run_dir}: the teacher run has {name} {theirs}, this run "
                           f"{ours}; expected the same (its folds are reused exactly)")


def check_data(run_dir: Path, assignment: dict, training: TrainingSet) -> None:
    found = (assignment.get("fingerprint"), assignment.get("training_rows"))
    expected = (fingerprint(training), len(training))
    if found != expected:
        raise KitError(f"{run_dir}: the teacher run was made on other data (fingerprint "
                       f"{found[0]}, {found[1]} training rows); expected this data's "
                       f"{expected[0]}, {expected[1]} rows")
