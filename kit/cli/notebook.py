"""The kit from a notebook's cells (a Kaggle notebook above all), the CLI's verbs as functions:

    import kit.cli.notebook as kn
    run = kn.cv(preset="default")        # k-fold CV; progress and report render in the cell
    kn.show(run)                         # the report's tables again, and its pictures inline
    kn.figures(run)["per_keypoint"]      # the report's figures as pandas DataFrames
    kn.submit(run)                       # /kaggle/working/submission.csv (+ upload if allowed)

notebooks/kaggle.ipynb is these cells with the install step in front of them.
On Kaggle the competition comes from /kaggle/input, caches go to scratch and runs to
/kaggle/working/cv (see kit/kaggle/places.py); elsewhere the same calls use data/, cv/, submissions/.
Each call runs the CLI's own code, so a notebook sees what `python -m kit VERB` prints (in
Jupyter as HTML tables; progress as plain lines where ipywidgets is absent, see
kit/cli/display.py); a problem raises KitError (its message is the CLI's one line).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kit.core.errors import KitError
from kit.kaggle import places
from kit.runs import folders

if TYPE_CHECKING:
    import pandas as pd


def _run(*argv: str) -> None:
    from kit.cli import main as cli

    # --debug: the KitError reaches the cell (as an exception) instead of a return code.
    if cli.main(["--debug", *argv]) != 0:
        raise KitError(f"`python -m kit {' '.join(argv)}` failed; see the lines above")


def _run_dir(run: str | Path | None) -> Path:

    return folders.resolve_run(places.default_runs_dir(), None if run is None else str(run))


def data() -> None:
    """Summary of the competition's files."""
    _run("data")


def devices() -> None:
    """What this machine trains on (devices, versions) and what `cv` would do here."""
    _run("devices")


def cv(preset: str | None = None, *, folds: int | None = None, seed: int | None = None,
       epochs: int | None = None, overrides: dict | None = None, resume: bool = True,
       allow_cpu: bool = False) -> Path:
    """A k-fold CV run (as `python -m kit cv`); returns its folder. `overrides` sets any config
    field, e.g. {"train.learning_rate": 0.002}. Without a preset, the one for the hardware.
    allow_cpu: train on the CPU even where an NVIDIA GPU is there that jax cannot use."""
    argv = ["cv"] + (["--preset", preset] if preset else [])
    argv += ["--allow-cpu"] if allow_cpu else []
    for flag, value in (("--folds", folds), ("--seed", seed), ("--epochs", epochs)):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in (overrides or {}).items():
        argv += ["--set", f"{key}={value}"]
    if not resume:
        argv.append("--no-resume")
    _run(*argv)
    return _run_dir(None)


def show(run: str | Path | None = None) -> None:
    """A run's report as tables (default: the latest run); in a Jupyter kernel its pictures
    too, inline. A plain Python process prints the tables only."""
    _run("show", *([str(run)] if run is not None else []))
    from kit.cli.main import console

    if not console.is_jupyter:
        return
    from IPython.display import Image, display

    for path in pictures(run):
        display(Image(filename=str(path)))


def pictures(run: str | Path | None = None) -> list[Path]:
    """The run's pictures that exist, in the report's order: learning curves (not in an
    ensemble), per-keypoint error, errors on the mean face, worst faces, label noise."""
    from kit.results import report

    run_dir = _run_dir(run)
    names = (*report.PICTURES, report.LABEL_NOISE_PNG)
    return [run_dir / name for name in names if (run_dir / name).is_file()]


def figures(run: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The report's figures as DataFrames, read from the run's report.json (see
    report_tables)."""
    from kit.runs import files

    return report_tables(files.read_report(_run_dir(run)))


def report_tables(result: dict) -> dict[str, pd.DataFrame]:
    """report.json's figures as tables, RMSE in pixels: "summary" (one row a measure),
    "per_fold" (a row per subset, a column per fold, then mean and spread) and
    "per_keypoint" (a row per keypoint, a column per subset; NaN where a model has none)."""
    import pandas as pd

    from kit.core.keypoints import KEYPOINT_NAMES

    subsets = result["subsets"]
    summary = {"OOF, all values": result["overall_rmse"]}
    summary.update({f"OOF, {s}-key model": e["rmse"] for s, e in subsets.items()})
    summary["leaderboard estimate"] = result["leaderboard_estimate"].get("rmse")
    per_fold = pd.DataFrame(
        {s: {**{f"fold {int(f)}": v for f, v in e["per_fold"].items()},
             "mean": e["fold_mean"], "spread": e["fold_std"]} for s, e in subsets.items()}
    ).T.rename_axis("subset")
    per_keypoint = pd.DataFrame(
        {f"{s}-key": pd.Series(e["per_keypoint"], dtype=float) for s, e in subsets.items()}
    ).reindex(list(KEYPOINT_NAMES)).rename_axis("keypoint")
    return {
        "summary": pd.Series(summary, dtype=float, name="RMSE (px)").rename_axis(
            "measure").to_frame(),
        "per_fold": per_fold,
        "per_keypoint": per_keypoint,
    }


def report(run: str | Path | None = None) -> None:
    """Rewrite a run's report and pictures."""
    _run("report", *([str(run)] if run is not None else []))


def submit(run: str | Path | None = None, *, upload: bool = True,
           message: str | None = None) -> Path:
    """Predict the test set with a run's fold models and write the submission; on Kaggle also
    /kaggle/working/submission.csv, uploaded only when credentials are set up. Returns the path
    the notebook submits (on Kaggle) or the written file."""
    argv = ["submit", *([str(run)] if run is not None else [])]
    argv += [] if upload else ["--dry-run"]
    argv += ["--message", message] if message else []
    _run(*argv)
    if places.on_kaggle():
        return places.notebook_submission_path()
    written = sorted(places.default_submissions_dir().glob("*.csv"),
                     key=lambda path: path.stat().st_mtime)
    return written[-1]
