"""`python -m kit cv --remote kaggle`: the same cv, run by Kaggle on its GPU.

The working tree's kit code goes into one script kernel (kit/remote/code.py) with the
competition attached as a data source. While Kaggle runs it, its status and log are polled;
when it completes, the run it left in /kaggle/working/cv comes back into cv/<run-id>/ exactly
as a local run, with remote.json beside config.json.

Every remote run has an entry in cv/.remote/<id>.json (kernel, version, commit, times, status),
so waiting can stop (Ctrl-C) and start again (`remote attach`) without touching the kernel.
Each run is its own private kernel (kit-cv-<id>), so runs never wait for or replace each other.
Waiting always ends: a run that never starts, waits in Kaggle's queue too long or outlives its
limit ends the wait in one line (the kernel itself is left alone). Nothing here prints: the
CLI shows what `push` and `wait` report.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kit.config import COMPETITION
from kit.core import fileio
from kit.core.errors import KitError
from kit.kaggle import client, kernel_api
from kit.kaggle.credentials import contains_credentials
from kit.remote.code import collect_code, script_text

KERNEL_PREFIX = "kit-cv-"
CODE_FILE = "kit_cv.py"
REGISTRY = ".remote"  # under the runs folder; hidden, so it is never taken for a run
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"  # Kaggle's default GPU, two T4s ("GPU T4 x2")
WAITING = ("QUEUED", "NEW_SCRIPT", "RUNNING", "CANCEL_REQUESTED")
TIMEOUT_WORDS = ("timeout", "timed out", "time limit", "execution duration", "maximum run time")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# How the kernel says why it failed, in one line of its log: kernel_setup.py's SystemExit
# messages start "kit: ", and the kit's CLI prints a KitError as "error: ...".
REASON_PREFIXES = ("kit: ", "error: ")

# How long a wait goes on. Kaggle stops a CPU or GPU session after 12 hours (TPU: 9).
KAGGLE_SESSION_LIMIT_S = 12 * 3600
# A pushed version that runs is QUEUED within seconds; NEW_SCRIPT for minutes means Kaggle saved
# the version without starting a session (an account that may not run it, a refused source).
NEW_SCRIPT_LIMIT_S = 10 * 60
# A queue wait is Kaggle finding a free machine of the kind asked: minutes usually, longer at busy
# hours for a scarce accelerator; two hours in the queue means trying another machine is better.
QUEUED_LIMIT_S = 2 * 3600
# After the run stops, Kaggle saves /kaggle/working before the status says so.
SAVE_MARGIN_S = 30 * 60


# ---------------------------------------------------------------- the registry


def registry_dir(runs: Path) -> Path:
    return Path(runs) / REGISTRY


def save_entry(runs: Path, entry: dict[str, Any]) -> None:
    fileio.write_json(registry_dir(runs) / f"{entry['id']}.json", entry)


def load_entries(runs: Path) -> list[dict[str, Any]]:
    """Every remote run this runs folder knows, newest first."""
    entries = []
    for path in sorted(registry_dir(runs).glob("*.json"), reverse=True):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            raise KitError(f"{path}: not a readable remote-run entry; delete it") from None
    return entries


def find_entry(runs: Path, name: str | None = None) -> dict[str, Any]:
    """A remote run by its id, its kernel (slug or owner/slug) or the run it downloaded; with
    no name, the newest one not downloaded yet (else the newest)."""
    entries = load_entries(runs)
    if not entries:
        raise KitError(f"{registry_dir(runs)}: no remote runs yet; start one with "
                       "`make cv REMOTE=kaggle`")
    if name is None:
        return next((e for e in entries if not e.get("run")), entries[0])
    for entry in entries:
        if name in (entry["id"], entry["kernel"], entry["kernel"].split("/")[-1], entry.get("run")):
            return entry
    known = ", ".join(e["id"] for e in entries[:5])
    raise KitError(f"no remote run {name!r} in {registry_dir(runs)} (newest: {known}); see "
                   "`python -m kit remote list`")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


# ---------------------------------------------------------------- push


@dataclass(frozen=True)
class KernelOptions:
    """How the kernel runs: private unless asked, a GPU unless `accelerator` is "none"."""

    public: bool = False
    accelerator: str = DEFAULT_ACCELERATOR
    internet: bool = True  # only the installer uses it, for what the Kaggle image lacks
    timeout: int | None = None  # seconds; None is Kaggle's own limit

    @property
    def gpu(self) -> bool:
        return self.accelerator.lower() != "none"


def unused_name(base: str, taken: Callable[[str], bool]) -> str:
    """base, else base-2, base-3, ...: the first that `taken` says is free."""
    name, suffix = base, 1
    while taken(name):
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def new_id(runs: Path, preset: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    base = f"{stamp}-{re.sub(r'[^a-z0-9]+', '-', preset.lower()).strip('-') or 'cv'}"
    return unused_name(base, lambda name: (registry_dir(runs) / f"{name}.json").exists())


def write_kernel_folder(folder: Path, kernel: str, script: str, options: KernelOptions) -> Path:
    """kernel-metadata.json and the code file, as `kaggle kernels push` reads them."""
    slug = kernel.split("/")[-1]
    metadata = {
        "id": kernel,
        "title": slug.replace("-", " ", 2),  # slugifies back to the slug, as the client wants
        "code_file": CODE_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": not options.public,
        "enable_gpu": options.gpu,
        "enable_internet": options.internet,
        "competition_sources": [COMPETITION],
        "dataset_sources": [],
        "kernel_sources": [],
    }
    if options.gpu:
        metadata["machine_shape"] = options.accelerator
    fileio.write_text(folder / CODE_FILE, script)
    fileio.write_json(folder / "kernel-metadata.json", metadata)
    return folder


def push(runs: Path, cv_args: list[str], preset: str, options: KernelOptions, api: Any = None,
         on_quota: Callable[[kernel_api.Quota], None] = lambda quota: None) -> dict[str, Any]:
    """Push the working tree's kit as a new kernel that runs `cv cv_args`; its registry entry
    (its "warnings": what the client said about the push). A GPU or TPU run first reads the
    account's quota where the client can (`on_quota` gets it) and stops if none is left."""
    code = collect_code()
    if contains_credentials(" ".join(cv_args)):
        raise KitError("the cv flags hold one of your Kaggle credentials; they would be pushed")
    api = api or client.make_api()
    accelerator = options.accelerator if options.gpu else None
    quota = kernel_api.accelerator_quota(accelerator, api) if accelerator else None
    if quota is not None:
        on_quota(quota)
        if quota.left_s <= 0:
            raise kernel_api.no_quota_left(quota)
    remote_id = new_id(runs, preset)
    kernel = f"{kernel_api.kaggle_username(api)}/{KERNEL_PREFIX}{remote_id}"
    with tempfile.TemporaryDirectory(prefix="kit-kernel-") as folder:
        write_kernel_folder(Path(folder), kernel, script_text(code, cv_args), options)
        pushed = kernel_api.push_kernel(Path(folder), timeout=options.timeout,
                                        accelerator=accelerator, api=api)
    entry = {
        "id": remote_id, "kernel": kernel, "version": pushed["version"], "url": pushed["url"],
        "cv_args": list(cv_args), "source": code.source, "commit": code.commit,
        "dirty": bool(code.changed), "changed_files": list(code.changed),
        "code_sha256": code.sha256,
        "code_files": len(code.files), "public": options.public,
        "accelerator": accelerator, "internet": options.internet, "timeout": options.timeout,
        "warnings": pushed["warnings"],
        "pushed": _now(), "status": "QUEUED", "failure": "", "started": None,
        "finished": None, "run": None, "downloaded": None,
    }
    save_entry(runs, entry)
    return entry


