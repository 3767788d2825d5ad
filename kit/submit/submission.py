"""Test predictions to Kaggle's submission file, its manifest, the upload and the ledger.

    run folder --ensemble.predict_run per subset--> (N, 30) and (N, 8) pixel predictions
      (a CV run's fold ensemble, or an ensemble run's weighted members: kit.results.ensemble)
      --fill_lookup (IdLookupTable)--> one Location per lookup row
      --write_submission--> submissions/<run-id>-<UTC time>.csv + .json manifest --validate-->
      --upload (kaggle_io)--> score --> submissions/ledger.csv

Which model answers a lookup row: images asked more than the 8 core values ("full" images,
the first annotation source) get the 15-key model, except for the core values where the run's
report chose the 4-key model on OOF evidence; the other ("core") images get the 4-key model,
which was trained on their annotation source. Nothing here prints.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit import config as config_io
from kit.config import COMPETITION
from kit.core import fileio
from kit.core.errors import KitError
from kit.core.keypoints import COLUMN_INDEX, COLUMNS, CORE_COLUMNS, IMAGE_SIZE, SUBSET_COLUMNS
from kit.data import tables
from kit.data.tables import LookupTable
from kit.kaggle import client
from kit.results import ensemble
from kit.results.report import image_blocks, lookup_blocks
from kit.runs.folders import ensemble_members

HEADER = "RowId,Location"
SUBMISSIONS_DIR = Path("submissions")
LEDGER_NAME = "ledger.csv"
LEDGER_COLUMNS = (
    "time", "run", "file", "sha256", "cv_rmse", "lb_estimate", "uploaded", "ref", "status",
    "public_score", "private_score", "message",
)
# The columns a score refresh may fill, and only in rows still PENDING.
SCORE_COLUMNS = ("status", "public_score", "private_score")
NUMERIC_LEDGER_COLUMNS = ("cv_rmse", "lb_estimate", "public_score", "private_score")
PENDING = "PENDING"

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


def csv_bytes(row_ids: np.ndarray, locations: np.ndarray) -> bytes:
    """Kaggle's submission format: RowId,Location, one line a row, 5 decimals."""
    buffer = io.StringIO()
    buffer.write(HEADER + "\n")
    table = np.column_stack([np.asarray(row_ids, np.float64), np.asarray(locations, np.float64)])
    np.savetxt(buffer, table, fmt=("%d", "%.5f"), delimiter=",")
    return buffer.getvalue().encode("ascii")


# ---------------------------------------------------------------- validation


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


