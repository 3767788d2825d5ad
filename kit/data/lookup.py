"""The lookup table's rules: which block a test face is in, and which model answers each row.

Kaggle's IdLookupTable.csv asks all 30 values (or nearly) of some test faces and only the 8
core values of the others. Faces asked more than the 8 ("full" block) come from the first
annotation source, the others ("core") from the second: so the 15-key model answers the full
block, except for the core values where the OOF evidence favours the 4-key model (core_choice),
and the 4-key model, trained on their source, answers the core block. A test face of a block
teaches (as a pseudo-label) the head of BLOCK_SUBSET[block]. The report's leaderboard
estimate, the submission and the teacher all call these rules.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kit.core.errors import KitError
from kit.core.keypoints import (
    COLUMN_INDEX,
    COLUMNS,
    CORE_COLUMN_INDICES,
    CORE_COLUMNS,
    IMAGE_SIZE,
    SUBSET_COLUMNS,
)
from kit.data.tables import LookupTable

# The subset whose model answers (and whose head a pseudo-label teaches) each block's faces.
BLOCK_SUBSET = {"full": "15", "core": "4"}


def lookup_blocks(lookup: LookupTable) -> np.ndarray:
    """'full' for rows of images asked more than the 8 core values, else 'core'."""
    asked = pd.Series(lookup.image_ids).map(pd.Series(lookup.image_ids).value_counts())
    return np.where(asked.to_numpy() > len(CORE_COLUMN_INDICES), "full", "core")


def image_blocks(lookup: LookupTable, image_ids: np.ndarray) -> np.ndarray:
    """Each test face's lookup block: 'full', 'core', or '' where the table asks nothing."""
    block_of = dict(zip(lookup.image_ids.tolist(), lookup_blocks(lookup).tolist()))
    return np.array([block_of.get(int(i), "") for i in image_ids], dtype=object)


def oof_mse(frame: pd.DataFrame) -> float:
    """Mean squared error of OOF lines (truth, prediction); NaN for none."""
    if len(frame) == 0:
        return float("nan")
    return float(np.mean((frame["prediction"] - frame["truth"]) ** 2))


def core_choice(oof: pd.DataFrame, complete_rows: np.ndarray) -> dict[str, str]:
    """For each core column, the model with the lower OOF error on the rows both predicted."""
    choice = {}
    in_complete = oof["row"].isin(complete_rows)
    for column in CORE_COLUMN_INDICES:
        errors = {}
        for subset in ("15", "4"):
            part = oof[(oof["subset"] == subset) & (oof["column"] == column) & in_complete]
            errors[subset] = oof_mse(part) if len(part) else float("inf")
        if np.isfinite(min(errors.values())):
            choice[COLUMNS[column]] = min(errors, key=errors.get)
    return choice


# Position of each of the 30 columns in the 4-key model's output, -1 where it has none.
_CORE_POSITION = np.full(len(COLUMNS), -1)
_CORE_POSITION[[COLUMN_INDEX[c] for c in CORE_COLUMNS]] = np.arange(len(CORE_COLUMNS))


# ---------------------------------------------------------------- filling the lookup table


def answering_model(lookup: LookupTable, core_choice: dict[str, str],
                    subsets: tuple[str, ...] | list[str] = ("15", "4")) -> np.ndarray:
    """'15' or '4' for each lookup row: the model whose prediction fills it.

    'full' images: the 15-key model, or the 4-key one for a core column where core_choice
    says "4". 'core' images: the 4-key model for core columns, the 15-key one for any other.
    A model missing from `subsets` is replaced by the other where it can answer the column
    (the 4-key model answers only the 8 core columns).
    """
    is_core_column = _CORE_POSITION[lookup.columns] >= 0
    chose_four = np.array([core_choice.get(name, "15") == "4" for name in COLUMNS])
    full = lookup_blocks(lookup) == "full"
    use_four = is_core_column & np.where(full, chose_four[lookup.columns], True)
    if "4" not in subsets:
        use_four[:] = False
    if "15" not in subsets:
        needs_fifteen = ~is_core_column
        if needs_fifteen.any():
            row = int(np.flatnonzero(needs_fifteen)[0])
            raise KitError(
                f"the lookup table asks {COLUMNS[lookup.columns[row]]} (ImageId "
                f"{lookup.image_ids[row]}, RowId {lookup.row_ids[row]}) but the run has only "
                "a 4-key model; expected a run with subsets 15 (or 15,4)"
            )
        use_four[:] = True
    return np.where(use_four, "4", "15")


def fill_lookup(lookup: LookupTable, image_ids: np.ndarray, predictions: dict[str, np.ndarray],
                core_choice: dict[str, str]) -> np.ndarray:
    """The Location of every lookup row, in the lookup's order, clipped to [0, 96].

    predictions["15"]: (N, 30) in COLUMNS order; predictions["4"]: (N, 8) in CORE_COLUMNS
    order; rows aligned with image_ids (the test ImageIds). Either may be absent (see
    answering_model). Non-finite values that would be used are refused.
    """
    image_ids = np.asarray(image_ids)
    for subset, values in predictions.items():
        expected = (len(image_ids), len(SUBSET_COLUMNS.get(subset, ())))
        if subset not in SUBSET_COLUMNS or np.shape(values) != expected:
            raise KitError(
                f"{subset}-key predictions have shape {np.shape(values)}; expected {expected} "
                f"(test images x the model's columns)"
            )
    if not predictions:
        raise KitError("no predictions to fill the lookup table with; expected a 15- or 4-key "
                       "model's")
    positions = _image_positions(lookup, image_ids)
    model = answering_model(lookup, core_choice, tuple(predictions))
    locations = np.empty(len(lookup), np.float64)
    for subset, values in predictions.items():
        rows = model == subset
        columns = lookup.columns[rows] if subset == "15" else _CORE_POSITION[lookup.columns[rows]]
        locations[rows] = np.asarray(values, np.float64)[positions[rows], columns]
    bad = ~np.isfinite(locations)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise KitError(
            f"the {model[row]}-key model predicts {locations[row]} for ImageId "
            f"{lookup.image_ids[row]}, {COLUMNS[lookup.columns[row]]} (RowId "
            f"{lookup.row_ids[row]}); expected a finite number (did training diverge?)"
        )
    return np.clip(locations, 0.0, float(IMAGE_SIZE))


def _image_positions(lookup: LookupTable, image_ids: np.ndarray) -> np.ndarray:
    """Index into image_ids of each lookup row's ImageId."""
    if len(image_ids) == 0:
        raise KitError("no test images to predict; expected the ImageIds of test.csv")
    order = np.argsort(image_ids, kind="stable")
    found = np.searchsorted(image_ids, lookup.image_ids, sorter=order)
    positions = order[np.minimum(found, len(image_ids) - 1)]
    missing = image_ids[positions] != lookup.image_ids
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise KitError(
            f"the lookup table asks ImageId {lookup.image_ids[row]} (RowId "
            f"{lookup.row_ids[row]}) but there is no prediction for it; expected one of the "
            f"{len(image_ids)} test ImageIds"
        )
    return positions