# ---------------------------------------------------------------- wait


@dataclass(frozen=True)
class Update:
    """What one poll saw: the kernel's status, seconds since the push, the log's last lines."""

    status: str
    elapsed: float
    log_tail: tuple[str, ...]


def log_lines(text: str) -> list[str]:
    """The lines of a kernel log: Kaggle keeps it as a JSON list of {stream_name, time, data}
    entries; plain text is taken as it is. Progress redraws (\\r) and colours are dropped."""
    try:
        entries = json.loads(text) if text.lstrip().startswith("[") else None
    except ValueError:
        entries = None
    if isinstance(entries, list):
        text = "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))
    lines = []
    for line in ANSI.sub("", text).split("\n"):
        shown = line.split("\r")[-1].rstrip()
        if shown.strip():
            lines.append(shown)
    return lines


def wait_limit(entry: dict[str, Any]) -> float:
    """The longest a wait goes on: the run's limit (--timeout, else Kaggle's) plus the longest
    it may take to start (NEW_SCRIPT, then QUEUED) and for Kaggle to save its outputs."""
    run_limit = entry.get("timeout") or KAGGLE_SESSION_LIMIT_S
    return NEW_SCRIPT_LIMIT_S + QUEUED_LIMIT_S + run_limit + SAVE_MARGIN_S


