"""`python -m kit cv --remote kaggle`: the same cv, run by Kaggle on its GPU.

The working tree's kit code (kit/ and pyproject.toml, as git lists them: tracked and untracked
but not ignored) goes into one script kernel (Kaggle script kernels are a single file) with
kit/kaggle/kernel_setup.py as its body; the competition is attached as a data source. While Kaggle runs
it, its status and log are polled; when it completes, the run it left in /kaggle/working/cv
comes back into cv/<run-id>/ exactly as a local run, with remote.json beside config.json.

Every remote run has an entry in cv/.remote/<id>.json (kernel, version, commit, times, status),
so waiting can stop (Ctrl-C) and start again (`remote attach`) without touching the kernel.
Each run is its own private kernel (kit-cv-<id>), so runs never wait for or replace each other.
Nothing here prints: the CLI shows what `wait` reports.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
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
from kit.kaggle import client

PACKAGE = Path(__file__).resolve().parents[1]  # kit/
CODE_PATHS = ("kit", "pyproject.toml")
KERNEL_PREFIX = "kit-cv-"
CODE_FILE = "kit_cv.py"
REGISTRY = ".remote"  # under the runs folder; hidden, so it is never taken for a run
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"  # a free Kaggle GPU; the client's help names it
WAITING = ("QUEUED", "NEW_SCRIPT", "RUNNING", "CANCEL_REQUESTED")
MAIN_BLOCK = 'if __name__ == "__main__":'
TIMEOUT_WORDS = ("timeout", "timed out", "time limit", "execution duration", "maximum run time")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------- the code that is pushed


@dataclass(frozen=True)
class Code:
    """The kit's code as pushed: a gzip tar of its files, and where it came from."""

    bundle: bytes
    files: tuple[str, ...]
    commit: str | None  # None outside a git checkout
    changed: tuple[str, ...]  # files that differ from the commit (untracked ones included)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.bundle).hexdigest()

    @property
    def source(self) -> str:
        if self.commit is None:
            return f"an installed kit (no git checkout), code sha256 {self.sha256[:12]}"
        dirty = f", dirty: {len(self.changed)} changed files" if self.changed else ""
        return f"commit {self.commit[:12]}{dirty}, code sha256 {self.sha256[:12]}"


