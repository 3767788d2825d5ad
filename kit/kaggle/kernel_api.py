"""The Kaggle API calls for kernels, the ones `cv --remote kaggle` makes: the accelerator
quota, push, status, log and output, with retries and one-line errors like client.py's.

It takes the client that `client.make_api` built and never imports `kaggle` itself. Where
clients differ it asks the client object what it can do (a method, an argument) rather than
comparing version numbers, so an old client gets one line naming the version it needs.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import requests

from kit.config import COMPETITION
from kit.core.errors import KitError
from kit.kaggle import client
from kit.kaggle.credentials import (
    NEW_TOKEN_HINT,
    credential_hint,
    credentials_source,
    kit_error,
    read_json,
    redact,
)

T = TypeVar("T")

ACCELERATOR_CLIENT = "1.8.4"  # kernels_push(acc=...) arrived then (kaggle CHANGELOG, PR #907)
_DENIED = "was denied"  # how the client words a 401 or 403 on a kernel's status or output


def kaggle_username(api: Any) -> str:
    """The account the credentials belong to: the owner of the kernels the kit pushes."""
    name = api.get_config_value(api.CONFIG_NAME_USER)
    if not name:
        raise kit_error(f"the Kaggle client knows no username for {credentials_source()}: "
                        f"create a new token ({NEW_TOKEN_HINT})")
    return str(name)


# ---- the accelerator quota ----------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """An account's weekly accelerator time as Kaggle counts it (`kaggle quota`)."""

    kind: str  # "GPU" or "TPU"
    used_s: float
    allowed_s: float
    refresh: datetime | None  # UTC; when the week's count starts again

    @property
    def left_s(self) -> float:
        # As `kaggle quota` counts it (allowed less used), so the two never disagree.
        return max(0.0, self.allowed_s - self.used_s)

    def describe(self) -> str:
        when = f"; Kaggle refreshes it {self.refresh:%Y-%m-%d %H:%M} UTC" if self.refresh else ""
        return (f"{self.kind} quota: {self.left_s / 3600:.1f} h left of "
                f"{self.allowed_s / 3600:.1f} h this week{when}")


def accelerator_quota(accelerator: str, api: Any) -> Quota | None:
    """The quota that a run on `accelerator` draws on, or None where the client cannot tell
    (kaggle before 2.2 has no quota_view) or Kaggle's answer holds no such figure. Advisory:
    a failed look-up is None too, since the push itself gives Kaggle's final word."""
    if not hasattr(api, "quota_view"):
        return None
    kind = "TPU" if accelerator.lower().startswith("tpu") else "GPU"
    try:
        with client.captured_output():
            response = api.quota_view()
    except (requests.RequestException, ValueError):
        return None
    quota = getattr(response, "tpu_quota" if kind == "TPU" else "gpu_quota", None)
    used, allowed = getattr(quota, "time_used", None), getattr(quota, "total_time_allowed", None)
    if used is None or allowed is None:
        return None
    refresh = response.quota_refresh_time
    if refresh is not None and refresh.utcoffset() is None:
        refresh = refresh.replace(tzinfo=timezone.utc)  # the SDK drops the zone of UTC times
    return Quota(kind, used.total_seconds(), allowed.total_seconds(), refresh)


def no_quota_left(quota: Quota) -> KitError:
    return kit_error(f"no {quota.kind} quota left ({quota.describe()}): wait for the refresh, "
                     "or run on the CPU with --accelerator none; nothing was pushed")


# ---- push ---------------------------------------------------------------------------------


def push_kernel(folder: Path, *, timeout: int | None = None, accelerator: str | None = None,
                api: Any = None) -> dict[str, Any]:
    """Push folder (kernel-metadata.json and its code file) as a new version that runs now;
    return {"ref", "url", "version", "warnings"} (warnings: what the client printed).

    Not retried: a push whose answer was lost has started a run, and a second would start
    another (and count twice against the GPU quota).
    """
    api = api or client.make_api()
    metadata = read_json(Path(folder) / "kernel-metadata.json") or {}
    kernel = str(metadata.get("id", folder))
    doing = f"pushing kernel {kernel}"
    options: dict[str, Any] = {"timeout": timeout}
    if accelerator:
        if "acc" not in inspect.signature(api.kernels_push).parameters:
            # Such a client sends no machine shape at all: Kaggle would pick the machine.
            raise kit_error(
                f"kaggle {client.client_version()} cannot choose a kernel's accelerator "
                f"({accelerator}): it needs kaggle>={ACCELERATOR_CLIENT}; run "
                f"pip install -U 'kaggle>={ACCELERATOR_CLIENT}', or use --accelerator none"
            )
        options["acc"] = accelerator
    try:
        with client.captured_output() as printed:
            response = api.kernels_push(str(folder), **options)
    except requests.RequestException as error:
        raise _explain_kernel(error, doing, kernel, attempts=1) from error
    except ValueError as error:  # the client's own checks of the folder and its metadata
        raise kit_error(f"{folder}: the Kaggle client refused the kernel folder "
                        f"({error})") from None
    lines = printed.lines()
    if response is None:
        raise kit_error(f"{doing} failed" + (f": {lines[-1]}" if lines else ""))
    if response.error:
        raise _push_refused(str(response.error), kernel)
    rejected = list(response.invalid_competition_sources or [])
    if rejected:
        raise kit_error(
            f"Kaggle pushed {kernel} but did not attach the competition ({', '.join(rejected)}): "
            f"accept the rules at https://www.kaggle.com/c/{COMPETITION}/rules, then run again"
        )
    return {"ref": response.ref or kernel, "url": response.url or "",
            "version": response.version_number, "warnings": lines}


