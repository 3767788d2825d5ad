"""Validation of a submission file against the lookup table, and its score against a
solution file (the practice and synthetic competitions, whose truth is known).

Everything Kaggle would reject or misread is refused in one line naming the file, the line and
what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.core.errors import KitError
from kit.core.keypoints import IMAGE_SIZE
from kit.data.tables import LookupTable

HEADER = "RowId,Location"


def validate(locations_csv_path: Path, lookup: LookupTable, sample_row_ids: np.ndarray) -> None:
    """Refuse a submission file Kaggle would reject or misread: one-line KitError otherwise."""
    path = Path(locations_csv_path)
    if not np.array_equal(np.asarray(sample_row_ids), lookup.row_ids):
        raise KitError(
            f"SampleSubmission.csv's {len(sample_row_ids)} RowIds differ from IdLookupTable.csv's "
            f"{len(lookup)}; expected the same RowIds in the same order (run `make download`)"
        )
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise KitError(f"{path}: cannot read ({error.strerror})") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KitError(f"{path}: not plain ASCII text; expected a CSV of numbers") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [line.removesuffix("\r") for line in lines]
    if not lines or lines[0] != HEADER:
        found = repr(lines[0][:40]) if lines else "nothing"
        raise KitError(f"{path}: line 1 is {found}; expected the header exactly {HEADER}")
    body = lines[1:]
    fields = [line.split(",") for line in body]
    bad_shape = [i for i, parts in enumerate(fields) if len(parts) != 2]
    if bad_shape:
        i = bad_shape[0]
        raise KitError(f"{path}: line {i + 2} is {body[i][:40]!r}; expected RowId,Location")
    row_text = pd.Series([parts[0] for parts in fields], dtype=object)
    location_text = pd.Series([parts[1] for parts in fields], dtype=object)
    row_ids = _row_ids(path, row_text)
    _check_rows(path, row_ids, lookup.row_ids)
    _check_locations(path, location_text)


def _row_ids(path: Path, row_text: pd.Series) -> np.ndarray:
    values = pd.to_numeric(row_text.str.strip(), errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values) | (values != np.round(values)) | (values < 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise KitError(
            f"{path}: line {i + 2}: RowId {row_text.iloc[i]!r}; expected an integer >= 1"
        )
    return values.astype(np.int64)


def _check_rows(path: Path, row_ids: np.ndarray, expected: np.ndarray) -> None:
    repeated = np.ones(len(row_ids), bool)
    repeated[np.unique(row_ids, return_index=True)[1]] = False  # first sightings are fine
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        earlier = int(np.flatnonzero(row_ids == row_ids[i])[0])
        raise KitError(
            f"{path}: line {i + 2}: RowId {row_ids[i]} again (first on line {earlier + 2}); "
            "expected each RowId once"
        )
    extra = ~np.isin(row_ids, expected)
    if extra.any():
        i = int(np.flatnonzero(extra)[0])
        raise KitError(
            f"{path}: line {i + 2}: RowId {row_ids[i]} is not in IdLookupTable.csv; expected "
            f"only its {len(expected)} RowIds"
        )
    missing = ~np.isin(expected, row_ids)
    if missing.any():
        k = int(np.flatnonzero(missing)[0])
        raise KitError(
            f"{path}: line {k + 2}: RowId {expected[k]} is missing ({missing.sum()} missing, "
            f"{len(row_ids)} rows); expected all {len(expected)} RowIds of IdLookupTable.csv"
        )
    out_of_order = row_ids != expected
    if out_of_order.any():
        i = int(np.flatnonzero(out_of_order)[0])
        raise KitError(
            f"{path}: line {i + 2}: RowId {row_ids[i]}; expected {expected[i]} (rows in "
            "IdLookupTable.csv's order)"
        )


def _check_locations(path: Path, location_text: pd.Series) -> None:
    stripped = location_text.str.strip()
    values = pd.to_numeric(stripped, errors="coerce").to_numpy(np.float64)
    # to_numeric reads "nan" and "" as NaN and "inf" as infinity: all of them are refused.
    bad = ~np.isfinite(values) | (values < 0) | (values > IMAGE_SIZE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "a finite number" if not np.isfinite(values[i]) else "a number"
        raise KitError(
            f"{path}: line {i + 2}: Location {location_text.iloc[i]!r}; expected {kind} "
            f"in [0, {IMAGE_SIZE}]"
        )


def score(submission_csv: Path, solution_csv: Path) -> float:
    """Leaderboard-style RMSE of a submission against a solution file (RowId,Location), for
    the practice and synthetic competitions whose truth is known."""
    def read(path: Path) -> pd.DataFrame:
        try:
            table = pd.read_csv(path, dtype={"RowId": np.int64, "Location": np.float64})
        except (OSError, ValueError) as error:
            raise KitError(f"{path}: not a RowId,Location table ({error})") from None
        if list(table.columns) != ["RowId", "Location"]:
            raise KitError(f"{path}: header {','.join(table.columns)}; expected RowId,Location")
        return table

    sub, sol = read(Path(submission_csv)), read(Path(solution_csv))
    if len(sub) != len(sol) or not np.array_equal(sub["RowId"], sol["RowId"]):
        raise KitError(f"{submission_csv}: its RowIds differ from {solution_csv}'s; expected "
                       "the same RowIds in the same order")
    return float(np.sqrt(np.mean((sub["Location"] - sol["Location"]) ** 2)))