def _load_report(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not path.is_file():
        raise KitError(
            f"{run_dir}: the run has no report.json yet; run `make cv` to finish it first"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KitError(f"{path}: not a readable report ({error}); run `make cv` again") from None


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


def git_commit(folder: Path | None = None) -> str | None:
    """The commit the kit's source is at, or None outside a git checkout."""
    folder = folder or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def _unused_name(out_dir: Path, stem: str) -> str:
    # Two submissions in the same second get -2, -3, ... rather than overwriting each other.
    name, suffix = stem, 1
    while (out_dir / f"{name}.csv").exists() or (out_dir / f"{name}.json").exists():
        suffix += 1
        name = f"{stem}-{suffix}"
    return name


def write_submission(run_dir: Path, data_dir: Path, out_dir: Path = SUBMISSIONS_DIR,
                     now: datetime | None = None,
                     on_model: Callable[[int], None] | None = None) -> Submission:
    """Predict the test images with a finished CV run and write a validated submission."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise KitError(f"{run_dir}: no CV run there (no config.json); run `make cv` first")
    report = _load_report(run_dir)
    config = config_io.load(run_dir / "config.json")
    core_choice = _check_run(run_dir, tuple(config.subsets), report)

    test = tables.load_test(data_dir)
    lookup = tables.load_lookup(data_dir, test.image_ids)
    sample_row_ids = tables.load_sample(data_dir)
    answering_model(lookup, core_choice, config.subsets)  # refuses a run that cannot answer

    # Faces the lookup table asks all values of come from the full annotation source: their
    # 4-key values must be made as the OOF evidence behind core_choice and blends made them.
    full = image_blocks(lookup, test.image_ids) == "full"
    predictions = {}
    for subset in config.subsets:
        values = np.asarray(ensemble.predict_run(run_dir, subset, test.images,
                                                 on_model=on_model, full=full))
        expected = (len(test), len(SUBSET_COLUMNS[subset]))
        if values.shape != expected:
            raise KitError(
                f"{run_dir}: the {subset}-key models predict an array of shape {values.shape} for "
                f"{len(test)} test images; expected {expected}"
            )
        predictions[subset] = values
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
        "members": [member.name for member in ensemble_members(run_dir)],  # an ensemble's
        "git_commit": git_commit(),
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


# ---------------------------------------------------------------- the ledger


def ledger_path(out_dir: Path = SUBMISSIONS_DIR) -> Path:
    return Path(out_dir) / LEDGER_NAME


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    # One line a row, whatever a server's message holds: a newline inside a field would be
    # valid CSV but breaks the line-by-line rewrite below.
    return " ".join(str(value).split())


def _line(row: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_cell(row.get(c)) for c in LEDGER_COLUMNS])
    return buffer.getvalue()


def _ledger_lines(path: Path) -> list[str]:
    """The ledger's lines with their newlines; [] when it does not exist."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: cannot read the ledger ({error})") from None
    if not text:
        return []
    lines = text.splitlines(keepends=True)
    if lines[0].rstrip("\r\n") != ",".join(LEDGER_COLUMNS):
        raise KitError(
            f"{path}: line 1 is {lines[0].strip()[:60]!r}; expected the ledger header "
            f"{','.join(LEDGER_COLUMNS)}"
        )
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def append_ledger(path: Path, row: dict[str, Any]) -> None:
    """Add one row; earlier rows stay byte-identical. The whole file is rewritten to a
    temporary name and renamed, so a crash leaves the old ledger or the new one, never half a
    row."""
    path = Path(path)
    unknown = sorted(set(row) - set(LEDGER_COLUMNS))
    if unknown:
        raise KitError(f"ledger row has unknown columns {', '.join(unknown)}; expected "
                       f"{','.join(LEDGER_COLUMNS)}")
    lines = _ledger_lines(path) or [",".join(LEDGER_COLUMNS) + "\n"]
    fileio.write_text(path, "".join(lines) + _line(row))


def update_ledger_scores(path: Path, updates: dict[Any, dict[str, Any]]) -> int:
    """Fill status and scores of PENDING rows, keyed by ref (or, for a row without a ref, by
    its file name); other rows and other columns stay byte-identical. Returns rows changed."""
    path = Path(path)
    lines = _ledger_lines(path)
    keys = {str(key): value for key, value in updates.items()}
    changed = 0
    for number, line in enumerate(lines[1:], start=1):
        cells = next(csv.reader([line]))
        if len(cells) != len(LEDGER_COLUMNS):
            raise KitError(f"{path}: line {number + 1} has {len(cells)} fields; expected "
                           f"{len(LEDGER_COLUMNS)}")
        row = dict(zip(LEDGER_COLUMNS, cells))
        if row["status"] != PENDING:
            continue
        update = keys.get(row["ref"]) if row["ref"] else keys.get(Path(row["file"]).name)
        if update is None or update.get("status", PENDING) == PENDING:
            continue
        for column in SCORE_COLUMNS:
            if column in update:
                row[column] = update[column]
        lines[number] = _line(row)
        changed += 1
    if changed:
        fileio.write_text(path, "".join(lines))
    return changed


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as a table (scores as floats, NaN where empty); empty when there is none."""
    path = Path(path)
    if not _ledger_lines(path):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: not a readable ledger ({str(error).splitlines()[0]})") from None
    for column in NUMERIC_LEDGER_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


# ---------------------------------------------------------------- upload and scores


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def upload(submission: Submission, message: str, ledger_path: Path, timeout: float = 300,
           poll: float = 10, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic,
           competition: str = COMPETITION) -> dict[str, Any]:
    """Submit the file, wait up to `timeout` s for its score, record it in the ledger.

    A refused upload is recorded (uploaded=no, message = the reason) and re-raised; the file
    is kept. A score that is not ready in time leaves status PENDING for refresh_ledger.
    """
    row: dict[str, Any] = {
        "time": _utc_now(), "run": submission.run_id, "file": str(submission.csv_path),
        "sha256": submission.sha256, "cv_rmse": submission.cv_rmse,
        "lb_estimate": submission.lb_estimate,
    }
    try:
        raw = Path(submission.csv_path).read_bytes()
    except OSError as error:
        raise KitError(f"{submission.csv_path}: cannot read the submission "
                       f"({error.strerror})") from None
    if hashlib.sha256(raw).hexdigest() != submission.sha256:
        raise KitError(f"{submission.csv_path}: changed since it was written and validated "
                       "(sha256 differs from its manifest); write it again")
    try:
        ref = client.submit(submission.csv_path, message, competition)
    except KitError as error:
        append_ledger(ledger_path, {**row, "uploaded": "no", "message": str(error)})
        raise
    # submit returns Kaggle's message when no ref came back: then find it by file name.
    ref = ref if str(ref).isdigit() else ""
    row.update(uploaded="yes", ref=ref, status=PENDING, message=message)
    try:
        result = client.wait_for_score(ref or Path(submission.csv_path).name, competition,
                                          timeout=timeout, poll=poll, clock=clock, sleep=sleep)
    except KitError as error:
        append_ledger(ledger_path, row)
        raise KitError(
            f"{submission.csv_path.name} was submitted{f' (ref {ref})' if ref else ''} but its "
            f"score could not be read: {error}; the ledger says PENDING until a refresh"
        ) from error
    if result is not None:
        row.update(ref=ref or str(result["ref"]), status=result["status"],
                   public_score=result["public_score"], private_score=result["private_score"])
        if result["status"] == "ERROR" and result.get("error_description"):
            row["message"] = f"{message} (Kaggle: {result['error_description']})"
    append_ledger(ledger_path, row)
    return row


def refresh_ledger(ledger_path: Path, competition: str = COMPETITION) -> pd.DataFrame:
    """Ask Kaggle for the scores of the ledger's PENDING rows; fill the ones now known."""
    ledger = read_ledger(ledger_path)
    pending = ledger[(ledger["status"] == PENDING) & (ledger["uploaded"] == "yes")]
    if len(pending) == 0:
        return ledger
    listed = client.list_submissions(competition)
    updates: dict[str, dict[str, Any]] = {}
    for submission in reversed(listed):  # oldest first, so the newest of a file name wins
        update = {column: submission[column] for column in SCORE_COLUMNS}
        updates[str(submission["ref"])] = update
        if submission["file_name"]:
            updates[submission["file_name"]] = update
    update_ledger_scores(ledger_path, updates)
    return read_ledger(ledger_path)


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
