"""Everything the kit asks of Kaggle: credentials, the data download, submissions and scores,
and the kernels that run `make cv` on Kaggle's machines.

The only module that imports `kaggle`, and only inside functions: importing the package runs
`KaggleApi().authenticate()`, which without credentials prints a page of help and closes
sys.stdin (it calls the site `exit()`), and with a token makes a network call. So credentials
are checked here first, and the import happens only when a call is about to be made.

Nothing here prints; the client's own prints are captured. Every problem a user can fix is a
one-line KitError, and no message ever holds a credential value.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path
from typing import Any, TypeVar

import requests

from kit.config import COMPETITION
from kit.core.errors import KitError

T = TypeVar("T")

# KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE: the client returns it instead of raising.
UPLOAD_FAILED_MESSAGE = "Could not submit to competition"
NEW_TOKEN_HINT = "kaggle.com > Settings > API > Create New Token"


# ---- credentials --------------------------------------------------------------------------


def kaggle_config_dir() -> Path:
    """The folder the client reads kaggle.json from (it decides once, at import; we follow
    the environment as it is now, and make_api hands our answer to the client)."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        # The client follows the XDG convention only when ~/.kaggle is absent.
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def kaggle_json_path() -> Path:
    return kaggle_config_dir() / "kaggle.json"


def credentials_source() -> str | None:
    """Where the credential the client would send comes from, or None if there is none.

    The order is the client's: an API token (KAGGLE_API_TOKEN, then ~/.kaggle/access_token)
    goes on the wire even when kaggle.json is also there, then the username/key pair
    (KAGGLE_USERNAME/KAGGLE_KEY over kaggle.json, key by key), then `kaggle auth login`'s
    cached OAuth credentials. The answer names a variable or a file, never a value.
    """
    return _token_source() or _key_pair_source() or _oauth_source()


def kaggle_json_warning() -> str | None:
    """A warning when kaggle.json can be read by other users of this machine."""
    path = kaggle_json_path()
    if os.name == "nt":
        return None  # POSIX modes mean nothing there; the client skips the check too
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o077 == 0:
        return None
    return f"{path} can be read by other users of this machine: run chmod 600 {path}"


def _token_source() -> str | None:
    value = os.environ.get("KAGGLE_API_TOKEN")
    if value:
        # The variable may hold the token or the name of a file holding it. os.path.exists
        # rather than Path.exists: a long token is an over-long file name, which Path raises on.
        if os.path.exists(value):
            return f"the file {value} named by KAGGLE_API_TOKEN"
        return "KAGGLE_API_TOKEN"
    for path in _token_files():
        if _read_text(path):
            return str(path)
    return None


def _token_files() -> list[Path]:
    # The client looks here whatever KAGGLE_CONFIG_DIR says.
    folder = Path.home() / ".kaggle"
    return [folder / "access_token", folder / "access_token.txt"]


def _key_pair_source() -> str | None:
    path = kaggle_json_path()
    stored = _read_kaggle_json(path) or {}
    env_user = os.environ.get("KAGGLE_USERNAME")
    env_key = os.environ.get("KAGGLE_KEY")
    if not ((env_user or stored.get("username")) and (env_key or stored.get("key"))):
        return None
    if env_user and env_key:
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if env_user or env_key:
        return f"{path} and KAGGLE_USERNAME/KAGGLE_KEY"
    return str(path)


def _oauth_source() -> str | None:
    path = Path.home() / ".kaggle" / "credentials.json"
    data = _read_json(path)
    if isinstance(data, dict) and data.get("refresh_token"):
        return f"{path} (from `kaggle auth login`)"
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _read_kaggle_json(path: Path) -> dict[str, Any] | None:
    data = _read_json(path)
    return data if isinstance(data, dict) else None


def _missing_credentials_message() -> str:
    path = kaggle_json_path()
    if path.exists() and _read_kaggle_json(path) is None:
        return (
            f"{path} is not a readable kaggle.json: expected "
            f'{{"username": "...", "key": "..."}}; download a fresh one ({NEW_TOKEN_HINT})'
        )
    if path.exists():
        return f'{path} lacks "username" or "key": download a fresh one ({NEW_TOKEN_HINT})'
    suggested = path if os.environ.get("KAGGLE_CONFIG_DIR") else "~/.kaggle/kaggle.json"
    return (
        f"no Kaggle credentials: put kaggle.json (from {NEW_TOKEN_HINT}) in {suggested} "
        "with chmod 600, or set KAGGLE_USERNAME and KAGGLE_KEY"
    )


