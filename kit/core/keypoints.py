"""The competition's keypoint vocabulary: column order, the 4 core keypoints, left/right pairs."""
from __future__ import annotations

import numpy as np

IMAGE_SIZE = 96
PIXELS = IMAGE_SIZE * IMAGE_SIZE

# Kaggle's column order in training.csv; every (N, 30) array in the kit follows it.
KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
COLUMNS: tuple[str, ...] = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in "xy")
COLUMN_INDEX: dict[str, int] = {column: i for i, column in enumerate(COLUMNS)}

# The keypoints that every row of the second annotation source carries.
CORE_KEYPOINTS: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "nose_tip",
    "mouth_center_bottom_lip",
)
CORE_COLUMNS: tuple[str, ...] = tuple(f"{name}_{axis}" for name in CORE_KEYPOINTS for axis in "xy")
CORE_COLUMN_INDICES = np.array([COLUMN_INDEX[c] for c in CORE_COLUMNS])

# Subset name -> the columns its model predicts, in Kaggle's order.
SUBSET_COLUMNS: dict[str, tuple[str, ...]] = {"15": COLUMNS, "4": CORE_COLUMNS}


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[len("left_"):]
    if name.startswith("right_"):
        return "left_" + name[len("right_"):]
    # "mouth_left_corner" has its side in the middle.
    if "_left_" in name:
        return name.replace("_left_", "_right_")
    if "_right_" in name:
        return name.replace("_right_", "_left_")
    return name


# A face seen in a mirror: the person's left eye becomes the right one.
MIRROR_NAME: dict[str, str] = {name: _mirror_name(name) for name in KEYPOINT_NAMES}


def flip_permutation(columns: tuple[str, ...]) -> np.ndarray:
    """Index array p such that values[..., p] relabels a mirrored face's columns."""
    index = {c: i for i, c in enumerate(columns)}
    return np.array([index[MIRROR_NAME[c[:-2]] + c[-2:]] for c in columns])
