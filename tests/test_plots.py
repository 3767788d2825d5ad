"""kit.results.plots: every figure is a readable PNG of the promised size, written atomically; the
worst-row selection picks the rows it should."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from kit.core.keypoints import CORE_COLUMN_INDICES, CORE_KEYPOINTS, KEYPOINT_NAMES
from kit.results import faces, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A plausible face layout, (x, y) per keypoint in Kaggle's order.
BASE_KEYPOINTS = np.array([66, 39, 30, 37, 59, 39, 73, 39, 36, 38, 23, 38, 56, 29, 80, 30,
                           39, 29, 16, 30, 48, 62, 63, 76, 33, 76, 48, 72, 48, 82], float)


def _history(epochs: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    train = 10 * np.exp(-e / 4) + 1 + 0.05 * rng.random(epochs)
    val = 10 * np.exp(-e / 4) + 1.5 + 0.1 * rng.random(epochs)
    return [{"epoch": int(a), "train_rmse": float(b), "val_rmse": float(c)}
            for a, b, c in zip(e, train, val)]


def _faces(n: int, seed: int = 0):
    """uint8 images, truth with the 4-key rows' other columns missing, noisy predictions."""
    rng = np.random.default_rng(seed)
    truth = BASE_KEYPOINTS + 2 * rng.standard_normal((n, 30))
    truth[n // 2:] = np.nan
    truth[n // 2:, CORE_COLUMN_INDICES] = (BASE_KEYPOINTS + 2 * rng.standard_normal((n, 30)))[
        n // 2:, CORE_COLUMN_INDICES]
    prediction = truth + rng.standard_normal((n, 30))
    images = rng.integers(0, 256, size=(n, 96, 96), dtype=np.uint8)
    return images, truth, prediction


def _assert_png(path: Path, size: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size == size
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    # Something was drawn: not a single flat colour.
    assert pixels[..., :3].std() > 0.01


def _only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------
# One call per figure, each with its expected pixel size.


def _learning_curves(path):
    histories = {"15": [_history(12, fold) for fold in range(3)], "4": [_history(9, 7)]}
    return plots.learning_curves(histories, path), plots.PIXEL_SIZES["learning_curves"]


def _keypoint_error_bars(path):
    per_keypoint = {"15": {name: 1.0 + 0.1 * i for i, name in enumerate(KEYPOINT_NAMES)},
                    "4": {name: 1.5 for name in CORE_KEYPOINTS}}
    return (plots.keypoint_error_bars(per_keypoint, path),
            plots.PIXEL_SIZES["keypoint_error_bars"])


def _errors_on_face(path):
    images, truth, prediction = _faces(40)
    return (plots.errors_on_face(images.mean(axis=0), truth, prediction, path),
            plots.PIXEL_SIZES["errors_on_face"])


def _worst_cases(path):
    images, truth, prediction = _faces(40)
    labels = [f"row {i}" for i in range(40)]
    faces.worst_cases(images, truth, prediction, labels, path)
    return Path(path), faces.worst_cases_pixel_size(16)


def _augment_preview(path):
    images, truth, _ = _faces(3)
    originals = images.astype(np.float32) / 255
    augmented = np.stack([originals, originals[:, :, ::-1]], axis=1)
    augmented_keypoints = np.stack([truth, truth], axis=1)
    faces.augment_preview(originals, truth, augmented, augmented_keypoints, path)
    return Path(path), faces.augment_preview_pixel_size(3, 2)


FIGURES = {
    "learning_curves": _learning_curves,
    "keypoint_error_bars": _keypoint_error_bars,
    "errors_on_face": _errors_on_face,
    "worst_cases": _worst_cases,
    "augment_preview": _augment_preview,
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_a_png_of_the_promised_size(tmp_path, name):
    target = tmp_path / "nested" / f"{name}.png"
    written, size = FIGURES[name](target)
    assert written == target
    _assert_png(target, size)
    # Only the PNG: no temporary file beside it.
    assert _only_files(target.parent) == [target.name]


def test_validation_scored_every_few_epochs_is_drawn_as_a_line(tmp_path):
    """Epochs whose end scored no held-out rows (val_rmse None) leave the curve, so the
    scored ones join up: with every third epoch scored the panel draws more than the
    history that keeps only its best score."""
    sparse = [dict(e, val_rmse=e["val_rmse"] if e["epoch"] % 3 == 0 else None)
              for e in _history(12, 0)]
    best = min((e for e in sparse if e["val_rmse"] is not None), key=lambda e: e["val_rmse"])
    alone = [dict(e, val_rmse=e["val_rmse"] if e is best else None) for e in sparse]
    drawn = [matplotlib.image.imread(plots.learning_curves({"15": [h]}, tmp_path / f"{n}.png"))
             for n, h in (("sparse", sparse), ("alone", alone))]
    assert (drawn[0] != drawn[1]).any(axis=-1).sum() > 500


def test_grid_sizes_follow_their_counts(tmp_path):
    images, truth, prediction = _faces(20)
    labels = [str(i) for i in range(20)]
    faces.worst_cases(images, truth, prediction, labels, tmp_path / "five.png", count=5)
    _assert_png(tmp_path / "five.png", faces.worst_cases_pixel_size(5))
    assert faces.worst_cases_pixel_size(5) == (faces.worst_cases_pixel_size(16)[0],
                                               faces.worst_cases_pixel_size(16)[1] // 2)

    originals = images[:1]
    augmented = np.repeat(originals[:, None], 4, axis=1)
    faces.augment_preview(originals, truth[:1], augmented, np.repeat(truth[:1, None], 4, axis=1),
                          tmp_path / "one_row.png")
    _assert_png(tmp_path / "one_row.png", faces.augment_preview_pixel_size(1, 4))


def test_figures_never_touch_pyplot_or_a_display(tmp_path):
    # A backend that needs a display, and none: the figures must not care.
    script = (
        "import sys, numpy as np\n"
        "from kit.results import plots\n"
        "plots.learning_curves({'15': [[{'epoch': 1, 'train_rmse': 2.0, 'val_rmse': 3.0}]]},"
        f" {str(tmp_path / 'curves.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    environment["MPLBACKEND"] = "tkagg"
    result = subprocess.run([sys.executable, "-c", script], check=False, env=environment,
                            cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------------------------
# Choosing the worst rows


def _known_errors():
    """Ten rows of 4 values whose per-image RMSE is known, NaNs in both arrays."""
    truth = np.zeros((10, 4))
    prediction = np.zeros((10, 4))
    # Row r's error is r on every value it has, so its RMSE is r...
    for row in range(10):
        prediction[row] = row
    # ...except where a value is missing in either array: never counted, however large.
    truth[3, 0] = np.nan
    prediction[3, 1] = np.nan
    truth[8, :3] = np.nan
    prediction[5, 2] = np.nan
    truth[5, 2] = 1000.0  # would dominate row 5 if the NaN prediction were not skipped
    truth[9] = np.nan  # nothing present: never chosen
    prediction[7] = np.nan  # nothing present either
    # Row 2 gets a single large error: RMSE sqrt(36 / 4) = 3, a tie with row 3.
    prediction[2] = [2.0, 2.0, 2.0, np.sqrt(36 - 3 * 4)]
    return truth, prediction


def test_per_image_rmse_uses_only_values_present_in_both():
    truth, prediction = _known_errors()
    rmse = faces.per_image_rmse(truth, prediction)
    expected = np.array([0, 1, 3, 3, 4, 5, 6, np.nan, 8, np.nan])
    np.testing.assert_allclose(rmse, expected)


def test_select_worst_returns_largest_errors_first():
    truth, prediction = _known_errors()
    # Largest first; the tie between rows 2 and 3 keeps row order; rows 7 and 9 never appear.
    assert faces.select_worst(truth, prediction, count=5).tolist() == [8, 6, 5, 4, 2]
    assert faces.select_worst(truth, prediction, count=100).tolist() == [8, 6, 5, 4, 2, 3, 1, 0]
    assert faces.select_worst(truth, prediction, count=0).tolist() == []


def test_select_worst_matches_a_brute_force_ranking():
    rng = np.random.default_rng(3)
    truth = rng.normal(48, 10, size=(200, 30))
    prediction = truth + rng.normal(0, 1, size=truth.shape) * rng.uniform(0.1, 5, size=(200, 1))
    truth[rng.random(truth.shape) < 0.3] = np.nan
    prediction[rng.random(truth.shape) < 0.1] = np.nan
    expected = []
    for row in range(200):
        both = ~np.isnan(truth[row]) & ~np.isnan(prediction[row])
        if both.any():
            expected.append((np.sqrt(np.mean((truth[row, both] - prediction[row, both]) ** 2)), row))
    expected.sort(key=lambda pair: -pair[0])
    assert faces.select_worst(truth, prediction, 16).tolist() == [row for _, row in expected[:16]]


def test_worst_cases_draws_the_rows_select_worst_picks(tmp_path):
    images, truth, prediction = _faces(60, seed=5)
    prediction[17] += 30  # one clear worst row
    labels = [f"row {i}, subset {'15' if i < 30 else '4'}" for i in range(60)]
    chosen = faces.worst_cases(images, truth, prediction, labels, tmp_path / "worst.png")
    assert chosen.tolist() == faces.select_worst(truth, prediction, 16).tolist()
    assert chosen[0] == 17
    assert len(chosen) == 16


def test_worst_cases_with_fewer_usable_rows_than_cells(tmp_path):
    images, truth, prediction = _faces(6)
    prediction[:4] = np.nan
    chosen = faces.worst_cases(images, truth, prediction, [str(i) for i in range(6)],
                               tmp_path / "worst.png")
    assert sorted(chosen.tolist()) == [4, 5]
    _assert_png(tmp_path / "worst.png", faces.worst_cases_pixel_size(16))


# --------------------------------------------------------------------------------------------
# Missing values and small inputs


def test_missing_columns_and_single_folds_draw_without_warnings(tmp_path):
    images, truth, prediction = _faces(30)
    # The 4-key model predicts only its core columns; no row has the nose tip at all.
    four_key_prediction = np.full_like(prediction, np.nan)
    four_key_prediction[:, CORE_COLUMN_INDICES] = prediction[:, CORE_COLUMN_INDICES]
    nose = 2 * KEYPOINT_NAMES.index("nose_tip")
    truth[:, nose:nose + 2] = np.nan
    # A single paired row for the mouth's left corner: a dot and a line, no covariance.
    mouth = 2 * KEYPOINT_NAMES.index("mouth_left_corner")
    truth[1:, mouth:mouth + 2] = np.nan
    history = _history(5, 0)
    history[2]["val_rmse"] = float("nan")
    history[3]["train_rmse"] = 0.0  # cannot sit on a log axis: left out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.learning_curves({"4": [history]}, tmp_path / "curves.png")
        plots.learning_curves({"15": [[{"epoch": 1, "train_rmse": 3.0, "val_rmse": np.nan}]]},
                              tmp_path / "curves_no_validation.png")
        plots.keypoint_error_bars({"4": {name: 2.0 for name in CORE_KEYPOINTS},
                                   "15": {"nose_tip": float("nan")}}, tmp_path / "bars.png")
        plots.errors_on_face(images.mean(axis=0), truth, four_key_prediction,
                             tmp_path / "face.png")
        plots.errors_on_face(np.zeros((96, 96)), np.full((3, 30), np.nan),
                             np.full((3, 30), np.nan), tmp_path / "face_empty.png")
        keypoints = truth[:2].copy()
        keypoints[0, :10] = np.nan
        faces.augment_preview(images[:2], keypoints, images[:2, None], keypoints[:, None],
                              tmp_path / "augment.png")
    assert _only_files(tmp_path) == sorted([
        "curves.png", "curves_no_validation.png", "bars.png", "face.png", "face_empty.png",
        "augment.png"])


def test_sigma_ellipse_follows_the_covariance():
    # Variances 4 along x and 1 along y: 2-sigma full axes 8 and 4, major axis horizontal.
    ellipse = plots._sigma_ellipse(np.array([10.0, 20.0]), np.diag([4.0, 1.0]), 2.0, "red")
    assert ellipse.center == (10.0, 20.0)
    assert (ellipse.width, ellipse.height) == pytest.approx((8.0, 4.0))
    assert ellipse.angle % 180 == pytest.approx(0.0, abs=1e-9)
    # The same spread turned by 45 degrees.
    turn = np.array([[1, -1], [1, 1]]) / np.sqrt(2)
    ellipse = plots._sigma_ellipse(np.zeros(2), turn @ np.diag([4.0, 1.0]) @ turn.T, 2.0, "red")
    assert (ellipse.width, ellipse.height) == pytest.approx((8.0, 4.0))
    assert ellipse.angle % 180 == pytest.approx(45.0)


def test_margin_labels_keep_order_and_spacing():
    ys = np.array([30.0, 29.0, 31.0, 90.0, 95.0])
    placed = plots._spread(ys, gap=5.0, low=0.0, high=95.0)
    assert np.argsort(placed, kind="stable").tolist() == np.argsort(ys, kind="stable").tolist()
    assert np.diff(np.sort(placed)).min() >= 5.0 - 1e-9
    assert placed.min() >= 0.0 and placed.max() <= 95.0


# --------------------------------------------------------------------------------------------
# Nothing half-written


BAD_CALLS = {
    "learning_curves": lambda path: plots.learning_curves(
        {"15": [[{"epoch": 1, "train_rmse": 1.0}]]}, path),
    "learning_curves_empty": lambda path: plots.learning_curves({}, path),
    "keypoint_error_bars": lambda path: plots.keypoint_error_bars(
        {"15": {"left_eye_center_x": 1.0}}, path),
    "errors_on_face": lambda path: plots.errors_on_face(
        np.zeros((96, 96)), np.zeros((4, 30)), np.zeros((4, 8)), path),
    "errors_on_face_image": lambda path: plots.errors_on_face(
        np.zeros((96, 96, 3)), np.zeros((4, 30)), np.zeros((4, 30)), path),
    "worst_cases": lambda path: faces.worst_cases(
        np.zeros((4, 96, 96), np.uint8), np.zeros((4, 30)), np.zeros((4, 30)), ["a"] * 3, path),
    "worst_cases_images": lambda path: faces.worst_cases(
        np.zeros((3, 96, 96), np.uint8), np.zeros((4, 30)), np.zeros((4, 30)), ["a"] * 4, path),
    "augment_preview": lambda path: faces.augment_preview(
        np.zeros((2, 96, 96)), np.zeros((2, 30)), np.zeros((2, 3, 96, 90)),
        np.zeros((2, 3, 30)), path),
    "augment_preview_keypoints": lambda path: faces.augment_preview(
        np.zeros((2, 96, 96)), np.zeros((2, 30)), np.zeros((2, 3, 96, 96)),
        np.zeros((2, 2, 30)), path),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_input_raises_and_leaves_no_file(tmp_path, name):
    with pytest.raises(ValueError):
        BAD_CALLS[name](tmp_path / "figure.png")
    assert _only_files(tmp_path) == []


@pytest.mark.parametrize("name", FIGURES)
def test_failure_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, name):
    target = tmp_path / f"{name}.png"
    target.write_bytes(b"previous figure")

    def half_write(figure, destination, **kwargs):
        Path(destination).write_bytes(PNG_SIGNATURE + b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_write)
    with pytest.raises(OSError, match="disk full"):
        FIGURES[name](target)
    assert target.read_bytes() == b"previous figure"
    assert _only_files(tmp_path) == [target.name]
