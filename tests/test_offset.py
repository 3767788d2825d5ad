"""The report's systematic offset: the predictions' mean error in x and y, and the advice a
large one gets (the mirror for x alone, a stack for any)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kit.results import report


def oof_with(dx: float, dy: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(50), 8)
    columns = np.tile([0, 1, 2, 3, 20, 21, 28, 29], 50)
    truth = rng.uniform(20, 70, len(rows))
    noise = rng.normal(0, 0.5, len(rows))
    shift = np.where(columns % 2 == 0, dx, dy)
    return pd.DataFrame({"row": rows, "subset": "4", "column": columns, "fold": rows % 2,
                         "truth": truth, "prediction": truth - shift + noise})


@pytest.mark.parametrize("dx, dy, says", [
    (1.0, 0.0, "move augment.mirror_x (the x a flip keeps in place; 47.5 in every preset) by +1.0"),
    (-0.6, 0.8, "--method stack"),
    (0.05, -0.05, None),
])
def test_a_shared_offset_is_measured_and_large_ones_get_their_remedy(dx, dy, says):
    offset = report.systematic_offset(oof_with(dx, dy))
    assert offset["x"] == pytest.approx(dx, abs=0.1) and offset["y"] == pytest.approx(dy, abs=0.1)
    if says is None:
        assert offset["advice"] is None
    else:
        assert says in offset["advice"]
    if says and abs(dy) > report.OFFSET_WORTH_SAYING:  # in y too: no mirror explains it
        assert "mirror_x" not in offset["advice"]
