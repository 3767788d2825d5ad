"""The synthetic competition: Kaggle's layout, consistent tables, learnable, deterministic faces.

The files are read here with zipfile and csv only, not with the kit's own parser, so that a
mistake shared by the generator and the parser cannot hide."""
from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest

from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS, CORE_COLUMNS, IMAGE_SIZE, KEYPOINT_NAMES, PIXELS
from kit.data.synth import ARCHIVE_NAME, SOLUTION_NAME, make_competition, make_faces
from tests.conftest import read_archive

N_TRAIN, N_TEST = 240, 60
COMPLETE_FRACTION, FULL_TEST_FRACTION = 0.35, 0.35
OUTER_MEMBERS = ["training.zip", "test.zip", "IdLookupTable.csv", "SampleSubmission.csv"]


def rows_of(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def pixels(field: str) -> np.ndarray:
    values = np.array(field.split(" "), dtype=np.int64)
    assert values.size == PIXELS
    assert values.min() >= 0 and values.max() <= 255
    return values.reshape(IMAGE_SIZE, IMAGE_SIZE)


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("synth")
    summary = make_competition(out_dir, N_TRAIN, N_TEST, seed=3,
                               complete_fraction=COMPLETE_FRACTION,
                               full_test_fraction=FULL_TEST_FRACTION)
    files = read_archive(out_dir / ARCHIVE_NAME)
    files[SOLUTION_NAME] = (out_dir / SOLUTION_NAME).read_bytes()
    return summary, {name: rows_of(data) for name, data in files.items()}, files


@pytest.fixture(scope="module")
def training(competition):
    _, tables, _ = competition
    header, *rows = tables["training.csv"]
    keypoints = np.array([[float(v) if v else np.nan for v in row[:-1]] for row in rows])
    images = np.stack([pixels(row[-1]) for row in rows])
    return header, keypoints, images


def test_archive_is_laid_out_like_kaggles(competition, tmp_path):
    summary, _, _ = competition
    with zipfile.ZipFile(summary["archive"]) as outer:
        assert outer.namelist() == OUTER_MEMBERS
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in outer.infolist())
        for inner_name, member in (("training.zip", "training.csv"), ("test.zip", "test.csv")):
            with zipfile.ZipFile(io.BytesIO(outer.read(inner_name))) as inner:
                assert inner.namelist() == [member]
    assert summary["archive"].name == "facial-keypoints-detection.zip"
    assert summary["solution"].name == "solution.csv"
    # Nothing else is written, and no temporary file is left behind.
    assert sorted(p.name for p in summary["archive"].parent.iterdir()) == [
        "facial-keypoints-detection.zip", "solution.csv"]


def test_training_csv_has_kaggles_header_and_images(training):
    header, keypoints, images = training
    assert header == [*COLUMNS, "Image"]
    assert keypoints.shape == (N_TRAIN, 30)
    assert images.shape == (N_TRAIN, IMAGE_SIZE, IMAGE_SIZE)
    present = keypoints[np.isfinite(keypoints)]
    assert present.min() >= 2 and present.max() <= 93


def test_keypoint_fields_are_printed_like_kaggles(competition):
    _, tables, _ = competition
    for row in tables["training.csv"][1:]:
        for field in row[:-1]:
            # A plain decimal with at most 6 decimals, or empty for a missing value.
            if field:
                whole, _, decimals = field.partition(".")
                assert whole.isdigit() and decimals.isdigit() and len(decimals) <= 6, field


