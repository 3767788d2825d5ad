"""The second pass: labels the OOF residuals flag (kit.results.label_noise), and a student run taught
by a finished one (kit.results.teacher): its folds, its dropped labels, its pseudo-labelled test faces."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import config as config_io
from kit.cli import main as cli
from kit.core.keypoints import COLUMN_INDEX
from kit.data import lookup as lookup_rules
from kit.data import tables
from kit.model import tasks
from kit.results import faces, label_noise, report, teacher
from kit.runs import cv, files, predict
from kit.runs.folds import fingerprint, fold_rows
from kit.training import loop
from tests.conftest import refusal

EYEBROW = "left_eyebrow_outer_end"  # a 15-key-only keypoint: one subset's line per label
EYEBROW_COLUMNS = [COLUMN_INDEX[f"{EYEBROW}_x"], COLUMN_INDEX[f"{EYEBROW}_y"]]



def good_predictions(oof: pd.DataFrame, spread: float, seed: int = 0) -> pd.DataFrame:
    """oof.csv's table as a good model would have it: predictions a normal jitter off truth."""
    rng = np.random.default_rng(seed)
    return oof.assign(prediction=oof["truth"] + rng.normal(0.0, spread, len(oof)))


def one_eyebrow_label(oof: pd.DataFrame) -> int:
    """A row whose eyebrow label the OOF table holds."""
    return int(oof.loc[oof["column"] == EYEBROW_COLUMNS[0], "row"].iloc[3])


# ---------------------------------------------------------------- label noise


def test_a_label_moved_20_pixels_is_flagged_and_no_clean_one(quick_run):
    clean = good_predictions(files.read_oof(quick_run), spread=1.0)
    assert len(label_noise.flag(clean)) == 0
    row = one_eyebrow_label(clean)
    corrupt = clean.copy()
    corrupt.loc[(corrupt["row"] == row) & (corrupt["column"] == EYEBROW_COLUMNS[0]),
                "truth"] += 20.0
    flagged = label_noise.flag(corrupt)
    assert flagged[["row", "subset", "keypoint"]].values.tolist() == [[row, "15", EYEBROW]]
    assert flagged["residual_px"].iloc[0] == pytest.approx(20.0, abs=4.0)
    rows, columns = label_noise.flagged_values(flagged)
    assert rows.tolist() == [row, row] and columns.tolist() == EYEBROW_COLUMNS


def test_no_label_is_flagged_within_the_pixel_floor(quick_run):
    # Residuals of a hundredth of a pixel make a 3-pixel miss hundreds of MADs out, but
    # annotators disagree by that much: the floor keeps it.
    tight = good_predictions(files.read_oof(quick_run), spread=0.01)
    row = one_eyebrow_label(tight)
    tight.loc[(tight["row"] == row) & (tight["column"] == EYEBROW_COLUMNS[0]), "truth"] += 3.0
    assert len(label_noise.flag(tight)) == 0
    assert len(label_noise.flag(tight, min_pixels=2.0)) == 1


def test_the_report_writes_label_noise_csv_and_png(quick_run, training):
    written = pd.read_csv(quick_run / "label-noise.csv", dtype={"subset": str})
    assert list(written.columns) == list(label_noise.COLUMNS)
    expected = label_noise.flag(files.read_oof(quick_run))
    assert written[["row", "subset", "keypoint"]].values.tolist() == \
        expected[["row", "subset", "keypoint"]].values.tolist()
    with Image.open(quick_run / "label-noise.png") as picture:
        assert picture.format == "PNG" and picture.size == faces.worst_cases_pixel_size(16)
    markdown = (quick_run / "report.md").read_text()
    assert f"Label noise: {len(expected)} of " in markdown and "(label-noise.png)" in markdown
    assert json.loads((quick_run / "report.json").read_text())["label_noise"]["flagged"] == \
        len(expected)


def test_the_label_noise_picture_shows_the_worst_faces_first(tmp_path, training):
    flagged = pd.DataFrame({
        "row": [7, 3, 7], "subset": "15", "keypoint": EYEBROW, "truth_x": 30.0,
        "truth_y": 30.0, "prediction_x": 60.0, "prediction_y": 60.0,
        "residual_px": [12.0, 30.0, 9.0]})
    assert faces.label_noise(training.images, flagged, tmp_path / "n.png") == [3, 7]
    assert faces.label_noise(training.images, flagged.iloc[:0], tmp_path / "none.png") == []


# ---------------------------------------------------------------- the teacher


