"""The kit's figures of a run: learning curves, per-keypoint errors, error ellipses on the
mean face (kit.results.faces draws the grids of faces). Each function takes plain arrays and
dicts, writes one PNG atomically and returns its path.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), never through
pyplot: no backend is chosen or needed, no display is opened, and no figure lingers in a global
registry, so nothing here changes matplotlib's state for the process that imports the kit.
Sizes are fixed in inches (multiples of 1/4, exact in binary) at `DPI`, so a PNG's pixel size is
known beforehand: `PIXEL_SIZES` for the fixed figures, kit.results.faces' functions for the
grids.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from kit.core.fileio import atomic_path
from kit.core.keypoints import KEYPOINT_NAMES

DPI = 100

# Figure sizes in inches, (width, height).
LEARNING_CURVES_INCHES = (12.0, 5.0)
KEYPOINT_ERROR_BARS_INCHES = (9.0, 7.0)
# Wide: the keypoint names sit in margins left and right of the face.
ERRORS_ON_FACE_INCHES = (12.0, 6.5)
# One image of a grid, caption included.
WORST_CASE_CELL_INCHES = (2.5, 2.75)
WORST_CASES_COLUMNS = 4
AUGMENT_CELL_INCHES = (1.75, 1.75)

PIXEL_SIZES: dict[str, tuple[int, int]] = {
    "learning_curves": (int(LEARNING_CURVES_INCHES[0] * DPI), int(LEARNING_CURVES_INCHES[1] * DPI)),
    "keypoint_error_bars": (
        int(KEYPOINT_ERROR_BARS_INCHES[0] * DPI),
        int(KEYPOINT_ERROR_BARS_INCHES[1] * DPI),
    ),
    "errors_on_face": (int(ERRORS_ON_FACE_INCHES[0] * DPI), int(ERRORS_ON_FACE_INCHES[1] * DPI)),
}

TRUTH_COLOR = "limegreen"
PREDICTION_COLOR = "red"
# One colour per keypoint, the same in every figure; the augmentation preview colours each
# keypoint alike in every version, so a mislabelled mirror shows as a swapped colour. tab20
# less its two grays, which vanish on a gray face: 18 colours, enough for 15 keypoints.
KEYPOINT_COLORS = np.array([colormaps["tab20"](i) for i in range(20) if i not in (14, 15)])


# ----------------------------------------------------------------------------------------------
# Learning curves


def learning_curves(histories: Mapping[str, Sequence[Sequence[Mapping]]], path: Path | str) -> Path:
    """One panel per subset; per fold, train RMSE dashed and validation RMSE solid on a log
    axis, a star at the fold's best validation epoch.

    histories[subset][fold] is a list of per-epoch dicts with "epoch", "train_rmse" and
    "val_rmse" (pixels; None for an epoch that scored no held-out rows). Non-finite or
    non-positive values are left out of the curves.
    """
    if not histories:
        raise ValueError("learning_curves: no subsets to plot")
    curves = {subset: [_epoch_arrays(subset, fold, epochs) for fold, epochs in enumerate(folds)]
              for subset, folds in histories.items()}
    with png(path, LEARNING_CURVES_INCHES) as figure:
        axes = figure.subplots(1, len(curves), squeeze=False)[0]
        for ax, (subset, folds) in zip(axes, curves.items()):
            best_values = []
            for fold, (epoch, train, val, unscored) in enumerate(folds):
                color = f"C{fold % 10}"
                # A marker on every point keeps a one-epoch history visible.
                marker = "." if len(epoch) <= 1 else None
                ax.plot(epoch, train, linestyle="--", color=color, marker=marker, alpha=0.8)
                # Epochs whose end scored no held-out rows (train.validate_every) are left
                # out, so the scored ones join up; a non-positive score stays a gap.
                scored = ~unscored
                ax.plot(epoch[scored], val[scored], linestyle="-", color=color,
                        marker="." if scored.sum() <= 1 else None, label=f"fold {fold}")
                if np.isfinite(val).any():
                    best = int(np.nanargmin(val))
                    best_values.append(val[best])
                    ax.plot(epoch[best], val[best], marker="*", markersize=13, color=color,
                            markeredgecolor="black", markeredgewidth=0.6, zorder=5)
            title = f"subset {subset}: {len(folds)} fold{'s' if len(folds) != 1 else ''}"
            if best_values:
                title += f", best validation RMSE {np.mean(best_values):.3f} px (mean over folds)"
            ax.set_title(title, fontsize=10)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("RMSE (pixels)")
            ax.grid(True, which="both", alpha=0.3)
            style_handles = [
                Line2D([], [], color="gray", linestyle="--", label="train"),
                Line2D([], [], color="gray", linestyle="-", label="validation"),
                Line2D([], [], color="gray", marker="*", markersize=10, linestyle="none",
                       markeredgecolor="black", label="best validation"),
            ]
            fold_handles, _ = ax.get_legend_handles_labels()
            ax.legend(handles=fold_handles + style_handles, fontsize=8, loc="upper right")
    return Path(path)


def _epoch_arrays(subset: str, fold: int, epochs: Sequence[Mapping]):
    try:
        epoch = np.array([e["epoch"] for e in epochs], dtype=float)
        train = np.array([e["train_rmse"] for e in epochs], dtype=float)
        unscored = np.array([e["val_rmse"] is None for e in epochs], dtype=bool)
        val = np.array([e["val_rmse"] for e in epochs], dtype=float)  # None: nan
    except KeyError as missing:
        raise ValueError(
            f"learning_curves: subset {subset} fold {fold}: an epoch lacks key {missing}; "
            "expected 'epoch', 'train_rmse', 'val_rmse'") from None
    # A log axis cannot show zero or negative values; gaps say more than clipped points.
    train[~(train > 0)] = np.nan
    val[~(val > 0)] = np.nan
    return epoch, train, val, unscored


# ----------------------------------------------------------------------------------------------
# Per-keypoint errors


def keypoint_error_bars(per_keypoint: Mapping[str, Mapping[str, float]], path: Path | str) -> Path:
    """Horizontal bars of out-of-fold RMSE (pixels) per keypoint, one bar per subset's model
    side by side; a model without a keypoint (the 4-key one) simply has no bar there."""
    if not per_keypoint:
        raise ValueError("keypoint_error_bars: no subsets to plot")
    for subset, errors in per_keypoint.items():
        unknown = sorted(set(errors) - set(KEYPOINT_NAMES))
        if unknown:
            raise ValueError(f"keypoint_error_bars: subset {subset}: unknown keypoint names "
                             f"{unknown}; expected names from kit.core.keypoints.KEYPOINT_NAMES")
    subsets = list(per_keypoint)
    bar_height = 0.8 / len(subsets)
    # Kaggle's order from top to bottom.
    rows = np.arange(len(KEYPOINT_NAMES))[::-1]
    with png(path, KEYPOINT_ERROR_BARS_INCHES) as figure:
        ax = figure.subplots()
        largest = 0.0
        for i, subset in enumerate(subsets):
            values = np.array([per_keypoint[subset].get(name, np.nan) for name in KEYPOINT_NAMES],
                              dtype=float)
            present = np.isfinite(values)
            offsets = rows + (len(subsets) - 1) / 2 * bar_height - i * bar_height
            mean = float(values[present].mean()) if present.any() else float("nan")
            bars = ax.barh(offsets[present], values[present], height=bar_height,
                           color=f"C{i % 10}",
                           label=f"subset {subset} model (mean {mean:.2f} px)")
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            if present.any():
                largest = max(largest, float(values[present].max()))
        ax.set_yticks(rows, KEYPOINT_NAMES, fontsize=9)
        ax.set_ylim(-0.6, len(KEYPOINT_NAMES) - 0.4)
        # Room for the value labels at the bars' ends.
        ax.set_xlim(0, largest * 1.15 if largest > 0 else 1)
        ax.set_xlabel("out-of-fold RMSE (pixels)")
        ax.set_title("Out-of-fold RMSE per keypoint")
        ax.grid(True, axis="x", alpha=0.3)
        # Below the axes: inside, it would cover the bottom keypoint's bars.
        figure.legend(fontsize=9, loc="outside lower center", ncol=len(subsets))
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Error ellipses on the mean face


def errors_on_face(mean_image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                   path: Path | str) -> Path:
    """The mean face in gray; per keypoint its mean true position (dot), the mean error (line
    from the dot to the ellipse's centre) and a 2-sigma ellipse of the error's covariance; names
    and per-keypoint RMSE in the margins, joined to their dots by thin lines.

    truth and prediction are (N, 30) in Kaggle's column order, NaN where missing; the error
    statistics use the rows where both give the keypoint's x and y. mean_image is shown with
    its own range (a mean of uint8 images, 0..255, and of float ones, 0..1, both work).
    """
    mean_image = np.asarray(mean_image, dtype=float)
    truth, prediction = paired_rows(truth, prediction, "errors_on_face")
    if mean_image.ndim != 2:
        raise ValueError(f"errors_on_face: mean_image has shape {mean_image.shape}; "
                         "expected (height, width)")
    if truth.shape[1] != 2 * len(KEYPOINT_NAMES):
        raise ValueError(f"errors_on_face: truth has {truth.shape[1]} columns; expected "
                         f"{2 * len(KEYPOINT_NAMES)} in Kaggle's order")
    height, width = mean_image.shape
    finite = mean_image[np.isfinite(mean_image)]
    value_range = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    colors = keypoint_colors(len(KEYPOINT_NAMES))
    # A fixed layout: the constrained one counts the margin labels as the axes' decorations
    # and pushes the title off the top.
    with png(path, ERRORS_ON_FACE_INCHES, layout=None) as figure:
        ax = figure.add_axes((0.01, 0.01, 0.98, 0.88))
        show_image(ax, mean_image, value_range)
        labels = []  # (name with RMSE, mean truth, colour)
        overall_squares, overall_count = 0.0, 0
        for k, name in enumerate(KEYPOINT_NAMES):
            true_xy = truth[:, 2 * k:2 * k + 2]
            predicted_xy = prediction[:, 2 * k:2 * k + 2]
            has_truth = np.isfinite(true_xy).all(axis=1)
            if not has_truth.any():
                continue
            center = true_xy[has_truth].mean(axis=0)
            color = colors[k]
            ax.plot(*center, marker="o", markersize=5, color=color, markeredgecolor="black",
                    markeredgewidth=0.5, zorder=4)
            paired = has_truth & np.isfinite(predicted_xy).all(axis=1)
            label = name
            if paired.any():
                error = predicted_xy[paired] - true_xy[paired]
                overall_squares += float((error ** 2).sum())
                overall_count += error.size
                ellipse_center = center + error.mean(axis=0)
                ax.plot(*zip(center, ellipse_center), color=color, linewidth=1.2, zorder=3)
                if paired.sum() >= 2:
                    ax.add_patch(_sigma_ellipse(ellipse_center, np.cov(error, rowvar=False),
                                                sigmas=2.0, color=color))
                label += f"  {np.sqrt((error ** 2).mean()):.2f} px (n={paired.sum()})"
            else:
                label += "  (no prediction)"
            labels.append((label, center, color))
        _margin_labels(ax, labels, width, height)
        title = "Mean truth (dots), mean error (lines), 2-sigma error ellipses"
        if overall_count:
            title += (f"\nRMSE over all paired values {np.sqrt(overall_squares / overall_count):.3f}"
                      " px; per keypoint beside its name")
        ax.set_title(title, fontsize=10)
    return Path(path)


def _margin_labels(ax, labels, width: int, height: int) -> None:
    """Names in the margins beside the image (the image's left half to the left), in the
    keypoints' vertical order, spread apart so that none overlap; a leader line to each dot.
    Fifteen names placed on the face itself would cover one another around the eyes."""
    margin = 0.5 * width
    gap = 0.055 * height
    for side in ("left", "right"):
        group = [(text, center, color) for text, center, color in labels
                 if (center[0] < width / 2) == (side == "left")]
        if not group:
            continue
        ys = _spread(np.array([center[1] for _, center, _ in group]), gap, 0.0, height - 1.0)
        x_text = -0.04 * width if side == "left" else width * 1.04 - 1
        for (text, center, color), y in zip(group, ys):
            ax.annotate(text, xy=tuple(center), xytext=(x_text, y), textcoords="data",
                        ha="right" if side == "left" else "left", va="center", fontsize=8,
                        arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.8,
                                    "shrinkA": 1, "shrinkB": 3},
                        annotation_clip=False, zorder=5)
    ax.set_xlim(-0.5 - margin, width - 0.5 + margin)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_frame_on(False)


def _spread(values: np.ndarray, gap: float, low: float, high: float) -> np.ndarray:
    """Positions near `values`, in the same order, at least `gap` apart, kept within
    [low, high] where they fit."""
    order = np.argsort(values, kind="stable")
    placed = np.clip(values[order].astype(float), low, high)
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    placed -= max(0.0, placed[-1] - high)
    for i in range(len(placed)):
        placed[i] = max(placed[i], low if i == 0 else placed[i - 1] + gap)
    result = np.empty_like(placed)
    result[order] = placed
    return result


def _sigma_ellipse(center: np.ndarray, covariance: np.ndarray, sigmas: float, color) -> Ellipse:
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    # eigh sorts ascending: the last eigenvector is the major axis.
    major = eigenvectors[:, -1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    width, height = 2 * sigmas * np.sqrt(eigenvalues[::-1])
    return Ellipse(tuple(center), width=width, height=height, angle=angle, fill=False,
                   edgecolor=color, linewidth=1.5, zorder=3)

# ----------------------------------------------------------------------------------------------
# Shared helpers


@contextlib.contextmanager
def png(path: Path | str, size_inches: tuple[float, float],
         layout: str | None = "constrained") -> Iterator[Figure]:
    """A figure of a fixed size; on leaving the block without an error it is written to `path`
    as a PNG through a temporary file, so a failed drawing leaves no file behind."""
    figure = Figure(figsize=size_inches, dpi=DPI, layout=layout)
    yield figure
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)


def paired_rows(truth, prediction, caller: str) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth, dtype=float)
    prediction = np.asarray(prediction, dtype=float)
    if truth.ndim != 2 or truth.shape != prediction.shape:
        raise ValueError(f"{caller}: truth {truth.shape} and prediction {prediction.shape}; "
                         "expected two (N, columns) arrays of the same shape")
    return truth, prediction


def show_image(ax, image: np.ndarray, value_range: tuple[float, float] | None = None) -> None:
    """Gray image in pixel coordinates (the keypoints'); later points do not widen the view."""
    image = np.asarray(image)
    if value_range is None:
        # uint8 images span 0..255, float ones 0..1 (values beyond are clipped).
        value_range = (0, 255) if np.issubdtype(image.dtype, np.integer) else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=value_range[0], vmax=value_range[1],
              interpolation="nearest")
    ax.set_autoscale_on(False)
    ax.set_xticks([])
    ax.set_yticks([])


def keypoint_colors(count: int) -> np.ndarray:
    return KEYPOINT_COLORS[np.arange(count) % len(KEYPOINT_COLORS)]


__all__ = [
    "DPI",
    "PIXEL_SIZES",
    "errors_on_face",
    "keypoint_error_bars",
    "learning_curves",
]
