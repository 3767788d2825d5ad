"""A run's test predictions into Kaggle's submission file and its manifest.

    run folder --kit.runs.predict.predict_test--> (N, 30) and (N, 8) pixel predictions
      (a CV run's fold ensemble, or an ensemble run's weighted members)
      --kit.data.lookup.fill_lookup (IdLookupTable)--> one Location per lookup row
      --write_submission--> submissions/<run-id>-<UTC time>.csv + .json manifest
      --kit.submit.validate--> --kit.submit.ledger.upload--> score --> submissions/ledger.csv

Which model answers a lookup row is kit.data.lookup's rule. Nothing here prints.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kit import config as config_io
from kit.core import fileio, source
from kit.core.errors import KitError
from kit.core.keypoints import CORE_COLUMNS, SUBSET_COLUMNS
from kit.data import tables
from kit.data.lookup import answering_model, fill_lookup
from kit.runs import files
from kit.runs.predict import predict_test
from kit.submit.validate import HEADER, validate

SUBMISSIONS_DIR = Path("submissions")


def csv_bytes(row_ids: np.ndarray, locations: np.ndarray) -> bytes:
    """Kaggle's submission format: RowId,Location, one line a row, 5 decimals."""
    buffer = io.StringIO()
    buffer.write(HEADER + "\n")
    table = np.column_stack([np.asarray(row_ids, np.float64), np.asarray(locations, np.float64)])
    np.savetxt(buffer, table, fmt=("%d", "%.5f"), delimiter=",")
    return buffer.getvalue().encode("ascii")


# ---------------------------------------------------------------- the submission file


@dataclass(frozen=True)
class Submission:
    """A written, validated submission file and what it came from."""

    csv_path: Path
    manifest_path: Path | None
    sha256: str
    rows: int
    run_id: str
    cv_rmse: float | None
    lb_estimate: float | None

    @classmethod
    def from_csv(cls, csv_path: Path, run_id: str = "", cv_rmse: float | None = None,
                 lb_estimate: float | None = None) -> Submission:
        """An existing submission file; its manifest beside it, if any, fills the run fields."""
        csv_path = Path(csv_path)
        try:
            raw = csv_path.read_bytes()
        except OSError as error:
            raise KitError(f"{csv_path}: cannot read the submission ({error.strerror})") from None
        manifest_path = csv_path.with_suffix(".json")
        manifest = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                raise KitError(f"{manifest_path}: not a readable manifest") from None
        else:
            manifest_path = None
        return cls(
            csv_path=csv_path,
            manifest_path=manifest_path,
            sha256=hashlib.sha256(raw).hexdigest(),
            rows=max(len([line for line in raw.splitlines() if line.strip()]) - 1, 0),
            run_id=run_id or manifest.get("run", ""),
            cv_rmse=cv_rmse if cv_rmse is not None else manifest.get("cv_rmse"),
            lb_estimate=lb_estimate if lb_estimate is not None else manifest.get("lb_estimate"),
        )


def _check_run(run_dir: Path, subsets: tuple[str, ...], report: dict) -> dict[str, str]:
    """The run's subsets against its report; the core choice to use."""
    unknown = [s for s in subsets if s not in SUBSET_COLUMNS]
    if unknown or not subsets:
        raise KitError(
            f"{run_dir / 'config.json'}: subsets {', '.join(subsets) or 'none'}; expected 15 "
            "and/or 4"
        )
    reported = set(report.get("subsets", {}))
    if reported != set(subsets):
        raise KitError(
            f"{run_dir / 'report.json'}: reports subsets {', '.join(sorted(reported)) or 'none'} "
            f"but config.json trains {', '.join(subsets)}; expected the same (run `make cv` to "
            "rewrite the report)"
        )
    choice = report.get("core_choice") or {}
    for name, subset in choice.items():
        if name not in CORE_COLUMNS or subset not in subsets:
            raise KitError(
                f"{run_dir / 'report.json'}: core_choice {name}: {subset!r}; expected a core "
                f"column answered by one of the run's models ({', '.join(subsets)})"
            )
    return dict(choice)


def _unused_name(out_dir: Path, stem: str) -> str:
    # Two submissions in the same second get -2, -3, ... rather than overwriting each other.
    name, suffix = stem, 1
    while (out_dir / f"{name}.csv").exists() or (out_dir / f"{name}.json").exists():
        suffix += 1
        name = f"{stem}-{suffix}"
    return name


def write_submission(run_dir: Path, data_dir: Path, out_dir: Path = SUBMISSIONS_DIR,
                     now: datetime | None = None) -> Submission:
    """Predict the test images with a finished CV run and write a validated submission."""
    run_dir = Path(run_dir)
    if not files.is_run(run_dir):
        raise KitError(f"{run_dir}: no CV run there (no config.json); run `make cv` first")
    report = files.read_report(run_dir)
    config = files.read_config(run_dir)
    core_choice = _check_run(run_dir, tuple(config.subsets), report)

    test = tables.load_test(data_dir)
    lookup = tables.load_lookup(data_dir, test.image_ids)
    sample_row_ids = tables.load_sample(data_dir)
    answering_model(lookup, core_choice, config.subsets)  # refuses a run that cannot answer

    predictions = predict_test(run_dir, tuple(config.subsets), test.images, test.image_ids,
                               lookup)
    for subset, values in predictions.items():
        expected = (len(test), len(SUBSET_COLUMNS[subset]))
        if values.shape != expected:
            raise KitError(
                f"{run_dir}: the {subset}-key models predict an array of shape {values.shape} for "
                f"{len(test)} test images; expected {expected}"
            )
    locations = fill_lookup(lookup, test.image_ids, predictions, core_choice)

    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _unused_name(out_dir, f"{run_dir.name}-{now.strftime('%Y%m%d-%H%M%S')}")
    csv_path = out_dir / f"{name}.csv"
    content = csv_bytes(lookup.row_ids, locations)
    fileio.write_bytes(csv_path, content)
    try:
        validate(csv_path, lookup, sample_row_ids)
    except KitError:
        csv_path.unlink(missing_ok=True)  # never leave a file that would be refused
        raise

    sha256 = hashlib.sha256(content).hexdigest()
    cv_rmse = _number(report.get("overall_rmse"))
    lb_estimate = _number((report.get("leaderboard_estimate") or {}).get("rmse"))
    manifest_path = out_dir / f"{name}.json"
    fileio.write_json(manifest_path, {
        "file": csv_path.name,
        "sha256": sha256,
        "rows": len(lookup),
        "created": now.isoformat(timespec="seconds"),
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "cv_rmse": cv_rmse,
        "subset_rmse": {s: _number(e.get("rmse")) for s, e in report.get("subsets", {}).items()},
        "lb_estimate": lb_estimate,
        "core_choice": core_choice,
        "models_by_rows": {
            s: int(n) for s, n in zip(*np.unique(answering_model(lookup, core_choice,
                                                                 config.subsets),
                                                 return_counts=True))
        },
        "members": [member.name for member in files.ensemble_members(run_dir)],  # an ensemble's
        "git_commit": source.commit(),
        "config": config_io.to_dict(config),
    })
    return Submission(csv_path=csv_path, manifest_path=manifest_path, sha256=sha256,
                      rows=len(lookup), run_id=run_dir.name, cv_rmse=cv_rmse,
                      lb_estimate=lb_estimate)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
