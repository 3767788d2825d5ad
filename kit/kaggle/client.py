"""The Kaggle API calls for the data and submissions, with their retries and one-line
errors; `make_api` builds the client for every call, kernels' too (kit/kaggle/kernel_api.py).

The only module that imports `kaggle`, and only inside functions: importing the package runs
`KaggleApi().authenticate()`, which without credentials prints a page of help and closes
sys.stdin (it calls the site `exit()`), and with a token makes a network call. So credentials
are checked first (kit/kaggle/credentials.py), and the import happens only when a call is
about to be made.

Nothing here prints; the client's own prints, on stdout and stderr, are captured. Every
problem a user can fix is a one-line KitError, and no message ever holds a credential value.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path
from typing import Any, TypeVar

import requests

from kit.config import COMPETITION
from kit.core.errors import KitError
from kit.kaggle.credentials import (
    NEW_TOKEN_HINT,
    credential_hint,
    credentials_source,
    kaggle_config_dir,
    kaggle_json_path,
    kaggle_json_warning,  # noqa: F401 (re-exported: kit/cli/main.py asks client for it)
    kit_error,
    missing_credentials_message,
    redact,
)

T = TypeVar("T")

# KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE: the client returns it instead of raising.
UPLOAD_FAILED_MESSAGE = "Could not submit to competition"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---- the client ---------------------------------------------------------------------------


class Printed(io.StringIO):
    """What the client printed, stdout and stderr in the order it wrote them."""

    def lines(self) -> list[str]:
        """Its non-empty lines, colours dropped and credentials redacted."""
        text = ANSI.sub("", redact(self.getvalue()))
        return [line.strip() for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def captured_output() -> Iterator[Printed]:
    # The client prints (help pages, permission warnings, upload errors, on stdout; warnings
    # such as a retired accelerator, on stderr); the kit's CLI is the only place that prints,
    # so the text is kept for messages and warnings instead.
    buffer = Printed()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def client_version() -> str:
    """The installed kaggle client's version, read without importing it."""
    try:
        return importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def make_api() -> Any:
    """An authenticated KaggleApi; KitError if no credentials are set up."""
    source = credentials_source()
    if source is None:
        raise kit_error(missing_credentials_message())
    with captured_output():
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        # KaggleApi fixed these when first imported; use the environment as it is now.
        api.config_dir = str(kaggle_config_dir())
        api.config = str(kaggle_json_path())
        try:
            api.authenticate()
        except SystemExit:
            raise kit_error(
                f"the Kaggle client could not use the credentials in {source}: "
                f"create a new token ({NEW_TOKEN_HINT})"
            ) from None
        except requests.RequestException as error:
            # Token introspection is a network call.
            raise explain(error, "checking the Kaggle token", COMPETITION, attempts=1) from error
    return api


# ---- errors and retries -------------------------------------------------------------------


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, (requests.ConnectionError, requests.Timeout,
                          requests.exceptions.ChunkedEncodingError)):
        return True
    status = status_of(error)
    return status is not None and (status == 429 or status >= 500)


