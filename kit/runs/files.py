"""The run folder's format: the one reader and writer of each file in cv/<run-id>/.

    config.json            the Config, enough to reproduce the run (written last when a run
                           is made: a folder with it is a run)
    folds.json             each network's rows and their folds (a row's fold is the same in
                           every network), the near-duplicate groups, the data's fingerprint
                           and row count
    folds/<network>-<k>/   checkpoint.npz while training; model.npz, history.json, oof.npz
                           after (a network per subset, "15" and "4", or one "shared")
    engine.json            what each `make cv` call's training cost (kit.runs.cv)
    oof.csv                out-of-fold predictions: row, subset, fold, column, truth, prediction
    teacher.json           a second pass only (kit.results.teacher): what the teacher gave
    ensemble.json          an ensemble run only (kit.results.ensemble): members and weights
    pipeline.json          a pipeline's final run only (kit.recipes.pipeline): its stages' runs
    report.json/.md, *.png written by kit.results.report

Beside the runs, cv/pipelines/<pipeline-id>.json records a pipeline while it runs: the same
record, each stage with its run once it has one, that its final run keeps as pipeline.json.

Every reader refuses a missing or damaged file in one line naming it and what was expected,
so a run folder edited by hand or cut short by a full disk never ends in a traceback.
"""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit import config as config_io
from kit.config import SUBSETS, Config
from kit.core import fileio
from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS

CONFIG = "config.json"
FOLDS = "folds.json"
ENGINE = "engine.json"
OOF = "oof.csv"
TEACHER = "teacher.json"
ENSEMBLE = "ensemble.json"
PIPELINE = "pipeline.json"
PIPELINES = "pipelines"  # under the cv root: the pipelines' records
REPORT_JSON, REPORT_MD = "report.json", "report.md"
HISTORY = "history.json"
MODEL = "model.npz"
FOLD_OOF = "oof.npz"
OOF_COLUMNS = ("row", "subset", "fold", "column", "truth", "prediction")
REMAKE = "run `make cv` to make it again, or start a new run with RESUME=0"


