"""Where the kit reads and writes: this checkout's data/, cv/ and submissions/ on a laptop; on
Kaggle (a notebook, or a kernel pushed by `cv --remote kaggle`) the competition at
/kaggle/input, parsed caches in scratch space and runs in /kaggle/working, which Kaggle saves.

The one seam for tests: KIT_KAGGLE_ROOT (default /kaggle) moves the whole Kaggle tree, so a
temporary folder with input/facial-keypoints-detection/, working/ and temp/ stands for it.
Every answer is computed when asked (never at import), so a test can set the variable late.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kit.config import COMPETITION

ROOT_VARIABLE = "KIT_KAGGLE_ROOT"
SUBMISSION_FILE = "submission.csv"  # what a Kaggle notebook submits from its output


def kaggle_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE) or "/kaggle")


def competition_input() -> Path | None:
    """The competition's read-only folder as Kaggle mounts it, or None off Kaggle."""
    root = kaggle_root() / "input"
    # Kaggle mounts an attached competition at input/<slug>; newer images also nest it.
    for folder in (root / COMPETITION, root / "competitions" / COMPETITION):
        if folder.is_dir():
            return folder
    return None


def on_kaggle() -> bool:
    """In a Kaggle notebook or kernel: Kaggle sets KAGGLE_KERNEL_RUN_TYPE in both (Interactive
    while editing, Batch in a saved run); a competition mounted at input/ says it as well."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or competition_input() is not None


def working_dir() -> Path:
    return kaggle_root() / "working"


def scratch_dir() -> Path:
    """Space Kaggle does not save as output: /kaggle/temp when it is there, else the temp dir."""
    temp = kaggle_root() / "temp"
    if temp.is_dir() and os.access(temp, os.W_OK):
        return temp
    return Path(tempfile.gettempdir()) / "kit"


def notebook_data_dir() -> Path:
    """The competition's CSVs and parsed caches on Kaggle: scratch, never /kaggle/working."""
    return scratch_dir() / "kit-data"


def default_data_dir() -> Path:
    if os.environ.get("KIT_DATA"):
        return Path(os.environ["KIT_DATA"])
    return notebook_data_dir() if on_kaggle() else Path("data")


def default_runs_dir() -> Path:
    if os.environ.get("KIT_RUNS"):
        return Path(os.environ["KIT_RUNS"])
    return working_dir() / "cv" if on_kaggle() else Path("cv")


def default_submissions_dir() -> Path:
    if os.environ.get("KIT_SUBMISSIONS"):
        return Path(os.environ["KIT_SUBMISSIONS"])
    return working_dir() / "submissions" if on_kaggle() else Path("submissions")


def notebook_submission_path() -> Path:
    return working_dir() / SUBMISSION_FILE


# ---------------------------------------------------------------- a Kaggle notebook's outputs


def publish_submission(csv_path: Path) -> Path | None:
    """On Kaggle, copy a written submission to /kaggle/working/submission.csv (the file a
    notebook submits); None elsewhere."""
    if not on_kaggle():
        return None
    from kit.core import fileio

    target = notebook_submission_path()
    return fileio.write_bytes(target, Path(csv_path).read_bytes())


def can_upload() -> bool:
    """Whether the kaggle client has credentials here (a notebook usually has none)."""
    from kit.kaggle import client

    return client.credentials_source() is not None
