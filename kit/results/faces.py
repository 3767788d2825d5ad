"""Grids of faces with their keypoints: the worst out-of-fold predictions, the labels flagged
as noise, and an augmentation preview. Sizes in inches at kit.results.plots.DPI, so each
grid's pixel size is known beforehand (worst_cases_pixel_size, augment_preview_pixel_size).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from kit.results.plots import (
    AUGMENT_CELL_INCHES,
    DPI,
    PREDICTION_COLOR,
    TRUTH_COLOR,
    WORST_CASE_CELL_INCHES,
    WORST_CASES_COLUMNS,
    keypoint_colors,
    paired_rows,
    png,
    show_image,
)


def worst_cases_pixel_size(count: int = 16) -> tuple[int, int]:
    """(width, height) in pixels of the `worst_cases` PNG for `count` cells."""
    rows, columns = _worst_grid(count)
    return (
        int(columns * WORST_CASE_CELL_INCHES[0] * DPI),
        int(rows * WORST_CASE_CELL_INCHES[1] * DPI),
    )


def augment_preview_pixel_size(originals: int, augmentations: int) -> tuple[int, int]:
    """(width, height) in pixels of the `augment_preview` PNG: one row per original,
    the original then its augmented versions across."""
    return (
        int((1 + augmentations) * AUGMENT_CELL_INCHES[0] * DPI),
        int(originals * AUGMENT_CELL_INCHES[1] * DPI),
    )


# ----------------------------------------------------------------------------------------------
# Worst predictions


def per_image_rmse(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(N,) RMSE of each row over the values present in both; NaN for a row with none."""
    truth, prediction = paired_rows(truth, prediction, "per_image_rmse")
    present = np.isfinite(truth) & np.isfinite(prediction)
    squares = np.where(present, prediction - truth, 0.0) ** 2
    counts = present.sum(axis=1)
    rmse = np.full(len(truth), np.nan)
    rmse[counts > 0] = np.sqrt(squares.sum(axis=1)[counts > 0] / counts[counts > 0])
    return rmse


def select_worst(truth: np.ndarray, prediction: np.ndarray, count: int = 16) -> np.ndarray:
    """Indices of the `count` rows with the largest per-image RMSE, largest first; ties keep
    row order; rows with no value present in both are never chosen."""
    if count < 0:
        raise ValueError(f"select_worst: count is {count}; expected 0 or more")
    rmse = per_image_rmse(truth, prediction)
    candidates = np.flatnonzero(np.isfinite(rmse))
    order = np.argsort(-rmse[candidates], kind="stable")
    return candidates[order[:count]]


def worst_cases(images: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                labels: Sequence[str], path: Path | str, count: int = 16) -> np.ndarray:
    """A grid of the `count` worst rows (4 across): truth as green circles, prediction as red
    crosses, a thin line between the two, the caption and per-image RMSE under each. Returns
    the chosen row indices (`select_worst`'s)."""
    images = np.asarray(images)
    truth, prediction = paired_rows(truth, prediction, "worst_cases")
    if images.ndim != 3 or len(images) != len(truth):
        raise ValueError(f"worst_cases: images have shape {images.shape}; expected "
                         f"({len(truth)}, height, width) to match truth's rows")
    if len(labels) != len(truth):
        raise ValueError(f"worst_cases: {len(labels)} labels for {len(truth)} rows; "
                         "expected one caption per row")
    if truth.shape[1] % 2:
        raise ValueError(f"worst_cases: truth has {truth.shape[1]} columns; expected x, y pairs")
    if count < 1:
        raise ValueError(f"worst_cases: count is {count}; expected 1 or more")
    chosen = select_worst(truth, prediction, count)
    rmse = per_image_rmse(truth, prediction)
    with _face_grid(path, count) as (figure, axes):
        for ax, row in zip(axes, chosen):
            show_image(ax, images[row])
            true_xy = truth[row].reshape(-1, 2)
            predicted_xy = prediction[row].reshape(-1, 2)
            both = np.isfinite(true_xy).all(axis=1) & np.isfinite(predicted_xy).all(axis=1)
            for t, p in zip(true_xy[both], predicted_xy[both]):
                ax.plot(*zip(t, p), color="yellow", linewidth=0.8, alpha=0.8)
            ax.plot(true_xy[:, 0], true_xy[:, 1], linestyle="none", marker="o", markersize=5,
                    markerfacecolor="none", markeredgecolor=TRUTH_COLOR, markeredgewidth=1.2)
            ax.plot(predicted_xy[:, 0], predicted_xy[:, 1], linestyle="none", marker="x",
                    markersize=5, color=PREDICTION_COLOR, markeredgewidth=1.2)
            ax.set_title(f"{labels[row]}\nRMSE {rmse[row]:.2f} px", fontsize=8)
        figure.suptitle("Worst predictions: truth o (green), prediction x (red)", fontsize=10)
    return chosen