@pytest.fixture(scope="module")
def teacher_root(tmp_path_factory, quick_run):
    """A runs folder holding a copy of the quick run whose oof.csv is a good model's with one
    eyebrow label far off: the teacher flags exactly that label."""
    root = tmp_path_factory.mktemp("teaching")
    run = root / quick_run.name
    shutil.copytree(quick_run, run)
    oof = good_predictions(files.read_oof(run), spread=1.0)
    row = one_eyebrow_label(oof)
    oof.loc[(oof["row"] == row) & (oof["column"] == EYEBROW_COLUMNS[0]), "prediction"] += 30.0
    oof.to_csv(run / "oof.csv", index=False)
    return root, run, row


def student_config(quick_config, teacher_id, *settings):
    return config_io.override(quick_config, [f"teacher={teacher_id}", "train.epochs=1",
                                             *settings])


@pytest.fixture(scope="module")
def student(teacher_root, synth_competition, training, quick_config):
    """A student run with pseudo-labels and dropped labels, and what each network's
    loop.train_folds was given: its device arrays and fold jobs."""
    root, teacher_run, _ = teacher_root
    _, data_dir = synth_competition
    config = student_config(quick_config, teacher_run.name, "pseudo_labels=1",
                            "flagged_labels=drop")
    test = tables.load_test(data_dir)
    lookup = tables.load_lookup(data_dir, test.image_ids)
    teaching = teacher.prepare(config, root, training, test, lookup)
    given = {}
    train_folds = loop.train_folds

    def recording(config, task, network, data, jobs, listener, stats):
        given[network] = (loop.device_arrays(data), jobs)
        yield from train_folds(config, task, network, data, jobs, listener, stats)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train_folds", recording)
        run_dir = cv.run_cv(config, training, root, teaching=teaching)
    report.write(run_dir, training, lookup)
    return run_dir, given, test, lookup


def sources(images: np.ndarray, test_images: np.ndarray, training_images: np.ndarray):
    """For each image: ('test', index), ('training', index) or None, by its pixels."""
    test_of = {image.tobytes(): i for i, image in enumerate(test_images)}
    training_of = {image.tobytes(): i for i, image in enumerate(training_images)}
    out = []
    for image in images:
        key = image.tobytes()
        out.append(("test", test_of[key]) if key in test_of else
                   ("training", training_of[key]) if key in training_of else None)
    return out


def test_a_student_reuses_its_teachers_folds_exactly(student, teacher_root):
    run_dir, given, _, _ = student
    _, teacher_run, _ = teacher_root
    theirs = json.loads((teacher_run / "folds.json").read_text())
    assert json.loads((run_dir / "folds.json").read_text()) == theirs
    for network, (_, jobs) in given.items():
        for job in jobs:
            np.testing.assert_array_equal(job.val_rows,
                                          fold_rows(theirs, network, job.fold)[1])


def test_fold_k_learns_the_test_faces_from_the_teachers_fold_k_model_only(
        student, teacher_root, training):
    run_dir, given, test, lookup = student
    _, teacher_run, _ = teacher_root
    teacher_config = config_io.load(teacher_run / "config.json")
    blocks = lookup_rules.image_blocks(lookup, test.image_ids)
    assert set(blocks) == {"full", "core"}
    counts = json.loads((run_dir / "teacher.json").read_text())["pseudo_images_per_fold"]
    for network, (arrays, jobs) in given.items():
        models = predict.load_fold_models(teacher_run, network)
        each_fold = [predict.predict_images(teacher_config, tasks.task_for(network), [model],
                                       test.images) for model in models]
        expected_faces = np.flatnonzero(blocks == ("full" if network == "15" else "core"))
        assert counts[network] == [len(expected_faces)] * 2
        origin = sources(arrays["images"], test.images, training.images)
        for job in jobs:
            pseudo = [row for row in job.train_rows if origin[row][0] == "test"]
            faces = sorted(origin[row][1] for row in pseudo)
            assert faces == expected_faces.tolist()
            for row in pseudo:
                face = origin[row][1]
                assert (arrays["mask"][row] == 1).all()
                np.testing.assert_allclose(arrays["keypoints"][row], each_fold[job.fold][face],
                                           atol=1e-4)
                other = each_fold[1 - job.fold][face]
                assert np.abs(arrays["keypoints"][row] - other).max() > 1e-3
            # No face held out of fold k reaches its training, itself or as a copy.
            trained = {origin[row][1] for row in job.train_rows if origin[row][0] == "training"}
            assert not trained & set(job.val_rows.tolist())
            assert all(row < len(training) for row in job.val_rows)
    oof = files.read_oof(run_dir)
    assert oof["row"].max() < len(training)