def _push_refused(said: str, kernel: str) -> KitError:
    text = said.lower()
    if "quota" in text:
        return kit_error(f"no GPU quota left (Kaggle: {said}): the weekly quota resets (see "
                         "kaggle.com > Settings > Quotas); or run on the CPU with "
                         "--accelerator none")
    if "session" in text and ("maximum" in text or "limit" in text):
        return kit_error(f"too many kernels running (Kaggle: {said}): wait for one to finish "
                         "(`python -m kit remote list`) or stop it on kaggle.com")
    return kit_error(f"Kaggle refused to push kernel {kernel}: {said}")


# ---- status, log, output ------------------------------------------------------------------


def kernel_status(kernel: str, api: Any = None, retries: int = 4, backoff: float = 2.0,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[str, str]:
    """(status, failure message) of the kernel's latest run; status is one of QUEUED, RUNNING,
    COMPLETE, ERROR, CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED, NEW_SCRIPT."""
    api = api or client.make_api()
    response = _kernel_call(lambda: api.kernels_status(kernel), kernel,
                            f"reading the status of kernel {kernel}", retries, backoff, sleep)
    status = getattr(response.status, "name", None) or str(response.status or "QUEUED")
    return status.upper(), redact(str(response.failure_message or ""))


def kernel_log(kernel: str, api: Any = None, retries: int = 4, backoff: float = 2.0,
               sleep: Callable[[float], None] = time.sleep) -> str:
    """The kernel's log so far, as Kaggle keeps it (often a JSON list of stream entries); empty
    when this client cannot read it separately from the outputs."""
    api = api or client.make_api()
    if not hasattr(api, "kernels_logs"):  # kaggle < 2.1
        return ""
    text = _kernel_call(lambda: api.kernels_logs(kernel), kernel,
                        f"reading the log of kernel {kernel}", retries, backoff, sleep)
    return redact(text or "")


def download_kernel_output(kernel: str, dest_dir: Path, api: Any = None, retries: int = 4,
                           backoff: float = 2.0,
                           sleep: Callable[[float], None] = time.sleep) -> list[Path]:
    """Every file the kernel's latest run left in /kaggle/working, into dest_dir (subfolders
    kept), and its log as dest_dir/<slug>.log; the paths written."""
    api = api or client.make_api()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)

    def fetch() -> list[str]:
        with client.captured_output():
            written, _ = api.kernels_output(kernel, str(dest_dir), force=True, quiet=True)
        return written

    written = _kernel_call(fetch, kernel, f"downloading the output of kernel {kernel}",
                           retries, backoff, sleep)
    return [Path(path) for path in written]


# ---- errors -------------------------------------------------------------------------------


def _explain_kernel(error: BaseException, doing: str, kernel: str, attempts: int) -> KitError:
    status = client.status_of(error)
    said = client.server_said(error)
    if status == 403:
        return kit_error(
            f"Kaggle refused {doing} (403: {said}): accept the rules at "
            f"https://www.kaggle.com/c/{COMPETITION}/rules; a kernel with a GPU or internet also "
            "needs a phone-verified account (kaggle.com > Settings > Phone verification)"
        )
    if status == 404:
        return kit_error(f"Kaggle knows no kernel {kernel} (404) while {doing}: check the name "
                         "(`python -m kit remote list`)")
    return client.explain(error, doing, COMPETITION, attempts=attempts)


def _denied(kernel: str, doing: str) -> KitError:
    return kit_error(f"Kaggle denied access to kernel {kernel} (401/403) while {doing}: it "
                     f"belongs to another account, or check {credential_hint()}")


def _kernel_call(action: Callable[[], T], kernel: str, doing: str, retries: int,
                 backoff: float, sleep: Callable[[float], None]) -> T:
    def guarded() -> T:
        try:
            return action()
        except requests.RequestException:
            raise  # with_retries decides
        except ValueError as error:
            if _DENIED in str(error):
                raise _denied(kernel, doing) from None
            raise kit_error(f"{doing} failed: {error}") from None
        except OSError as error:
            raise kit_error(f"{doing} failed: cannot write ({error})") from error

    return client.with_retries(
        guarded, doing=doing, competition=COMPETITION, retries=retries, backoff=backoff,
        sleep=sleep, explain_as=lambda error, tries: _explain_kernel(error, doing, kernel, tries))
