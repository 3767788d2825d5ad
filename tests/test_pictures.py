"""The pictures of a CV run: every PNG written, of its expected size, and worst.png showing
the rows with the largest out-of-fold errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from kit.results import faces, plots, report


def test_every_picture_is_a_png_of_its_expected_size(quick_run):
    expected = {
        "curves.png": plots.PIXEL_SIZES["learning_curves"],
        "keypoint-error.png": plots.PIXEL_SIZES["keypoint_error_bars"],
        "errors-on-face.png": plots.PIXEL_SIZES["errors_on_face"],
        "worst.png": faces.worst_cases_pixel_size(16),
    }
    assert set(expected) == set(report.PICTURES)
    for name, size in expected.items():
        with Image.open(quick_run / name) as picture:
            assert picture.format == "PNG", name
            assert picture.size == size, name
            assert len(np.unique(np.asarray(picture.convert("L")))) > 10, f"{name} is blank"
    markdown = (quick_run / "report.md").read_text()
    for name in expected:
        assert f"]({name})" in markdown


def test_worst_png_shows_the_rows_with_the_largest_oof_errors(quick_run, training):
    oof = pd.read_csv(quick_run / "oof.csv", dtype={"subset": str})
    # Each row's values from the 15-key model where it has the row, else the 4-key model.
    chosen = oof[(oof["subset"] == "15") | ~oof["row"].isin(oof.loc[oof["subset"] == "15", "row"])]
    squared = (chosen["prediction"] - chosen["truth"]) ** 2
    per_row = np.sqrt(squared.groupby(chosen["row"]).mean()).sort_values(ascending=False)
    shown = json.loads((quick_run / "report.json").read_text())["worst_rows"]
    assert len(shown) == 16
    assert shown == list(per_row.index[:16])