def wait(runs: Path, entry: dict[str, Any], *, poll: float = 30.0,
         on_update: Callable[[Update], None] = lambda update: None, api: Any = None,
         now: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep) -> tuple[str, str, list[str]]:
    """Poll the kernel until it stops; (final status, failure message, log lines). The entry
    is saved whenever its status changes. A kernel NEW_SCRIPT or QUEUED too long, or still
    going past `wait_limit`, ends the wait in a KitError; the limits count from this wait's
    start, so `remote attach` waits afresh. Ctrl-C (KeyboardInterrupt) leaves the kernel alone."""
    api = api or client.make_api()
    kernel = entry["kernel"]
    pushed = _epoch(entry.get("pushed")) or now()
    deadline = now() + wait_limit(entry)
    first_seen: dict[str, float] = {}  # status -> when this wait first saw it
    lines: list[str] = []
    while True:
        status, failure = kernel_api.kernel_status(kernel, api)
        seen = now()
        first_seen.setdefault(status, seen)
        if status == "RUNNING" or status not in WAITING:
            lines = log_lines(kernel_api.kernel_log(kernel, api)) or lines
        if status == "ERROR":
            failure = kernel_reason(lines) or failure
        if status != entry.get("status") or failure != entry.get("failure", ""):
            entry.update(status=status, failure=failure)
            if status == "RUNNING" and not entry.get("started"):
                entry["started"] = _now()
            if status not in WAITING:
                entry["finished"] = _now()
            save_entry(runs, entry)
        on_update(Update(status, max(0.0, seen - pushed), tuple(lines[-5:])))
        if status not in WAITING:
            return status, failure, lines
        stuck = _stuck(entry, status, seen - first_seen[status], seen >= deadline)
        if stuck is not None:
            raise stuck
        sleep(poll)


def _stuck(entry: dict[str, Any], status: str, in_status_s: float,
           past_deadline: bool) -> KitError | None:
    """Why waiting for a kernel in `status` for `in_status_s` seconds should stop, if so."""
    kernel = entry["kernel"]
    url = entry.get("url") or f"https://www.kaggle.com/code/{kernel}"
    if status == "NEW_SCRIPT" and in_status_s >= NEW_SCRIPT_LIMIT_S:
        return KitError(
            f"kernel {kernel} was saved but Kaggle started no run of it in "
            f"{_duration(in_status_s)} (NEW_SCRIPT): open {url} to see why (a GPU needs a "
            "phone-verified account) and run it there, or push again")
    if status == "QUEUED" and in_status_s >= QUEUED_LIMIT_S:
        machine = entry.get("accelerator") or "CPU"
        return KitError(
            f"kernel {kernel} is still QUEUED after {_duration(in_status_s)}: Kaggle has no "
            f"{machine} machine free for it; wait longer, or push again with another "
            "--accelerator (none: the CPU)")
    if past_deadline:
        return KitError(
            f"kernel {kernel} is still {status} after {_duration(wait_limit(entry))}, past its "
            f"run limit and Kaggle's time to start and save it: see {url}")
    return None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def kernel_reason(lines: list[str]) -> str:
    """The kernel's own one-line reason for failing (the last such line of its log), if any."""
    return next((line.strip() for line in reversed(lines)
                 if line.strip().startswith(REASON_PREFIXES)), "")


def failure(entry: dict[str, Any], status: str, message: str, lines: list[str],
            log_path: Path | None) -> KitError:
    """One line for a kernel that stopped without a run to download."""
    # The kernel's own reason is the message then (see wait), and says more than a log tail.
    tail = "" if message and message == kernel_reason(lines) else \
        " | ".join(line.strip() for line in lines[-3:])
    where = f"; full log: {log_path}" if log_path else ""
    last = f"; last log lines: {tail}" if tail else ""
    kernel = entry["kernel"]
    if status.startswith("CANCEL"):
        return KitError(f"kernel {kernel} was cancelled ({status}) before it finished{last}")
    if any(word in message.lower() for word in TIMEOUT_WORDS):
        limit = f" of {entry['timeout']} s (--timeout)" if entry.get("timeout") else ""
        return KitError(f"kernel {kernel} ran out of time: Kaggle stopped it at its limit{limit}"
                        f" ({message}); use fewer epochs or a smaller preset{last}{where}")
    said = message or "no failure message"
    return KitError(f"kernel {kernel} failed (ERROR: {said}){last}{where}")