def _credential_hint() -> str:
    source = credentials_source()
    if source is None:
        return "your Kaggle credentials"
    if "KAGGLE_API_TOKEN" in source or "access_token" in source or "credentials.json" in source:
        # A token wins over kaggle.json on the wire, so a stale one breaks a good key pair.
        return f"the token in {source} (a token is sent even when kaggle.json is also present)"
    return f"the username and key in {source}"


def _secret_values() -> list[str]:
    """Every credential value we can see, so that no message repeats one."""
    stored = _read_kaggle_json(kaggle_json_path()) or {}
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    values = [key, stored.get("key"), os.environ.get("KAGGLE_KEY")]
    token = os.environ.get("KAGGLE_API_TOKEN")
    values.append(token)
    if token and os.path.exists(token):
        values.append(_read_text(Path(token)))
    values.extend(_read_text(path) for path in _token_files())
    if isinstance(user, str) and isinstance(key, str):
        # The Basic auth header a server might echo back.
        values.append(base64.b64encode(f"{user}:{key}".encode()).decode())
    return [value for value in values if isinstance(value, str) and len(value) >= 4]


def _redact(text: str) -> str:
    for secret in _secret_values():
        text = text.replace(secret, "***")
    return text


def _kit_error(text: str) -> KitError:
    return KitError(" ".join(_redact(text).split()))


# ---- the client ---------------------------------------------------------------------------


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    # The client prints (help pages, permission warnings, upload errors); the kit's CLI is the
    # only place that prints, so keep the text for error messages instead.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def make_api() -> Any:
    """An authenticated KaggleApi; KitError if no credentials are set up."""
    source = credentials_source()
    if source is None:
        raise _kit_error(_missing_credentials_message())
    with _captured_output():
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        # KaggleApi fixed these when first imported; use the environment as it is now.
        api.config_dir = str(kaggle_config_dir())
        api.config = str(kaggle_json_path())
        try:
            api.authenticate()
        except SystemExit:
            raise _kit_error(
                f"the Kaggle client could not use the credentials in {source}: "
                f"create a new token ({NEW_TOKEN_HINT})"
            ) from None
        except requests.RequestException as error:
            # Token introspection is a network call.
            raise _explain(error, "checking the Kaggle token", COMPETITION, attempts=1) from error
    return api


# ---- errors and retries -------------------------------------------------------------------


def _status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, (requests.ConnectionError, requests.Timeout,
                          requests.exceptions.ChunkedEncodingError)):
        return True
    status = _status_of(error)
    return status is not None and (status == 429 or status >= 500)