def test_a_dropped_label_leaves_training_but_not_the_oof_truth(student, teacher_root,
                                                               training):
    run_dir, given, _, _ = student
    _, _, flagged_row = teacher_root
    arrays, jobs = given["15"]
    origin = sources(arrays["images"], np.zeros((0, 96, 96), np.uint8), training.images)
    copies = [row for row in range(len(training), len(arrays["images"]))
              if origin[row] == ("training", flagged_row)]
    assert len(copies) == 1
    (copy,) = copies
    np.testing.assert_array_equal(arrays["mask"][copy, EYEBROW_COLUMNS], [0, 0])
    np.testing.assert_array_equal(arrays["mask"][flagged_row, EYEBROW_COLUMNS], [1, 1])
    others = np.setdiff1d(np.arange(30), EYEBROW_COLUMNS)
    np.testing.assert_array_equal(arrays["keypoints"][copy, others],
                                  arrays["keypoints"][flagged_row, others])
    for job in jobs:
        held_out = flagged_row in job.val_rows
        assert (copy in job.train_rows) == (not held_out)
        assert flagged_row not in job.train_rows
    recorded = json.loads((run_dir / "teacher.json").read_text())
    # The 4-key network never had the eyebrow: nothing of it to drop, no copies; only its
    # two folds' pseudo-labelled faces follow the training set.
    faces = recorded["pseudo_images_per_fold"]["4"][0]
    assert len(given["4"][0]["images"]) == len(training) + 2 * faces
    oof = files.read_oof(run_dir)
    line = oof[(oof["row"] == flagged_row) & oof["column"].isin(EYEBROW_COLUMNS)]
    np.testing.assert_allclose(line.sort_values("column")["truth"],
                               training.keypoints[flagged_row, EYEBROW_COLUMNS], atol=1e-4)
    assert recorded["labels_changed"] == 1 and recorded["flagged_labels"] == "drop"
    markdown = (run_dir / "report.md").read_text()
    assert f"Taught by run `{recorded['teacher']}`" in markdown
    assert "1 labels the teacher flagged dropped from training only" in markdown


def test_downweighted_labels_weigh_a_quarter_in_a_copy(teacher_root, training, quick_config):
    root, teacher_run, flagged_row = teacher_root
    config = student_config(quick_config, teacher_run.name, "flagged_labels=downweight")
    teaching = teacher.prepare(config, root, training)
    assignment = teaching.assignment
    lesson = teaching.lesson(config, "15", training, assignment)
    assert len(lesson.images) == len(training) + 1
    np.testing.assert_array_equal(lesson.loss_weights[-1, EYEBROW_COLUMNS], [0.25, 0.25])
    assert (np.delete(lesson.loss_weights, EYEBROW_COLUMNS, axis=1) == 1).all()
    np.testing.assert_array_equal(lesson.targets[-1], lesson.targets[flagged_row])
    assert teaching.lesson(config, "4", training, assignment).loss_weights is None


def test_a_shared_networks_doubted_label_reaches_both_heads():
    keypoints = np.full((2, 30), 40.0, np.float32)
    keypoints[1, 8:] = np.nan  # row 1: the core-only source (its core values are 0-3, 20-21
    keypoints[1, [20, 21, 28, 29]] = 40.0  # and 28-29 in COLUMNS)
    doubted = teacher.doubted_targets(tasks.SHARED, keypoints, ("nose_tip",), np.array([0, 0]),
                                      np.array([20, 21]))  # row 0's nose tip
    assert np.flatnonzero(doubted[0]).tolist() == [20, 21, 34, 35]
    assert not doubted[1].any()


@pytest.fixture(scope="module")
def shared_teacher(tmp_path_factory, training, quick_config):
    """A finished shared-trunk run: its 15-key head misses most rows' values (the core-only
    source's), which fill_labels fills."""
    root = tmp_path_factory.mktemp("shared-teacher")
    return root, cv.run_cv(config_io.override(quick_config, ["shared_trunk=1"]), training, root)


