"""The kit from a notebook's cells (a Kaggle notebook above all), the CLI's verbs as functions:

    import kit.cli.notebook as kn
    run = kn.cv(preset="default")        # k-fold CV; progress and report render in the cell
    kn.show(run)                         # the report's tables again
    kn.submit(run)                       # /kaggle/working/submission.csv (+ upload if allowed)

On Kaggle the competition comes from /kaggle/input, caches go to scratch and runs to
/kaggle/working/cv (see kit/kaggle/places.py); elsewhere the same calls use data/, cv/, submissions/.
Each call runs the CLI's own code, so a notebook sees what `python -m kit VERB` prints; a
problem raises KitError (its message is the CLI's one line).
"""
from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.kaggle import places
from kit.runs import folders


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


def cv(preset: str | None = None, *, folds: int | None = None, seed: int | None = None,
       epochs: int | None = None, overrides: dict | None = None, resume: bool = True) -> Path:
    """A k-fold CV run (as `python -m kit cv`); returns its folder. `overrides` sets any config
    field, e.g. {"train.learning_rate": 0.002}. Without a preset, the one for the hardware."""
    argv = ["cv"] + (["--preset", preset] if preset else [])
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
    """A run's report as tables (default: the latest run)."""
    _run("show", *([str(run)] if run is not None else []))


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
