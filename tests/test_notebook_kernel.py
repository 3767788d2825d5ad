"""notebooks/kaggle.ipynb executed as a user runs it, in a real Jupyter kernel (nbclient and
ipykernel), on a temporary Kaggle tree (KIT_KAGGLE_ROOT) holding a small synthetic competition.

The install cell (tagged `install`: it clones from GitHub and pip-installs) is left out; the
kernel imports this checkout's kit through PYTHONPATH instead. The notebook's settings are
papermill's way: a cell tagged `parameters` holds the user's defaults (PRESET = None, the
hardware's preset), and the test puts a cell after it choosing the quick preset, trained just
long enough to beat the mean face on the synthetic competition (as `papermill -p` would).
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from kit.cli import console
from kit.data import synth, tables
from kit.submit import validate
from tests.conftest import SMALL_NETWORK_FIELDS
from tests.fake_kaggle import isolated_kaggle_home
from tests.helpers import one_device_environment
from tests.test_notebook import kaggle_tree, snapshot

CHECKOUT = Path(__file__).resolve().parents[1]
NOTEBOOK = CHECKOUT / "notebooks" / "kaggle.ipynb"
# quick's network cut to one stage (tests.conftest.SMALL_NETWORK) with the plain dense head,
# 30 epochs, no early stopping: about 2.6 px on this synthetic competition against the mean
# face's 2.9 (soft-argmax needs more epochs).
TEST_OVERRIDES = {"model.head": "dense", **SMALL_NETWORK_FIELDS, "train.epochs": 30,
                  "train.patience": 30}
TEST_PARAMETERS = f'PRESET = "quick"\nOVERRIDES = {TEST_OVERRIDES!r}'
PICTURES = ("curves.png", "keypoint-error.png", "errors-on-face.png", "worst.png",
            "label-noise.png")


def tagged(cell, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def cells_for_the_test(notebook) -> list:
    """The notebook's cells less the install cell, the test's parameters after the user's."""
    cells = []
    for cell in notebook.cells:
        if not tagged(cell, "install"):
            cells.append(cell)
        if tagged(cell, "parameters"):
            cells.append(nbformat.v4.new_code_cell(TEST_PARAMETERS))
    return cells


def outputs(notebook, kind: str) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.get(kind)]


def texts(notebook, mime: str) -> list[str]:
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and mime == "stream":
                found.append(output["text"])
            elif mime in output.get("data", {}):
                found.append(output["data"][mime])
    return found


def mean_keypoint_rmse(data_dir: Path, solution: Path) -> float:
    """The baseline: every asked value answered by that column's training mean."""
    training = tables.load_training(data_dir)
    lookup = tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)
    means = np.nanmean(training.keypoints, axis=0)
    truth = pd.read_csv(solution)["Location"].to_numpy()
    return float(np.sqrt(np.mean((means[lookup.columns] - truth) ** 2)))


def test_the_install_cell_runs_the_installer_that_is_in_the_checkout():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    install = [c for c in notebook.cells if tagged(c, "install")]
    assert len(install) == 1
    installer = "kit/kaggle/kernel_setup.py"
    assert f"/kaggle/temp/kit/{installer}" in install[0].source
    assert (CHECKOUT / installer).is_file()
    parameters = [c for c in notebook.cells if tagged(c, "parameters")]
    assert len(parameters) == 1 and "PRESET = None" in parameters[0].source
    assert len(cells_for_the_test(notebook)) == len(notebook.cells)


@pytest.mark.slow
def test_the_kaggle_notebook_runs_in_a_kernel_and_writes_a_scoring_submission(
        tmp_path, monkeypatch):
    if console.ipywidgets_installed():  # then rich draws live bars into widgets instead
        pytest.skip("ipywidgets is installed: this test is of a notebook without it")
    made = synth.make_competition(tmp_path / "competition", n_train=160, n_test=24, seed=3)
    root = tmp_path / "kaggle"
    kaggle_tree(root, made["archive"], "nested")
    before = snapshot(root / "input")
    isolated_kaggle_home(tmp_path, monkeypatch)  # a notebook without credentials
    environment = {name: value for name, value in one_device_environment().items()
                   if name not in ("KIT_DATA", "KIT_RUNS", "KIT_SUBMISSIONS",
                                   "KAGGLE_KERNEL_RUN_TYPE")}
    environment.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT),
                                                    environment.get("PYTHONPATH")])),
        "KIT_KAGGLE_ROOT": str(root),
        "KAGGLE_KERNEL_RUN_TYPE": "Interactive",  # as Kaggle sets it while editing
    })
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = cells_for_the_test(notebook)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(root / "working")}})
    client.execute(env=environment, cwd=str(root / "working"))

    # The submission Kaggle takes from the notebook's output, better than the mean face.
    written = root / "working" / "submission.csv"
    rmse = validate.score(written, made["solution"])
    baseline = mean_keypoint_rmse(root / "temp" / "kit-data", made["solution"])
    assert np.isfinite(rmse) and rmse < baseline, (rmse, baseline)
    assert snapshot(root / "input") == before

    # The report's tables arrive as HTML; the progress as plain lines, one per epoch.
    html = "\n".join(texts(notebook, "text/html"))
    for title in ("Per fold", "Per keypoint", "leaderboard estimate"):
        assert title in html
    assert "mouth_center_bottom_lip" in html and "<table" in html  # kn.figures' DataFrame
    shown = "\n".join(texts(notebook, "text/plain") + texts(notebook, "stream"))
    assert " epoch 30/30 train " in shown
    # No ANSI codes or frozen bars in what a page shows (rich's text/plain beside its HTML is
    # the fallback for frontends without HTML, coloured as a terminal would be).
    for text in texts(notebook, "stream") + [html]:
        assert "\x1b[" not in text
    assert "whole run" not in shown + html  # the live bars' caption

    # kn.show: each of the run's pictures once, as a PNG.
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs(notebook, "data")
              if "image/png" in o["data"]]
    runs = [p for p in (root / "working" / "cv").iterdir() if not p.is_symlink()]
    assert len(runs) == 1
    run_dir = runs[0]
    assert len(images) == len(PICTURES) == sum((run_dir / n).is_file() for n in PICTURES)
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)

    # No warning reaches the cells (rich warns at every live display without ipywidgets).
    errors = [o["text"] for o in outputs(notebook, "text") if o.get("name") == "stderr"]
    assert not [text for text in errors if "warn" in text.lower()], errors
    assert not outputs(notebook, "ename")