def label_noise(images: np.ndarray, flagged, path: Path | str, count: int = 16) -> list[int]:
    """A grid of the `count` faces with the worst flagged labels (4 across, the worst first),
    each flagged keypoint's label as a green circle and the OOF prediction as a red cross
    joined by a line; the caption names the row and its worst keypoint. Always
    `worst_cases_pixel_size(count)`, with no faces when nothing is flagged. Returns the rows.

    flagged: kit.results.label_noise's table (row, keypoint, truth_x/y, prediction_x/y, residual_px).
    """
    images = np.asarray(images)
    if count < 1:
        raise ValueError(f"label_noise: count is {count}; expected 1 or more")
    worst = flagged.sort_values("residual_px", ascending=False)
    rows = list(dict.fromkeys(int(r) for r in worst["row"]))[:count]
    with _face_grid(path, count) as (figure, axes):
        for ax, row in zip(axes, rows):
            show_image(ax, images[row])
            mine = worst[worst["row"] == row]
            for line in mine.itertuples():
                ax.plot([line.truth_x, line.prediction_x], [line.truth_y, line.prediction_y],
                        color="yellow", linewidth=0.8, alpha=0.8)
            ax.plot(mine["truth_x"], mine["truth_y"], linestyle="none", marker="o",
                    markersize=6, markerfacecolor="none", markeredgecolor=TRUTH_COLOR,
                    markeredgewidth=1.4)
            ax.plot(mine["prediction_x"], mine["prediction_y"], linestyle="none", marker="x",
                    markersize=6, color=PREDICTION_COLOR, markeredgewidth=1.4)
            first = mine.iloc[0]
            more = f" (+{len(mine) - 1})" if len(mine) > 1 else ""
            ax.set_title(f"row {row}, {first['subset']}-key model\n{first['keypoint']}{more}: "
                         f"{first['residual_px']:.1f} px", fontsize=7)
        if not rows:
            axes[0].text(0.0, 0.5, "no labels flagged", fontsize=10)
        figure.suptitle(f"Labels the OOF predictions call wrong ({len(flagged)} flagged): "
                        "label o (green), OOF prediction x (red)", fontsize=10)
    return rows


@contextlib.contextmanager
def _face_grid(path: Path | str, count: int) -> Iterator[tuple[Figure, np.ndarray]]:
    """A PNG of `count` face cells, 4 across, axes off: the worst-case pictures' layout."""
    rows, columns = _worst_grid(count)
    size = (columns * WORST_CASE_CELL_INCHES[0], rows * WORST_CASE_CELL_INCHES[1])
    with png(path, size) as figure:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes:
            ax.set_axis_off()
        yield figure, axes


def _worst_grid(count: int) -> tuple[int, int]:
    columns = min(WORST_CASES_COLUMNS, max(count, 1))
    return max(1, math.ceil(count / columns)), columns


# ----------------------------------------------------------------------------------------------
# Augmentation preview


def augment_preview(originals: np.ndarray, original_keypoints: np.ndarray, augmented: np.ndarray,
                    augmented_keypoints: np.ndarray, path: Path | str) -> Path:
    """One row per original: the original, then its m augmented versions, keypoints drawn in
    one colour per keypoint (NaN keypoints skipped).

    Shapes: originals (n, H, W), original_keypoints (n, K2), augmented (n, m, H, W),
    augmented_keypoints (n, m, K2); images uint8 or float in [0, 1].
    """
    originals = np.asarray(originals)
    original_keypoints = np.asarray(original_keypoints, dtype=float)
    augmented = np.asarray(augmented)
    augmented_keypoints = np.asarray(augmented_keypoints, dtype=float)
    if originals.ndim != 3 or len(originals) == 0:
        raise ValueError(f"augment_preview: originals have shape {originals.shape}; "
                         "expected (n, height, width) with n >= 1")
    n, height, width = originals.shape
    if original_keypoints.ndim != 2 or len(original_keypoints) != n \
            or original_keypoints.shape[1] % 2:
        raise ValueError(f"augment_preview: original_keypoints have shape "
                         f"{original_keypoints.shape}; expected ({n}, an even count)")
    if augmented.ndim != 4 or augmented.shape[0] != n or augmented.shape[2:] != (height, width):
        raise ValueError(f"augment_preview: augmented has shape {augmented.shape}; "
                         f"expected ({n}, m, {height}, {width})")
    m = augmented.shape[1]
    expected = (n, m, original_keypoints.shape[1])
    if augmented_keypoints.shape != expected:
        raise ValueError(f"augment_preview: augmented_keypoints have shape "
                         f"{augmented_keypoints.shape}; expected {expected}")
    colors = keypoint_colors(original_keypoints.shape[1] // 2)
    size = ((1 + m) * AUGMENT_CELL_INCHES[0], n * AUGMENT_CELL_INCHES[1])
    with png(path, size) as figure:
        axes = figure.subplots(n, 1 + m, squeeze=False)
        for i in range(n):
            versions = [(originals[i], original_keypoints[i])]
            versions += [(augmented[i, j], augmented_keypoints[i, j]) for j in range(m)]
            for j, (image, keypoints) in enumerate(versions):
                ax = axes[i, j]
                ax.set_axis_off()
                show_image(ax, image)
                xy = keypoints.reshape(-1, 2)
                present = np.isfinite(xy).all(axis=1)
                ax.scatter(xy[present, 0], xy[present, 1], s=14, c=colors[present],
                           edgecolors="black", linewidths=0.3)
                if i == 0:
                    ax.set_title("original" if j == 0 else f"augmented {j}", fontsize=8)
    return Path(path)
