"""The ledger of submissions (submissions/ledger.csv): each upload, its run, its estimate and
the score Kaggle gave it; the upload itself and the later refresh of pending scores.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from kit.config import COMPETITION
from kit.core import fileio
from kit.core.errors import KitError
from kit.kaggle import client
from kit.submit.submission import SUBMISSIONS_DIR, Submission

LEDGER_NAME = "ledger.csv"
LEDGER_COLUMNS = (
    "time", "run", "file", "sha256", "cv_rmse", "lb_estimate", "uploaded", "ref", "status",
    "public_score", "private_score", "message",
)
# The columns a score refresh may fill, and only in rows still PENDING.
SCORE_COLUMNS = ("status", "public_score", "private_score")
NUMERIC_LEDGER_COLUMNS = ("cv_rmse", "lb_estimate", "public_score", "private_score")
PENDING = "PENDING"


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
