"""Two levers on what training learns, rows 0..N-1 (validation's) left as given: labels averaged
over near-identical frames (average_labels, kit.runs.lessons) and labels softened towards a
teacher's out-of-fold predictions (soft_targets, kit.results.teacher)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from kit import config as config_io
from kit.config import pipelines
from kit.data.tables import TrainingSet
from kit.model import tasks
from kit.results import teacher
from kit.runs import files
from kit.runs.folds import assign_folds, fold_rows, near_duplicate_groups
from kit.runs.lessons import group_means, own_lesson, plain_lesson
from tests.conftest import refusal


def stand_ins(lesson, assignment: dict, network: str, fold: int) -> dict[int, int]:
    """Each training row of a fold -> the lesson row that stands for it there: the one in its
    place in train_rows, holding its image."""
    trained = fold_rows(assignment, network, fold)[0]
    assert len(lesson.train_rows[fold]) == len(trained)  # a copy replaces, never adds
    standing = dict(zip(trained.tolist(), lesson.train_rows[fold].tolist()))
    for row, stand_in in standing.items():
        np.testing.assert_array_equal(lesson.images[stand_in], lesson.images[row])
    return standing


def fold_of(assignment: dict, network: str, row: int) -> int:
    entry = assignment["networks"][network]
    return entry["fold"][entry["rows"].index(row)]


# ---------------------------------------------------------------- average_labels


def test_group_means_average_each_column_over_the_rows_that_carry_it():
    values = np.array([[10.0, np.nan], [20.0, 7.0], [5.0, 1.0]], np.float32)
    np.testing.assert_array_equal(group_means(values, np.array([0, 0, 1])),
                                  [[15.0, np.nan], [15.0, 7.0], [5.0, 1.0]])


@pytest.fixture(scope="module")
def twins(training, quick_config):
    """The synthetic training set with a full row's image copied over another's and its
    labels 4 pixels off the first's, the folds grouped at 0.8 and labels averaged above 0.95;
    and the two rows (every network learns from both)."""
    images, keypoints = training.images.copy(), training.keypoints.copy()
    first, second = np.flatnonzero(~np.isnan(keypoints).any(axis=1))[:2]
    images[second] = images[first]
    keypoints[second] = keypoints[first] + 4.0
    twins = TrainingSet(images, keypoints)
    config = config_io.override(quick_config, ["grouped_folds=1", "group_similarity=0.8",
                                               "average_labels=0.95"])
    return twins, config, assign_folds(config, twins), (int(first), int(second))


def test_two_identical_frames_train_on_their_mean_and_validate_on_their_own(twins):
    twins_set, config, assignment, pair = twins
    n = len(twins_set)
    for network in tasks.network_names(config):
        lesson = plain_lesson(config, network, twins_set, assignment)
        given = tasks.network_targets(network, twins_set.keypoints, config.common_keypoints)
        np.testing.assert_array_equal(lesson.targets[:n], given)
        mean = (given[pair[0]] + given[pair[1]]) / 2
        for fold in range(config.folds):
            held_out = fold_rows(assignment, network, fold)[1]
            if pair[0] in held_out:  # grouped folds hold out both, and train on neither
                assert pair[1] in held_out
                assert not set(pair) & set(lesson.train_rows[fold].tolist())
                continue
            standing = stand_ins(lesson, assignment, network, fold)
            for row in pair:
                assert standing[row] >= n
                np.testing.assert_allclose(lesson.targets[standing[row]], mean, atol=1e-5)


def test_rows_without_a_near_duplicate_train_on_their_own_labels(twins):
    twins_set, config, assignment, pair = twins
    n = len(twins_set)
    groups = near_duplicate_groups(twins_set.images, config.average_labels)
    alone = np.flatnonzero(np.bincount(groups)[groups] == 1)
    assert len(alone) > n // 2 and not set(pair) & set(alone.tolist())
    for network in tasks.network_names(config):
        lesson = plain_lesson(config, network, twins_set, assignment)
        for fold in range(config.folds):
            train_rows = set(lesson.train_rows[fold].tolist())
            for row in set(fold_rows(assignment, network, fold)[0].tolist()) & set(alone):
                assert row in train_rows  # itself, no copy


def test_identical_frames_in_two_folds_are_never_averaged(twins, quick_config):
    twins_set, _, _, pair = twins
    config = config_io.override(quick_config, ["grouped_folds=0", "average_labels=0.95"])
    network = tasks.network_names(config)[0]
    for seed in range(20):  # a plain split that puts the twins in different folds
        assignment = assign_folds(config_io.override(config, [f"seed={seed}"]), twins_set)
        if {fold_of(assignment, network, row) for row in pair} == {0, 1}:
            break
    else:
        pytest.fail("no seed split the twins")
    lesson = plain_lesson(config, network, twins_set, assignment)
    for fold in range(config.folds):
        standing = stand_ins(lesson, assignment, network, fold)
        trained = [row for row in pair if row in standing]
        assert len(trained) == 1 and standing[trained[0]] == trained[0]  # its own label


def test_average_labels_below_the_folds_similarity_is_refused(quick_config):
    message = refusal(lambda: config_io.override(
        quick_config, ["grouped_folds=1", "group_similarity=0.8", "average_labels=0.5"]))
    assert "average_labels=0.5" in message and "group_similarity (0.8)" in message
    assert config_io.override(quick_config, ["grouped_folds=0", "average_labels=0.5"])


# ---------------------------------------------------------------- soft_targets


SHARE = 0.25


@pytest.fixture(scope="module")
def soft_teacher(tmp_path_factory, quick_run):
    """A copy of the quick run whose oof.csv predicts every label 4 pixels high, except one
    hand-checked value: (row, column, its 15-key prediction), whose 4-key line says otherwise."""
    root = tmp_path_factory.mktemp("soft-teacher")
    run = root / quick_run.name
    shutil.copytree(quick_run, run)
    oof = files.read_oof(run)
    oof["prediction"] = oof["truth"] + 4.0
    row = int(oof.loc[oof["subset"] == "15", "row"].iloc[0])
    line = (oof["row"] == row) & (oof["column"] == 0)
    oof.loc[line & (oof["subset"] == "15"), "prediction"] = oof["truth"] + 8.0
    oof.loc[line & (oof["subset"] == "4"), "prediction"] = oof["truth"] + 100.0
    oof.to_csv(run / "oof.csv", index=False)
    return root, run, row


def soft_config(quick_config, run, share):
    return config_io.override(quick_config, [f"teacher={run.name}", f"soft_targets={share}"])


def test_soft_targets_change_only_the_training_copies(soft_teacher, training, quick_config):
    root, run, checked = soft_teacher
    config = soft_config(quick_config, run, SHARE)
    keypoints = training.keypoints.copy()
    teaching = teacher.prepare(config, root, training)
    n = len(training)
    for network in tasks.network_names(config):
        lesson = teaching.lesson(config, network, training, teaching.assignment)
        given = tasks.network_targets(network, training.keypoints, config.common_keypoints)
        np.testing.assert_array_equal(lesson.targets[:n], given)  # validation's rows
        for fold in range(config.folds):
            held_out = fold_rows(teaching.assignment, network, fold)[1]
            standing = stand_ins(lesson, teaching.assignment, network, fold)
            assert not set(held_out.tolist()) & set(lesson.train_rows[fold].tolist())
            for original, copy in standing.items():
                assert copy >= n  # every trained row's labels are softened
                if original != checked:  # the next test's
                    np.testing.assert_allclose(lesson.targets[copy],
                                               given[original] + 4.0 * SHARE, atol=1e-4)
    np.testing.assert_array_equal(training.keypoints, keypoints)  # oof.csv's truth
    assert teaching.record(config)["soft_targets"] == SHARE


def test_a_soft_target_is_the_mix_of_label_and_the_teachers_15_key_prediction(
        soft_teacher, training, quick_config):
    root, run, row = soft_teacher
    config = soft_config(quick_config, run, SHARE)
    teaching = teacher.prepare(config, root, training)
    label = float(training.keypoints[row, 0])
    for network in tasks.network_names(config):
        lesson = teaching.lesson(config, network, training, teaching.assignment)
        trained_in = next(fold for fold in range(config.folds)
                          if row in fold_rows(teaching.assignment, network, fold)[0])
        copy = stand_ins(lesson, teaching.assignment, network, trained_in)[row]
        given = tasks.network_targets(network, training.keypoints, config.common_keypoints)
        column = int(np.flatnonzero(given[row] == label)[0])  # left eye x: column 0 in both
        assert lesson.targets[copy, column] == pytest.approx(0.75 * label + 0.25 * (label + 8))


def test_soft_targets_of_0_leave_the_lesson_as_it_was(soft_teacher, training, quick_config):
    root, run, _ = soft_teacher
    config = soft_config(quick_config, run, 0)
    teaching = teacher.prepare(config, root, training)
    assert teaching.oof_predictions is None
    for network in tasks.network_names(config):
        lesson = teaching.lesson(config, network, training, teaching.assignment)
        own = own_lesson(config, network, training, teaching.assignment)
        np.testing.assert_array_equal(lesson.targets, own.targets)
        assert lesson.loss_weights is None and len(lesson.images) == len(training)
        for fold, rows in own.train_rows.items():
            np.testing.assert_array_equal(lesson.train_rows[fold], rows)


def test_soft_targets_without_a_teacher_are_refused(quick_config):
    message = refusal(lambda: config_io.override(quick_config, ["soft_targets=0.3"]))
    assert "soft_targets=0.3" in message and "teacher" in message
    assert "soft_targets" in pipelines.OWNED  # a pipeline's teacher stage alone sets it
