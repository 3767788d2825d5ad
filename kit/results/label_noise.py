"""Training labels the out-of-fold residuals call wrong: pure functions over oof.csv's table.

A model that never saw a row predicts it; where its prediction lands far from the label, much
farther than it usually misses that keypoint, the label is more likely wrong than the model
(a keypoint clicked on the wrong eye, a point left at a default position). Each keypoint is
judged as a point (x and y together: the residual distance), against the other residuals of
the same keypoint and subset, because some keypoints (eyebrow ends, mouth corners) are missed
by several pixels routinely and others (eye centres) rarely by one.

The rule is robust: a label is flagged when its distance exceeds

    max(median + MAD_MULTIPLE * 1.4826 * MAD, MIN_PIXELS)

over the keypoint's distances in that subset. Median and MAD (scaled by 1.4826, a standard
deviation for normal data) are not pulled up by the very outliers they are meant to find, as a
mean and standard deviation would be.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kit.core.keypoints import KEYPOINT_NAMES

# Distances are positive and skewed (about Rayleigh for normal x/y errors), so a normal
# "3 sigma" flags too much of an honest tail: 5 robust spreads above the median leaves a
# clean Rayleigh-shaped error flagged about once in a million labels.
MAD_MULTIPLE = 5.0
MAD_TO_SIGMA = 1.4826
# Below this no label is flagged, however tight the keypoint's residuals: annotators disagree
# by a few pixels on where an eyebrow ends, and a well-fitting model (MAD well under a pixel)
# would otherwise flag that disagreement as noise.
MIN_PIXELS = 5.0

COLUMNS = ("row", "subset", "fold", "keypoint", "truth_x", "truth_y", "prediction_x",
           "prediction_y", "residual_px", "threshold_px")


def point_residuals(oof: pd.DataFrame) -> pd.DataFrame:
    """One line per (row, subset, keypoint) with both x and y in oof.csv's long table: the
    label, the OOF prediction and the distance between them, in pixels."""
    table = oof.assign(keypoint=oof["column"] // 2,
                       axis=np.where(oof["column"] % 2 == 0, "x", "y"))
    wide = table.pivot_table(index=["row", "subset", "fold", "keypoint"], columns="axis",
                             values=["truth", "prediction"], aggfunc="first")
    wide.columns = [f"{value}_{axis}" for value, axis in wide.columns]
    wide = wide.reset_index().dropna(subset=["truth_x", "truth_y", "prediction_x",
                                             "prediction_y"])
    wide["keypoint"] = np.array(KEYPOINT_NAMES)[wide["keypoint"].to_numpy(int)]
    wide["residual_px"] = np.hypot(wide["prediction_x"] - wide["truth_x"],
                                   wide["prediction_y"] - wide["truth_y"])
    wide["subset"] = wide["subset"].astype(str)
    return wide


def thresholds(points: pd.DataFrame, mad_multiple: float = MAD_MULTIPLE,
               min_pixels: float = MIN_PIXELS) -> pd.Series:
    """Each line's flagging distance: its (subset, keypoint)'s robust limit."""
    groups = points.groupby(["subset", "keypoint"])["residual_px"]
    median = groups.transform("median")
    mad = (points["residual_px"] - median).abs().groupby(
        [points["subset"], points["keypoint"]]).transform("median")
    return np.maximum(median + mad_multiple * MAD_TO_SIGMA * mad, min_pixels)


def flag(oof: pd.DataFrame, mad_multiple: float = MAD_MULTIPLE,
         min_pixels: float = MIN_PIXELS) -> pd.DataFrame:
    """The flagged labels, worst first, in label-noise.csv's columns."""
    points = point_residuals(oof)
    points["threshold_px"] = thresholds(points, mad_multiple, min_pixels)
    flagged = points[points["residual_px"] > points["threshold_px"]]
    flagged = flagged.sort_values(["residual_px", "row"], ascending=[False, True])
    return flagged[list(COLUMNS)].reset_index(drop=True)


def flagged_values(flagged: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) into the training keypoints of each flagged label's x and y values;
    a label flagged in both subsets (a complete row's core keypoint) is listed once."""
    position = {name: k for k, name in enumerate(KEYPOINT_NAMES)}
    pairs = {(int(row), position[name]) for row, name in zip(flagged["row"], flagged["keypoint"])}
    rows = np.array([row for row, _ in sorted(pairs) for _ in range(2)], np.int64)
    columns = np.array([2 * k + axis for _, k in sorted(pairs) for axis in (0, 1)], np.int64)
    return rows, columns


def summary(flagged: pd.DataFrame, oof: pd.DataFrame) -> dict:
    """What report.json keeps: counts, and the rule with its constants."""
    labels = len(point_residuals(oof))
    return {
        "flagged": len(flagged), "labels": labels, "rows": int(flagged["row"].nunique()),
        "rule": (f"residual distance > max(median + {MAD_MULTIPLE:g} x 1.4826 x MAD, "
                 f"{MIN_PIXELS:g} px) per keypoint and subset"),
    }