def _server_said(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _explain(error: BaseException, doing: str, competition: str, *, attempts: int,
             submitting: bool = False) -> KitError:
    """One line saying what went wrong and what to do about it."""
    status = _status_of(error)
    said = _server_said(error)
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if status == 401:
        return _kit_error(
            f"Kaggle rejected the credentials (401) while {doing}: check {_credential_hint()}"
        )
    if status == 403:
        return _kit_error(
            f"Kaggle refused {doing} (403: {said}): accept the rules at "
            f"https://www.kaggle.com/c/{competition}/rules, then run again"
        )
    if status == 404:
        return _kit_error(
            f"Kaggle knows no competition {competition!r} (404) while {doing}: check the name"
            + (", and that it still accepts submissions" if submitting else "")
        )
    if status == 429 and submitting:
        return _kit_error(
            f"submission limit reached for today (429: {said}): Kaggle resets the count at "
            "midnight UTC; submit again then"
        )
    if status == 429:
        return _kit_error(f"Kaggle is limiting requests (429) while {doing}{tries}: "
                          "wait a few minutes and run again")
    if status is not None and status >= 500:
        return _kit_error(f"Kaggle server error ({status}) while {doing}{tries}: {said}; "
                          "try again later")
    if status is not None:
        return _kit_error(f"Kaggle answered {status} while {doing}: {said}")
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return _kit_error(
            f"could not reach Kaggle while {doing}{tries} ({type(error).__name__}: {said}): "
            "check the network connection and any proxy settings"
        )
    return _kit_error(f"{doing} failed: {type(error).__name__}: {said}")


def _with_retries(action: Callable[[], T], *, doing: str, competition: str, retries: int,
                  backoff: float, sleep: Callable[[float], None],
                  explain: Callable[[BaseException, int], KitError] | None = None) -> T:
    """Run `action`; retry network failures, 429 and 5xx with exponential backoff."""
    explain = explain or (lambda error, tries: _explain(error, doing, competition,
                                                        attempts=tries))
    attempts = max(0, retries) + 1
    for attempt in range(attempts):
        try:
            return action()
        except requests.RequestException as error:
            if not _is_transient(error) or attempt + 1 == attempts:
                raise explain(error, attempt + 1) from error
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
        raise _kit_error(f"{dest_dir}: cannot create the download folder ({error.strerror})") from error
    return _with_retries(
        lambda: _download_once(api, competition, target),
        doing=f"downloading {competition}", competition=competition,
        retries=retries, backoff=backoff, sleep=sleep,
    )


def _download_once(api: Any, competition: str, target: Path) -> Path:
    # The client writes under the final name as bytes arrive (and keeps a partial file after a
    # failure), so it writes into a private folder and only a complete file is renamed over.
    staging = Path(tempfile.mkdtemp(prefix=f".{competition}.", suffix=".part", dir=target.parent))
    try:
        with _captured_output():
            api.competition_download_files(competition, path=str(staging), force=True, quiet=True)
        arrived = staging / target.name
        if not arrived.is_file():
            names = sorted(path.name for path in staging.iterdir()) or "nothing"
            raise _kit_error(f"Kaggle sent no {target.name} for {competition} (got {names})")
        with open(arrived, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(arrived, target)
        return target
    except requests.RequestException:
        raise  # _with_retries decides
    except ValueError as error:
        # The client's own size check, after its own retries: the body was cut short.
        raise _kit_error(f"download of {competition} was cut short ({error}); run again") from error
    except OSError as error:
        raise _kit_error(f"{target.parent}: cannot write the download ({error})") from error
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
        raise _kit_error(f"{csv_path}: no such submission file")
    api = make_api()
    doing = f"submitting {csv_path.name} to {competition}"
    try:
        with _captured_output() as printed:
            response = api.competition_submit(str(csv_path), message, competition, quiet=True)
    except requests.RequestException as error:
        raise _explain(error, doing, competition, attempts=1, submitting=True) from error
    if response.message == UPLOAD_FAILED_MESSAGE:
        # The client prints the cause, if any, instead of raising it.
        lines = printed.getvalue().strip().splitlines()
        cause = f" ({lines[-1]})" if lines else ""
        raise _kit_error(
            f"uploading {csv_path} to Kaggle failed{cause}: nothing was submitted; run again"
        )
    return str(response.ref) if response.ref else response.message


def list_submissions(competition: str = COMPETITION, retries: int = 3, backoff: float = 1.0,
                     sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """This account's submissions, newest first, as plain dicts (see `_submission_dict`)."""
    return _list_with(make_api(), competition, retries, backoff, sleep)


def _list_with(api: Any, competition: str, retries: int, backoff: float,
               sleep: Callable[[float], None]) -> list[dict[str, Any]]:
    listed = _with_retries(
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


# ---- kernels ------------------------------------------------------------------------------

# GetKernelSessionStatus's answers after which nothing more will happen.
KERNEL_FINAL = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")
_DENIED = "was denied"  # how the client words a 401 or 403 on a kernel's status or output


def kaggle_username(api: Any) -> str:
    """The account the credentials belong to: the owner of the kernels the kit pushes."""
    name = api.get_config_value(api.CONFIG_NAME_USER)
    if not name:
        raise _kit_error(f"the Kaggle client knows no username for {credentials_source()}: "
                         f"create a new token ({NEW_TOKEN_HINT})")
    return str(name)


def contains_credentials(data: bytes | str) -> bool:
    """True when any credential value we can see appears in `data` (code about to be pushed,
    files that came back from a kernel)."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return any(secret.encode() in raw for secret in _secret_values())


def _explain_kernel(error: BaseException, doing: str, kernel: str, attempts: int) -> KitError:
    status = _status_of(error)
    said = _server_said(error)
    if status == 403:
        return _kit_error(
            f"Kaggle refused {doing} (403: {said}): accept the rules at "
            f"https://www.kaggle.com/c/{COMPETITION}/rules; a kernel with a GPU or internet also "
            "needs a phone-verified account (kaggle.com > Settings > Phone verification)"
        )
    if status == 404:
        return _kit_error(f"Kaggle knows no kernel {kernel} (404) while {doing}: check the name "
                          "(`python -m kit remote list`)")
    return _explain(error, doing, COMPETITION, attempts=attempts)


def _denied(kernel: str, doing: str) -> KitError:
    return _kit_error(f"Kaggle denied access to kernel {kernel} (401/403) while {doing}: it "
                      f"belongs to another account, or check {_credential_hint()}")


def push_kernel(folder: Path, *, timeout: int | None = None, accelerator: str | None = None,
                api: Any = None) -> dict[str, Any]:
    """Push folder (kernel-metadata.json and its code file) as a new version that runs now;
    return {"ref", "url", "version"}.

    Not retried: a push whose answer was lost has started a run, and a second would start
    another (and count twice against the GPU quota).
    """
    api = api or make_api()
    metadata = _read_json(Path(folder) / "kernel-metadata.json") or {}
    kernel = str(metadata.get("id", folder))
    doing = f"pushing kernel {kernel}"
    try:
        with _captured_output() as printed:
            response = api.kernels_push(str(folder), timeout=timeout, acc=accelerator)
    except requests.RequestException as error:
        raise _explain_kernel(error, doing, kernel, attempts=1) from error
    except ValueError as error:  # the client's own checks of the folder and its metadata
        raise _kit_error(f"{folder}: the Kaggle client refused the kernel folder "
                         f"({error})") from None
    if response is None:
        lines = printed.getvalue().strip().splitlines()
        raise _kit_error(f"{doing} failed" + (f": {lines[-1]}" if lines else ""))
    if response.error:
        raise _push_refused(str(response.error), kernel)
    rejected = list(response.invalid_competition_sources or [])
    if rejected:
        raise _kit_error(
            f"Kaggle pushed {kernel} but did not attach the competition ({', '.join(rejected)}): "
            f"accept the rules at https://www.kaggle.com/c/{COMPETITION}/rules, then run again"
        )
    return {"ref": response.ref or kernel, "url": response.url or "",
            "version": response.version_number}


def _push_refused(said: str, kernel: str) -> KitError:
    text = said.lower()
    if "quota" in text:
        return _kit_error(f"no GPU quota left (Kaggle: {said}): the weekly quota resets (see "
                          "kaggle.com > Settings > Quotas); or run on the CPU with "
                          "--accelerator none")
    if "session" in text and ("maximum" in text or "limit" in text):
        return _kit_error(f"too many kernels running (Kaggle: {said}): wait for one to finish "
                          "(`python -m kit remote list`) or stop it on kaggle.com")
    return _kit_error(f"Kaggle refused to push kernel {kernel}: {said}")


def kernel_status(kernel: str, api: Any = None, retries: int = 4, backoff: float = 2.0,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[str, str]:
    """(status, failure message) of the kernel's latest run; status is one of QUEUED, RUNNING,
    COMPLETE, ERROR, CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED, NEW_SCRIPT."""
    api = api or make_api()
    response = _kernel_call(lambda: api.kernels_status(kernel), kernel,
                            f"reading the status of kernel {kernel}", retries, backoff, sleep)
    status = getattr(response.status, "name", None) or str(response.status or "QUEUED")
    return status.upper(), _redact(str(response.failure_message or ""))


def kernel_log(kernel: str, api: Any = None, retries: int = 4, backoff: float = 2.0,
               sleep: Callable[[float], None] = time.sleep) -> str:
    """The kernel's log so far, as Kaggle keeps it (often a JSON list of stream entries); empty
    when this client cannot read it separately from the outputs."""
    api = api or make_api()
    if not hasattr(api, "kernels_logs"):  # kaggle < 2.1
        return ""
    text = _kernel_call(lambda: api.kernels_logs(kernel), kernel,
                        f"reading the log of kernel {kernel}", retries, backoff, sleep)
    return _redact(text or "")


def download_kernel_output(kernel: str, dest_dir: Path, api: Any = None, retries: int = 4,
                           backoff: float = 2.0,
                           sleep: Callable[[float], None] = time.sleep) -> list[Path]:
    """Every file the kernel's latest run left in /kaggle/working, into dest_dir (subfolders
    kept), and its log as dest_dir/<slug>.log; the paths written."""
    api = api or make_api()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)

    def fetch() -> list[str]:
        with _captured_output():
            written, _ = api.kernels_output(kernel, str(dest_dir), force=True, quiet=True)
        return written

    written = _kernel_call(fetch, kernel, f"downloading the output of kernel {kernel}",
                           retries, backoff, sleep)
    return [Path(path) for path in written]


def _kernel_call(action: Callable[[], T], kernel: str, doing: str, retries: int,
                 backoff: float, sleep: Callable[[float], None]) -> T:
    def guarded() -> T:
        try:
            return action()
        except requests.RequestException:
            raise  # _with_retries decides
        except ValueError as error:
            if _DENIED in str(error):
                raise _denied(kernel, doing) from None
            raise _kit_error(f"{doing} failed: {error}") from None
        except OSError as error:
            raise _kit_error(f"{doing} failed: cannot write ({error})") from error

    return _with_retries(guarded, doing=doing, competition=COMPETITION, retries=retries,
                         backoff=backoff, sleep=sleep,
                         explain=lambda error, tries: _explain_kernel(error, doing, kernel, tries))