def test_fill_labels_gives_each_folds_missing_15_key_values_from_its_fold_model(
        shared_teacher, training, quick_config):
    root, teacher_run = shared_teacher
    config = student_config(quick_config, teacher_run.name, "shared_trunk=1", "fill_labels=1")
    teaching = teacher.prepare(config, root, training)
    lesson = teaching.lesson(config, tasks.SHARED, training, teaching.assignment)
    plain = tasks.network_targets(tasks.SHARED, training.keypoints, config.common_keypoints)
    missing = tasks.fillable(tasks.SHARED, plain)
    fifteen = tasks.head_slice(tasks.SHARED, "15")
    assert missing[:, fifteen].any() and not missing[:, tasks.head_slice(tasks.SHARED, "4")].any()
    teacher_config = config_io.load(teacher_run / "config.json")
    models = predict.load_fold_models(teacher_run, tasks.SHARED)
    origin = sources(lesson.images, np.zeros((0, 96, 96), np.uint8), training.images)
    filled_counts = []
    for fold in range(config.folds):
        own_rows, held_out = fold_rows(teaching.assignment, tasks.SHARED, fold)
        rows = lesson.train_rows[fold]
        assert len(rows) == len(own_rows)  # a filled row replaces its original
        trained = np.array([origin[row][1] for row in rows])
        np.testing.assert_array_equal(np.sort(trained), np.sort(own_rows))
        assert not set(trained) & set(held_out)
        outputs = predict.predict_images(teacher_config, tasks.task_for(tasks.SHARED),
                                         [models[fold]], training.images)
        copies = rows[rows >= len(training)]
        filled_counts.append(len(copies))
        assert len(copies) == missing[own_rows].any(axis=1).sum() > 0
        for copy in copies:
            row = origin[copy][1]
            given = ~missing[row]
            np.testing.assert_array_equal(lesson.targets[copy][given], plain[row][given])
            np.testing.assert_allclose(lesson.targets[copy][missing[row]],
                                       outputs[row][missing[row]], atol=1e-4)
            assert not np.isnan(lesson.targets[copy][fifteen]).any()
    recorded = teaching.record(config)
    assert recorded["fill_labels"] and recorded["filled_rows_per_fold"] == {
        tasks.SHARED: filled_counts}
    # Without fill_labels the same teacher changes no row.
    plain_config = student_config(quick_config, teacher_run.name, "shared_trunk=1")
    unfilled = teacher.prepare(plain_config, root, training)
    assert unfilled.filled == {}
    assert len(unfilled.lesson(plain_config, tasks.SHARED, training,
                               unfilled.assignment).images) == len(training)


# ---------------------------------------------------------------- refusals


def test_a_missing_teacher_is_refused(teacher_root, training, quick_config):
    root, teacher_run, _ = teacher_root
    message = refusal(lambda: teacher.prepare(student_config(quick_config, "no-such-run"),
                                              root, training))
    assert "no-such-run" in message and "no config.json" in message
    if not (root / "latest").is_symlink():  # a student run may have made it already
        (root / "latest").symlink_to(teacher_run.name)
    message = refusal(lambda: teacher.prepare(student_config(quick_config, "latest"), root,
                                              training))
    assert "is a link" in message


def test_an_unfinished_teacher_is_refused(teacher_root, training, quick_config):
    root, teacher_run, _ = teacher_root
    unfinished = root / "unfinished"
    unfinished.mkdir()
    shutil.copy(teacher_run / "config.json", unfinished)
    message = refusal(lambda: teacher.prepare(student_config(quick_config, "unfinished"),
                                              root, training))
    assert "unfinished" in message and "no oof.csv" in message


def test_a_teacher_of_other_data_is_refused(teacher_root, training, quick_config):
    root, teacher_run, _ = teacher_root
    moved = training.keypoints.copy()
    moved[0, 0] += 1.0
    other = replace(training, keypoints=moved)
    message = refusal(lambda: teacher.prepare(student_config(quick_config, teacher_run.name),
                                              root, other))
    assert "other data" in message and fingerprint(other) in message


def test_a_teacher_with_other_folds_or_networks_is_refused(teacher_root, training,
                                                           quick_config):
    root, teacher_run, _ = teacher_root
    folds = student_config(quick_config, teacher_run.name, "folds=3")
    assert "folds 2, this run 3" in refusal(lambda: teacher.prepare(folds, root, training))
    shared = student_config(quick_config, teacher_run.name, "shared_trunk=1")
    assert "networks 15,4, this run shared" in refusal(
        lambda: teacher.prepare(shared, root, training))


def test_the_cli_refuses_a_missing_teacher_in_one_line(teacher_root, synth_competition,
                                                       capsys):
    root, _, _ = teacher_root
    _, data_dir = synth_competition
    code = cli.main(["--data", str(data_dir), "--runs", str(root), "cv", "--preset", "quick",
                     "--set", "teacher=no-such-run", "--set", "pseudo_labels=1",
                     "--set", "flagged_labels=drop"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "no-such-run" in lines[0]