def test_rows_come_from_two_sources_in_the_asked_proportions(training, competition):
    summary, _, _ = competition
    _, keypoints, _ = training
    present = np.isfinite(keypoints)
    core_mask = np.isin(COLUMNS, CORE_COLUMNS)
    # Every row carries the 8 core values; x and y are missing together.
    assert present[:, core_mask].all()
    assert (present[:, 0::2] == present[:, 1::2]).all()
    core_only = ~present[:, ~core_mask].any(axis=1)
    complete = present.all(axis=1)
    partial = ~core_only & ~complete
    n_full = round(N_TRAIN * COMPLETE_FRACTION)
    assert core_only.sum() == N_TRAIN - n_full == summary["n_train_core"]
    assert complete.sum() + partial.sum() == n_full
    assert complete.sum() == summary["n_train_complete"]
    assert partial.sum() == summary["n_train_partial"] >= 1
    # A partial row misses 1 or 2 keypoints.
    missing_keypoints = (~present[partial][:, 0::2]).sum(axis=1)
    assert set(missing_keypoints) <= {1, 2}
    # The two sources are interleaved, as in Kaggle's file.
    assert core_only[: N_TRAIN // 2].any() and complete[: N_TRAIN // 2].any()
    assert core_only[N_TRAIN // 2:].any() and complete[N_TRAIN // 2:].any()


def test_core_source_is_framed_differently(training):
    _, keypoints, _ = training
    core_only = np.isnan(keypoints[:, 4])
    eyes = np.abs(keypoints[:, 0] - keypoints[:, 2])  # left to right eye centre, x
    eye_y = (keypoints[:, 1] + keypoints[:, 3]) / 2
    lip_drop = (keypoints[:, 29] - eye_y) / eyes  # bottom lip below the eyes, in eye distances
    assert eyes[core_only].mean() > eyes[~core_only].mean() + 1.0
    assert lip_drop[core_only].mean() > lip_drop[~core_only].mean() + 0.03


def test_test_csv_numbers_images_from_one(competition):
    _, tables, _ = competition
    header, *rows = tables["test.csv"]
    assert header == ["ImageId", "Image"]
    assert [int(row[0]) for row in rows] == list(range(1, N_TEST + 1))
    for row in rows:
        pixels(row[1])


def test_lookup_asks_30_values_then_8(competition):
    summary, tables, _ = competition
    header, *rows = tables["IdLookupTable.csv"]
    assert header == ["RowId", "ImageId", "FeatureName", "Location"]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert all(row[3] == "" for row in rows)
    asked: dict[int, list[str]] = {}
    for _, image_id, feature, _ in rows:
        asked.setdefault(int(image_id), []).append(feature)
    # ImageId-major: each image's rows are one block, images in order.
    image_ids = [int(row[1]) for row in rows]
    assert image_ids == sorted(image_ids)
    assert list(asked) == list(range(1, N_TEST + 1))
    n_full = round(N_TEST * FULL_TEST_FRACTION)
    for image_id, features in asked.items():
        assert features == list(COLUMNS if image_id <= n_full else CORE_COLUMNS), image_id
    assert len(rows) == 30 * n_full + 8 * (N_TEST - n_full) == summary["n_lookup_rows"]
    assert summary["n_test_full"] == n_full and summary["n_test_core"] == N_TEST - n_full


def test_sample_submission_and_solution_cover_the_lookup(competition):
    _, tables, _ = competition
    lookup_ids = [row[0] for row in tables["IdLookupTable.csv"][1:]]
    sample_header, *sample = tables["SampleSubmission.csv"]
    assert sample_header == ["RowId", "Location"]
    assert [row[0] for row in sample] == lookup_ids
    assert all(row[1] == "0" for row in sample)
    solution_header, *solution = tables[SOLUTION_NAME]
    assert solution_header == ["RowId", "Location"]
    assert [row[0] for row in solution] == lookup_ids
    locations = np.array([float(row[1]) for row in solution])
    assert np.isfinite(locations).all()
    assert locations.min() >= 0 and locations.max() <= 96


def test_solution_marks_the_test_images_eyes(competition):
    # The truth belongs to its ImageId: the eye centres it gives sit on dark irises.
    _, tables, _ = competition
    images = {int(row[0]): pixels(row[1]) for row in tables["test.csv"][1:]}
    truth: dict[int, dict[str, float]] = {}
    for (_, image_id, feature, _), (_, location) in zip(tables["IdLookupTable.csv"][1:],
                                                         tables[SOLUTION_NAME][1:]):
        truth.setdefault(int(image_id), {})[feature] = float(location)
    darker = []
    for image_id, image in images.items():
        values = truth[image_id]
        eyes = [(values[f"{side}_eye_center_x"], values[f"{side}_eye_center_y"])
                for side in ("left", "right")]
        darker.append(_patch_mean(image, eyes) < _face_mean(image, values) - 20)
    assert np.mean(darker) >= 0.95


def test_eye_centres_are_dark_and_lips_drawn_where_labelled(training):
    _, keypoints, images = training
    darker_eyes, darker_mouth = [], []
    for image, values in zip(images, keypoints):
        named = {column: value for column, value in zip(COLUMNS, values)}
        eyes = [(named[f"{side}_eye_center_x"], named[f"{side}_eye_center_y"])
                for side in ("left", "right")]
        darker_eyes.append(_patch_mean(image, eyes) < _face_mean(image, named) - 20)
        if np.isfinite([named["mouth_left_corner_x"], named["mouth_right_corner_x"]]).all():
            # The mouth line runs between the corners: darker than the face around it.
            middle = [((named["mouth_left_corner_x"] + named["mouth_right_corner_x"]) / 2,
                       (named["mouth_left_corner_y"] + named["mouth_right_corner_y"]) / 2)]
            darker_mouth.append(_patch_mean(image, middle) < _face_mean(image, named) - 20)
    assert np.mean(darker_eyes) >= 0.95
    assert len(darker_mouth) > 0 and np.mean(darker_mouth) >= 0.9


def test_shuffled_labels_would_not_match():
    # The visibility checks can fail: another face's eye centres do not land on dark irises.
    images, keypoints = make_faces(40, seed=5)
    rolled = np.roll(keypoints, 1, axis=0)
    hits = []
    for image, values in zip(images, rolled):
        named = dict(zip(COLUMNS, values))
        eyes = [(named[f"{side}_eye_center_x"], named[f"{side}_eye_center_y"])
                for side in ("left", "right")]
        hits.append(_patch_mean(image, eyes) < _face_mean(image, named) - 20)
    assert np.mean(hits) < 0.8


def test_same_seed_same_bytes_other_seed_other_faces(tmp_path):
    first = make_competition(tmp_path / "a", n_train=30, n_test=10, seed=7)
    second = make_competition(tmp_path / "b", n_train=30, n_test=10, seed=7)
    other = make_competition(tmp_path / "c", n_train=30, n_test=10, seed=8)
    files = [read_archive(summary["archive"]) for summary in (first, second, other)]
    for name in ("training.csv", "test.csv", "IdLookupTable.csv", "SampleSubmission.csv"):
        assert files[0][name] == files[1][name], name
    assert first["archive"].read_bytes() == second["archive"].read_bytes()
    assert first["solution"].read_bytes() == second["solution"].read_bytes()
    assert files[0]["training.csv"] != files[2]["training.csv"]
    assert first["solution"].read_bytes() != other["solution"].read_bytes()
    # The tables that do not depend on the faces are the same for every seed.
    assert files[0]["IdLookupTable.csv"] == files[2]["IdLookupTable.csv"]


@pytest.mark.parametrize("source", ["full", "core"])
def test_make_faces_keeps_every_keypoint_inside_the_frame(source):
    images, keypoints = make_faces(300, seed=11, source=source)
    assert images.dtype == np.uint8 and images.shape == (300, IMAGE_SIZE, IMAGE_SIZE)
    assert keypoints.shape == (300, 2 * len(KEYPOINT_NAMES))
    assert np.isfinite(keypoints).all()
    assert keypoints.min() >= 2 and keypoints.max() <= 93
    # Poses vary: the eyes are not at the same place in every face.
    assert keypoints[:, 0].std() > 1.5 and keypoints[:, 1].std() > 1.5
    # Images span a useful range of intensities.
    assert images.std() > 25


def test_edge_fractions_and_bad_arguments(tmp_path):
    summary = make_competition(tmp_path / "edge", n_train=10, n_test=4, seed=0,
                               complete_fraction=0.0, full_test_fraction=1.0)
    assert summary["n_train_core"] == 10 and summary["n_train_complete"] == 0
    assert summary["n_lookup_rows"] == 4 * 30
    with pytest.raises(KitError, match="complete_fraction"):
        make_competition(tmp_path / "bad", complete_fraction=1.5)
    with pytest.raises(KitError, match="n_train"):
        make_competition(tmp_path / "bad", n_train=0)
    with pytest.raises(KitError, match="source"):
        make_faces(2, source="other")


def _patch_mean(image: np.ndarray, points) -> float:
    """Mean of the 3x3 pixels around each point."""
    values = []
    for x, y in points:
        column, row = int(np.rint(x)), int(np.rint(y))
        values.append(image[row - 1: row + 2, column - 1: column + 2].mean())
    return float(np.mean(values))


def _face_mean(image: np.ndarray, named: dict) -> float:
    """Mean of the cheeks: the face below the eyes, beside the nose, above the mouth."""
    eye_y = (named["left_eye_center_y"] + named["right_eye_center_y"]) / 2
    lip_y = named["mouth_center_bottom_lip_y"]
    nose_x = named["nose_tip_x"]
    top, bottom = int(eye_y + 6), int((eye_y + lip_y) / 2)
    left_cheek = image[top:bottom, int(named["right_eye_center_x"]) - 4:int(nose_x) - 6]
    right_cheek = image[top:bottom, int(nose_x) + 7:int(named["left_eye_center_x"]) + 4]
    return float(np.concatenate([left_cheek.ravel(), right_cheek.ravel()]).mean())