def server_said(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def explain(error: BaseException, doing: str, competition: str, *, attempts: int,
             submitting: bool = False) -> KitError:
    """One line saying what went wrong and what to do about it."""
    status = status_of(error)
    said = server_said(error)
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if status == 401:
        return kit_error(
            f"Kaggle rejected the credentials (401) while {doing}: check {credential_hint()}"
        )
    if status == 403:
        return kit_error(
            f"Kaggle refused {doing} (403: {said}): accept the rules at "
            f"https://www.kaggle.com/c/{competition}/rules, then run again"
        )
    if status == 404:
        return kit_error(
            f"Kaggle knows no competition {competition!r} (404) while {doing}: check the name"
            + (", and that it still accepts submissions" if submitting else "")
        )
    if status == 429 and submitting:
        return kit_error(
            f"submission limit reached for today (429: {said}): Kaggle resets the count at "
            "midnight UTC; submit again then"
        )
    if status == 429:
        return kit_error(f"Kaggle is limiting requests (429) while {doing}{tries}: "
                          "wait a few minutes and run again")
    if status is not None and status >= 500:
        return kit_error(f"Kaggle server error ({status}) while {doing}{tries}: {said}; "
                          "try again later")
    if status is not None:
        return kit_error(f"Kaggle answered {status} while {doing}: {said}")
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return kit_error(
            f"could not reach Kaggle while {doing}{tries} ({type(error).__name__}: {said}): "
            "check the network connection and any proxy settings"
        )
    return kit_error(f"{doing} failed: {type(error).__name__}: {said}")


def with_retries(action: Callable[[], T], *, doing: str, competition: str, retries: int,
                 backoff: float, sleep: Callable[[float], None],
                 explain_as: Callable[[BaseException, int], KitError] | None = None) -> T:
    """Run `action`; retry network failures, 429 and 5xx with exponential backoff; the last
    error becomes one line (`explain_as(error, attempts)`, else `explain`)."""
    explain_as = explain_as or (lambda error, tries: explain(error, doing, competition,
                                                             attempts=tries))
    attempts = max(0, retries) + 1
    for attempt in range(attempts):
        try:
            return action()
        except requests.RequestException as error:
            if not _is_transient(error) or attempt + 1 == attempts:
                raise explain_as(error, attempt + 1) from error
            sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


# ---- download -----------------------------------------------------------------------------


def download_competition(dest_dir: Path, competition: str = COMPETITION, force: bool = False,
                         retries: int = 3, backoff: float = 1.0,
                         sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download `<competition>.zip` into dest_dir; return its path.

    An existing zip is kept unless `force`: it can only be there complete, because the
    download lands in a private folder and is renamed into place at the end.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / f"{competition}.zip"
    if target.is_file() and not force:
        return target
    api = make_api()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise kit_error(f"{dest_dir}: cannot create the download folder ({error.strerror})") from error
    return with_retries(
        lambda: _download_once(api, competition, target),
        doing=f"downloading {competition}", competition=competition,
        retries=retries, backoff=backoff, sleep=sleep,
    )


def _download_once(api: Any, competition: str, target: Path) -> Path:
    # The client writes under the final name as bytes arrive (and keeps a partial file after a
    # failure), so it writes into a private folder and only a complete file is renamed over.
    staging = Path(tempfile.mkdtemp(prefix=f".{competition}.", suffix=".part", dir=target.parent))
    try:
        with captured_output():
            api.competition_download_files(competition, path=str(staging), force=True, quiet=True)
        arrived = staging / target.name
        if not arrived.is_file():
            names = sorted(path.name for path in staging.iterdir()) or "nothing"
            raise kit_error(f"Kaggle sent no {target.name} for {competition} (got {names})")
        with open(arrived, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(arrived, target)
        return target
    except requests.RequestException:
        raise  # with_retries decides
    except ValueError as error:
        # The client's own size check, after its own retries: the body was cut short.
        raise kit_error(f"download of {competition} was cut short ({error}); run again") from error
    except OSError as error:
        raise kit_error(f"{target.parent}: cannot write the download ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- submissions --------------------------------------------------------------------------


def submit(csv_path: Path, message: str, competition: str = COMPETITION) -> str:
    """Upload a submission CSV; return Kaggle's ref for it (or its message if it gave none).

    Not retried: if Kaggle took the submission but the answer was lost, a second try would
    count twice against the daily limit.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise kit_error(f"{csv_path}: no such submission file")
    api = make_api()
    doing = f"submitting {csv_path.name} to {competition}"
    try:
        with captured_output() as printed:
            response = api.competition_submit(str(csv_path), message, competition, quiet=True)
    except requests.RequestException as error:
        raise explain(error, doing, competition, attempts=1, submitting=True) from error
    if response.message == UPLOAD_FAILED_MESSAGE:
        # The client prints the cause, if any, instead of raising it.
        lines = printed.lines()
        cause = f" ({lines[-1]})" if lines else ""
        raise kit_error(
            f"uploading {csv_path} to Kaggle failed{cause}: nothing was submitted; run again"
        )
    return str(response.ref) if response.ref else response.message


def list_submissions(competition: str = COMPETITION, retries: int = 3, backoff: float = 1.0,
                     sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """This account's submissions, newest first, as plain dicts (see `_submission_dict`)."""
    return _list_with(make_api(), competition, retries, backoff, sleep)


def _list_with(api: Any, competition: str, retries: int, backoff: float,
               sleep: Callable[[float], None]) -> list[dict[str, Any]]:
    listed = with_retries(
        lambda: api.competition_submissions(competition),
        doing=f"listing submissions to {competition}", competition=competition,
        retries=retries, backoff=backoff, sleep=sleep,
    )
    return [_submission_dict(item) for item in listed or [] if item is not None]


def _submission_dict(item: Any) -> dict[str, Any]:
    date = item.date
    return {
        "ref": item.ref,
        "file_name": item.file_name or "",
        # Kaggle's times are UTC; the client drops the "Z".
        "date": date.replace(tzinfo=timezone.utc).isoformat(timespec="seconds") if date else None,
        "description": item.description or "",
        "status": getattr(item.status, "name", None) or "PENDING",  # PENDING | COMPLETE | ERROR
        "public_score": _score(item.public_score),
        "private_score": _score(item.private_score),
        "error_description": item.error_description or "",
    }


def _score(text: str | None) -> float | None:
    # Scores come as strings; empty until scored (and the private one until the end).
    try:
        return float(text) if text else None
    except ValueError:
        return None


def wait_for_score(ref_or_filename: str | int, competition: str = COMPETITION,
                   timeout: float = 300, poll: float = 10,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, Any] | None:
    """Poll until the submission (by ref, else the newest with that file name) is COMPLETE or
    ERROR; return its dict, or None after `timeout` seconds. A submission not listed yet is
    waited for too: a new one can take a moment to appear."""
    api = make_api()
    deadline = clock() + timeout
    while True:
        listed = _list_with(api, competition, 3, 1.0, sleep)  # a blip costs a retry, not the wait
        found = _find_submission(listed, ref_or_filename)
        if found is not None and found["status"] != "PENDING":
            return found
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        sleep(min(poll, remaining))


def _find_submission(submissions: list[dict[str, Any]], key: str | int) -> dict[str, Any] | None:
    text = str(key)
    for submission in submissions:
        if str(submission["ref"]) == text:
            return submission
    name = Path(text).name  # a path to the submitted file names it too
    # Listed newest first, so the first match is the latest upload of that file.
    return next((s for s in submissions if s["file_name"] == name), None)