def save_log(runs: Path, entry: dict[str, Any], lines: list[str]) -> Path | None:
    if not lines:
        return None
    return fileio.write_text(registry_dir(runs) / f"{entry['id']}.log", "\n".join(lines) + "\n")


# ---------------------------------------------------------------- download


def fetch(runs: Path, entry: dict[str, Any], api: Any = None) -> Path:
    """Download the completed kernel's outputs; its runs move into runs/ (a pipeline's every
    stage and its record too) and cv/latest points to the final one, which keeps the kernel's
    log as kernel.log and remote.json beside config.json."""
    from kit.runs import folders as run_folders

    runs = Path(runs)
    staging = registry_dir(runs) / f"{entry['id']}.download"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        kernel_api.download_kernel_output(entry["kernel"], staging, api=api)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            if contains_credentials(path.read_bytes()):
                raise KitError(f"kernel {entry['kernel']}: its output {path.name} holds one of "
                               "your Kaggle credentials; not copied into the runs folder")
        found = sorted(p.parent for p in staging.glob("cv/*/config.json")
                       if not p.parent.is_symlink() and p.parent.name != run_folders.LATEST)
        if not found:
            raise KitError(f"kernel {entry['kernel']} completed but left no run in "
                           "/kaggle/working/cv; see its log (`python -m kit remote list`)")
        runs.mkdir(parents=True, exist_ok=True)
        final = _move_runs(entry, staging / "cv", found, runs)
        slug = entry["kernel"].split("/")[-1]
        if (staging / f"{slug}.log").is_file():
            log = "\n".join(log_lines((staging / f"{slug}.log").read_text())) + "\n"
            fileio.write_text(final / "kernel.log", log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry.update(run=final.name, downloaded=_now(), status="COMPLETE")
    if len(found) > 1:
        entry["runs"] = [p.name for p in found]
    fileio.write_json(final / "remote.json", entry)
    save_entry(runs, entry)
    run_folders.point_latest(runs, final)
    return final


def _move_runs(entry: dict[str, Any], kernel_cv: Path, found: list[Path], runs: Path) -> Path:
    """Move the kernel's runs into `runs`; the final one (a pipeline's, else the newest).

    One run takes a free name if its own is taken here. Several refer to each other by name
    (a teacher, an ensemble's members), so they keep their names, or none moves."""
    from kit.runs import files
    from kit.runs import folders as run_folders

    records = sorted(files.pipelines_dir(kernel_cv).glob("*.json"))
    final_name = found[-1].name
    if records:
        final_name = files.read_pipeline(records[-1]).get("final") or final_name
    if len(found) == 1:
        targets = {found[0]: runs / unused_name(found[0].name, lambda n: (runs / n).exists())}
    else:
        taken = [p.name for p in found if (runs / p.name).exists()]
        if taken:
            raise KitError(f"kernel {entry['kernel']}: its runs {', '.join(taken)} exist in "
                           f"{runs} already; its runs name each other, so none was moved; move "
                           "those folders away and `python -m kit remote attach` again")
        targets = {p: runs / p.name for p in found}
    for source, target in targets.items():
        # A lock names the kernel's process on Kaggle's machine; here it would only block.
        (source / run_folders.LOCK).unlink(missing_ok=True)
        shutil.move(str(source), str(target))
    if records:
        files.pipelines_dir(runs).mkdir(parents=True, exist_ok=True)
    for record in records:
        shutil.move(str(record), str(files.pipelines_dir(runs) / record.name))
    return next((t for s, t in targets.items() if s.name == final_name), targets[found[-1]])


def refresh(runs: Path, entries: list[dict[str, Any]], api: Any = None) -> list[dict[str, Any]]:
    """Ask Kaggle for the status of every entry still waiting; saves what changed."""
    waiting = [e for e in entries if e.get("status") in WAITING]
    if waiting:
        api = api or client.make_api()
    for entry in waiting:
        status, message = kernel_api.kernel_status(entry["kernel"], api)
        if (status, message) != (entry.get("status"), entry.get("failure", "")):
            entry.update(status=status, failure=message)
            if status not in WAITING:
                entry["finished"] = _now()
            save_entry(runs, entry)
    return entries