def fold_dir(run_dir: Path, network: str, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"{network}-{fold}"


def is_run(folder: Path) -> bool:
    return (Path(folder) / CONFIG).exists()


def _read_json(path: Path, expected: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KitError(f"{path}: missing; expected {expected}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise KitError(f"{path}: not readable JSON ({error}); expected {expected}") from None


def _mapping(path: Path, data: Any, keys: tuple[str, ...], expected: str) -> dict:
    if not isinstance(data, dict) or any(key not in data for key in keys):
        missing = [key for key in keys if not isinstance(data, dict) or key not in data]
        raise KitError(f"{path}: no {', '.join(missing)}; expected {expected}")
    return data


# ---------------------------------------------------------------- config.json


def read_config(run_dir: Path) -> Config:
    return config_io.load(Path(run_dir) / CONFIG)


def write_config(run_dir: Path, config: Config) -> None:
    fileio.write_json(Path(run_dir) / CONFIG, config_io.to_dict(config))


# ---------------------------------------------------------------- folds.json


FOLDS_EXPECTED = "each network's rows and folds (`networks`) and the data's `training_rows`"


def read_folds(run_dir: Path) -> dict:
    """folds.json, checked: every network's rows and folds are equal-length integer lists."""
    path = Path(run_dir) / FOLDS
    data = _mapping(path, _read_json(path, FOLDS_EXPECTED), ("networks", "training_rows"),
                    FOLDS_EXPECTED)
    if not isinstance(data["networks"], dict) or not isinstance(data["training_rows"], int):
        raise KitError(f"{path}: `networks` or `training_rows` of the wrong kind; expected "
                       f"{FOLDS_EXPECTED}")
    for network, entry in data["networks"].items():
        rows, folds = (entry.get(k) if isinstance(entry, dict) else None for k in ("rows", "fold"))
        if (not isinstance(rows, list) or not isinstance(folds, list) or len(rows) != len(folds)
                or not all(isinstance(v, int) for v in rows + folds)
                or any(not 0 <= r < data["training_rows"] for r in rows)):
            raise KitError(f"{path}: the {network} network's rows and folds are damaged; "
                           f"expected equal-length lists of integers, rows below "
                           f"{data['training_rows']}")
    return data


def write_folds(run_dir: Path, assignment: dict) -> None:
    fileio.write_json(Path(run_dir) / FOLDS, assignment)


# ---------------------------------------------------------------- oof.csv


def read_oof(run_dir: Path) -> pd.DataFrame:
    """oof.csv, checked: its columns, subsets, column indices and finite numbers."""
    path = Path(run_dir) / OOF
    expected = f"a CSV with columns {','.join(OOF_COLUMNS)}"
    try:
        frame = pd.read_csv(path, dtype={"subset": str})
    except FileNotFoundError:
        raise KitError(f"{path}: missing; the run is unfinished (run `make cv` to finish "
                       "it)") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: not readable ({error}); expected {expected}") from None
    if tuple(frame.columns) != OOF_COLUMNS:
        raise KitError(f"{path}: columns {','.join(map(str, frame.columns))}; expected "
                       f"{expected}")
    numbers = frame[["row", "fold", "column", "truth", "prediction"]]
    bad = ~np.isfinite(numbers.apply(pd.to_numeric, errors="coerce").to_numpy(float)).all(axis=1)
    bad |= ~frame["subset"].isin(SUBSETS).to_numpy()
    if not bad.any():
        bad |= ~frame["column"].between(0, len(COLUMNS) - 1).to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise KitError(f"{path}: line {line} is damaged; expected a subset of "
                       f"{', '.join(SUBSETS)}, a column in [0, {len(COLUMNS) - 1}] and finite "
                       "numbers")
    return frame


def write_oof(run_dir: Path, frame: pd.DataFrame) -> None:
    with fileio.atomic_path(Path(run_dir) / OOF) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.5f")


def is_finished(run_dir: Path) -> bool:
    """A run whose networks have all trained: its oof.csv exists."""
    return (Path(run_dir) / OOF).is_file()


# ---------------------------------------------------------------- a fold's files


def read_history(folder: Path) -> dict:
    path = Path(folder) / HISTORY
    expected = "the fold's `history`, `best_epoch` and `best_val_rmse`"
    return _mapping(path, _read_json(path, expected), ("history", "best_val_rmse"), expected)


def write_history(folder: Path, record: dict) -> None:
    fileio.write_json(Path(folder) / HISTORY, record)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch (from 1) of a fold's history with the lowest validation RMSE, among the
    epochs whose end scored the held-out rows (val_rmse None where train.validate_every
    skipped one); None where none was scored."""
    scored = [(entry["val_rmse"], entry["epoch"]) for entry in history
              if entry["val_rmse"] is not None and math.isfinite(entry["val_rmse"])]
    return min(scored)[1] if scored else None


def read_histories(run_dir: Path, networks: tuple[str, ...],
                   folds: int) -> dict[str, list[list[dict]]]:
    """Each network's per-fold epoch histories ([] for a fold not trained yet)."""
    return {network: [read_history(fold_dir(run_dir, network, fold))["history"]
                      if (fold_dir(run_dir, network, fold) / HISTORY).exists() else []
                      for fold in range(folds)]
            for network in networks}


def fold_trained(run_dir: Path, network: str, fold: int) -> bool:
    return (fold_dir(run_dir, network, fold) / FOLD_OOF).exists()


def write_fold_oof(folder: Path, rows: np.ndarray, predictions: np.ndarray) -> None:
    with fileio.atomic_path(Path(folder) / FOLD_OOF) as temporary, open(temporary, "wb") as f:
        np.savez(f, rows=rows, predictions=predictions)


def read_fold_oof(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(folder) / FOLD_OOF
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["rows"], stored["predictions"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise KitError(f"{path}: unreadable ({type(error).__name__}); expected the fold's "
                       f"held-out rows and predictions ({REMAKE})") from None


# ---------------------------------------------------------------- engine.json, teacher.json


def append_engine_call(run_dir: Path, call: dict) -> None:
    """engine.json: what each call's training cost (a resumed run lists each call)."""
    path = Path(run_dir) / ENGINE
    calls = read_engine_calls(run_dir) if path.exists() else []
    fileio.write_json(path, {"calls": calls + [call]})


def read_engine_calls(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / ENGINE
    expected = "the training calls' costs (`calls`)"
    calls = _mapping(path, _read_json(path, expected), ("calls",), expected)["calls"]
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise KitError(f"{path}: `calls` is damaged; expected {expected}")
    return calls


def read_last_engine_call(run_dir: Path) -> dict | None:
    if not (Path(run_dir) / ENGINE).exists():
        return None
    calls = read_engine_calls(run_dir)
    return calls[-1] if calls else None


def write_teacher(run_dir: Path, record: dict) -> None:
    fileio.write_json(Path(run_dir) / TEACHER, record)


def read_teacher(run_dir: Path) -> dict | None:
    path = Path(run_dir) / TEACHER
    if not path.exists():
        return None
    expected = "what the teacher run taught (`teacher`, `pseudo_labels`, `flagged_labels`)"
    return _mapping(path, _read_json(path, expected),
                    ("teacher", "pseudo_labels", "flagged_labels"), expected)


# ---------------------------------------------------------------- ensemble.json


ENSEMBLE_EXPECTED = ("the members' paths (`members`) and weights (make it again with "
                     "`python -m kit ensemble`)")


def is_ensemble(run_dir: Path) -> bool:
    return (Path(run_dir) / ENSEMBLE).exists()


def read_ensemble(run_dir: Path) -> dict:
    path = Path(run_dir) / ENSEMBLE
    data = _mapping(path, _read_json(path, ENSEMBLE_EXPECTED), ("members", "weights"),
                    ENSEMBLE_EXPECTED)
    members = data["members"]
    if (not isinstance(members, list) or not members
            or not all(isinstance(m, dict) and isinstance(m.get("path"), str) for m in members)
            or not isinstance(data["weights"], dict)):
        raise KitError(f"{path}: `members` or `weights` damaged; expected {ENSEMBLE_EXPECTED}")
    return data


def write_ensemble(run_dir: Path, record: dict) -> None:
    fileio.write_json(Path(run_dir) / ENSEMBLE, record)


def ensemble_members(run_dir: Path) -> list[Path]:
    """An ensemble run's member run folders; [] for a CV run. Members are kept relative to
    the ensemble's cv root, so a moved cv folder still works."""
    if not is_ensemble(run_dir):
        return []
    return [(Path(run_dir).parent / member["path"]).resolve()
            for member in read_ensemble(run_dir)["members"]]


def read_weights(run_dir: Path) -> dict:
    """An ensemble's weights: subset -> column name -> member name -> weight."""
    return read_ensemble(run_dir)["weights"]


# ---------------------------------------------------------------- report.json


def has_report(run_dir: Path) -> bool:
    return (Path(run_dir) / REPORT_JSON).exists()


def read_report(run_dir: Path) -> dict:
    path = Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise KitError(f"{run_dir}: the run has no report.json yet; run `make cv` to finish "
                       "it first")
    expected = "the run's figures (run `python -m kit report` to write it again)"
    return _mapping(path, _read_json(path, expected), ("subsets",), expected)


def write_report(run_dir: Path, report: dict, markdown: str) -> None:
    fileio.write_text(Path(run_dir) / REPORT_MD, markdown)
    fileio.write_json(Path(run_dir) / REPORT_JSON, report)


# ---------------------------------------------------------------- pipeline records


PIPELINE_EXPECTED = ("a pipeline's record (`pipeline`, `arguments`, `stages`; start it again "
                     "with --no-resume)")


def pipelines_dir(root: Path) -> Path:
    return Path(root) / PIPELINES


def read_pipeline(path: Path) -> dict:
    """A pipeline record (cv/pipelines/<id>.json, or a final run's pipeline.json)."""
    path = Path(path)
    data = _mapping(path, _read_json(path, PIPELINE_EXPECTED),
                    ("pipeline", "arguments", "stages"), PIPELINE_EXPECTED)
    stages = data["stages"]
    if (not isinstance(stages, list) or not stages
            or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in stages)):
        raise KitError(f"{path}: `stages` damaged; expected {PIPELINE_EXPECTED}")
    return data


def write_pipeline(path: Path, record: dict) -> None:
    fileio.write_json(Path(path), record)


def run_pipeline_record(run_dir: Path) -> dict | None:
    """The pipeline a final run ends, or None for any other run."""
    path = Path(run_dir) / PIPELINE
    return read_pipeline(path) if path.exists() else None