def _git(root: Path, *args: str) -> str | None:
    try:
        # --no-optional-locks: `git status` must not rewrite the index of a checkout in use.
        result = subprocess.run(["git", "--no-optional-locks", *args], cwd=root,
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def collect_code(root: Path = PACKAGE.parent) -> Code:
    """kit/ and pyproject.toml of the working tree, as they are now (saved edits included)."""
    listed = _git(root, "ls-files", "-z", "-c", "-o", "--exclude-standard", "--", *CODE_PATHS)
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    if listed is None:  # not a checkout: the installed package itself
        names = [str(path.relative_to(root)) for path in sorted(PACKAGE.rglob("*.py"))]
        names += ["pyproject.toml"] if (root / "pyproject.toml").is_file() else []
        commit = None
    else:
        names = [name for name in listed.split("\0") if name]
    # A tracked file deleted in the working tree is still listed; what is there is what runs.
    names = sorted({name for name in names if (root / name).is_file()
                    and "__pycache__" not in Path(name).parts})
    status = _git(root, "status", "--porcelain", "-z", "--", *CODE_PATHS) if commit else ""
    changed = tuple(sorted(entry[3:] for entry in (status or "").split("\0") if len(entry) > 3))
    files = {name: (root / name).read_bytes() for name in names}
    found = [name for name, content in files.items() if client.contains_credentials(content)]
    if found:
        raise KitError(f"{root / found[0]}: holds one of your Kaggle credentials; it would be "
                       "pushed to Kaggle with the kit's code: remove it from there first")
    if "pyproject.toml" not in files or not any(n.startswith("kit/") for n in files):
        raise KitError(f"{root}: found no kit/ package and pyproject.toml to push")
    return Code(_tar(files), tuple(names), commit, changed)


def _tar(files: dict[str, bytes]) -> bytes:
    # Fixed times and owners: the same code gives the same bytes, so its sha256 names it.
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def script_text(code: Code, cv_args: list[str]) -> str:
    """The kernel's single code file: kit/kaggle/kernel_setup.py with the code and flags put in."""
    template = (PACKAGE / "kaggle" / "kernel_setup.py").read_text()
    if template.count(MAIN_BLOCK) != 1:
        raise AssertionError(f"kit/kaggle/kernel_setup.py must end in one `{MAIN_BLOCK}` block")
    head, tail = template.split(MAIN_BLOCK)
    names = (f"SOURCE = {code.source!r}\nCV_ARGS = {list(cv_args)!r}\n"
             f"BUNDLE = {base64.b64encode(code.bundle).decode()!r}\n\n\n")
    return (f"# `python -m kit cv --remote kaggle` from {code.source}.\n"
            f"# kit/kaggle/kernel_setup.py with the kit's code below as BUNDLE (a base64 gzip tar).\n"
            + head + names + MAIN_BLOCK + tail)


def cv_flags(argv: list[str], remote_flags: Callable[[Any], None]) -> list[str]:
    """The cv flags of a command line (`[--data D] cv --preset P ... --remote kaggle`), less the
    top-level options and the flags that only steer the remote run (`remote_flags` adds them
    to a parser), so the kernel's cv gets every flag the user gave, in the user's order."""
    import argparse

    words = list(argv)
    verb = 0
    while verb < len(words) and words[verb] != "cv":
        verb += 2 if words[verb] in ("--data", "--runs") else 1
    steering = argparse.ArgumentParser(add_help=False)
    remote_flags(steering)
    return steering.parse_known_args(words[verb + 1:])[1]


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


def new_id(runs: Path, preset: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    base = f"{stamp}-{re.sub(r'[^a-z0-9]+', '-', preset.lower()).strip('-') or 'cv'}"
    remote_id, suffix = base, 1
    while (registry_dir(runs) / f"{remote_id}.json").exists():
        suffix += 1
        remote_id = f"{base}-{suffix}"
    return remote_id


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


def push(runs: Path, cv_args: list[str], preset: str, options: KernelOptions,
         api: Any = None) -> dict[str, Any]:
    """Push the working tree's kit as a new kernel that runs `cv cv_args`; its registry entry."""
    code = collect_code()
    if client.contains_credentials(" ".join(cv_args)):
        raise KitError("the cv flags hold one of your Kaggle credentials; they would be pushed")
    api = api or client.make_api()
    remote_id = new_id(runs, preset)
    kernel = f"{client.kaggle_username(api)}/{KERNEL_PREFIX}{remote_id}"
    with tempfile.TemporaryDirectory(prefix="kit-kernel-") as folder:
        write_kernel_folder(Path(folder), kernel, script_text(code, cv_args), options)
        pushed = client.push_kernel(Path(folder), timeout=options.timeout,
                                       accelerator=options.accelerator if options.gpu else None,
                                       api=api)
    entry = {
        "id": remote_id, "kernel": kernel, "version": pushed["version"], "url": pushed["url"],
        "cv_args": list(cv_args), "source": code.source, "commit": code.commit,
        "dirty": bool(code.changed), "changed_files": list(code.changed),
        "code_sha256": code.sha256,
        "code_files": len(code.files), "public": options.public,
        "accelerator": options.accelerator if options.gpu else None,
        "internet": options.internet, "timeout": options.timeout,
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


def wait(runs: Path, entry: dict[str, Any], *, poll: float = 30.0,
         on_update: Callable[[Update], None] = lambda update: None, api: Any = None,
         now: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep) -> tuple[str, str, list[str]]:
    """Poll the kernel until it stops; (final status, failure message, log lines). The entry
    is saved whenever its status changes. Ctrl-C (KeyboardInterrupt) leaves the kernel alone."""
    api = api or client.make_api()
    kernel = entry["kernel"]
    pushed = _epoch(entry.get("pushed")) or now()
    lines: list[str] = []
    while True:
        status, failure = client.kernel_status(kernel, api)
        if status == "RUNNING" or status not in WAITING:
            lines = log_lines(client.kernel_log(kernel, api)) or lines
        if status != entry.get("status") or failure != entry.get("failure", ""):
            entry.update(status=status, failure=failure)
            if status == "RUNNING" and not entry.get("started"):
                entry["started"] = _now()
            if status not in WAITING:
                entry["finished"] = _now()
            save_entry(runs, entry)
        on_update(Update(status, max(0.0, now() - pushed), tuple(lines[-5:])))
        if status not in WAITING:
            return status, failure, lines
        sleep(poll)


def failure(entry: dict[str, Any], status: str, message: str, lines: list[str],
            log_path: Path | None) -> KitError:
    """One line for a kernel that stopped without a run to download."""
    tail = " | ".join(line.strip() for line in lines[-3:])
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
    """Download the completed kernel's outputs; its run becomes runs/<run-id>/ (cv/latest
    points there) with the kernel's log as kernel.log and remote.json beside config.json."""
    from kit.runs import folders as run_folders

    runs = Path(runs)
    staging = registry_dir(runs) / f"{entry['id']}.download"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        client.download_kernel_output(entry["kernel"], staging, api=api)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            if client.contains_credentials(path.read_bytes()):
                raise KitError(f"kernel {entry['kernel']}: its output {path.name} holds one of "
                               "your Kaggle credentials; not copied into the runs folder")
        found = sorted(p.parent for p in staging.glob("cv/*/config.json")
                       if not p.parent.is_symlink() and p.parent.name != run_folders.LATEST)
        if not found:
            raise KitError(f"kernel {entry['kernel']} completed but left no run in "
                           "/kaggle/working/cv; see its log (`python -m kit remote list`)")
        source = found[-1]
        run_dir = runs / source.name
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = runs / f"{source.name}-{suffix}"
        runs.mkdir(parents=True, exist_ok=True)
        # A lock names the kernel's process on Kaggle's machine; here it would only block.
        (source / run_folders.LOCK).unlink(missing_ok=True)
        shutil.move(str(source), str(run_dir))
        slug = entry["kernel"].split("/")[-1]
        if (staging / f"{slug}.log").is_file():
            log = "\n".join(log_lines((staging / f"{slug}.log").read_text())) + "\n"
            fileio.write_text(run_dir / "kernel.log", log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry.update(run=run_dir.name, downloaded=_now(), status="COMPLETE")
    fileio.write_json(run_dir / "remote.json", entry)
    save_entry(runs, entry)
    run_folders.point_latest(runs, run_dir)
    return run_dir


def refresh(runs: Path, entries: list[dict[str, Any]], api: Any = None) -> list[dict[str, Any]]:
    """Ask Kaggle for the status of every entry still waiting; saves what changed."""
    waiting = [e for e in entries if e.get("status") in WAITING]
    if waiting:
        api = api or client.make_api()
    for entry in waiting:
        status, message = client.kernel_status(entry["kernel"], api)
        if (status, message) != (entry.get("status"), entry.get("failure", "")):
            entry.update(status=status, failure=message)
            if status not in WAITING:
                entry["finished"] = _now()
            save_entry(runs, entry)
    return entries
