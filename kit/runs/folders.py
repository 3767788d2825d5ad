"""Run folders: naming, finding, `latest`, and the lock a live run holds.

A run lives in cv/<run-id>/ (kit.runs.files says what it holds). `config.json` is written last
when a run is made, so a folder with it is a run that can be resumed; a `.lock` file names
the process training it, so a second `make cv` of the same config does not write into it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from kit.config import Config
from kit.core.errors import KitError
from kit.runs import files

LATEST = "latest"
LOCK = ".lock"


def new_run_dir(root: Path, config: Config) -> Path:
    """A fresh, created folder named for the time and preset (suffixed if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return new_named_dir(root, f"{stamp}-{config.preset}")


def new_named_dir(root: Path, stem: str) -> Path:
    """A fresh, created folder `stem` (or stem-2, stem-3, ... if taken)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        name = stem + (f"-{suffix}" if suffix > 1 else "")
        try:
            (Path(root) / name).mkdir()  # atomic: two processes never get the same folder
            return Path(root) / name
        except FileExistsError:
            suffix += 1


def resolve_run(root: Path, name: str | None = None) -> Path:
    """A run folder from an id, a path or None (cv/latest)."""
    root = Path(root)
    candidate = Path(name) if name else root / LATEST
    if not candidate.exists() and name:
        candidate = root / name
    if not files.is_run(candidate):
        if name:
            raise KitError(f"{candidate}: no CV run there (no config.json); see `ls {root}`")
        raise KitError(f"{root / LATEST}: no CV run yet; run `make cv` first")
    return candidate.resolve()


def point_latest(root: Path, run_dir: Path) -> None:
    link = Path(root) / LATEST
    temporary = Path(root) / f".{LATEST}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path(run_dir).name)
    os.replace(temporary, link)


def same_work(a: Config, b: Config) -> bool:
    """Configs that train the same models: engine settings change speed, not results, and
    so does how often held-out rows are scored where the scores choose nothing."""
    if a.train.select == b.train.select == "last":
        a = dataclasses.replace(a, train=dataclasses.replace(
            a.train, validate_every=b.train.validate_every))
    return dataclasses.replace(a, engine=b.engine) == b


def unfinished_run(root: Path, config: Config) -> Path | None:
    """The newest run of the same work that has no report yet: a run to resume."""
    runs = sorted(Path(root).glob(f"*/{files.CONFIG}"), reverse=True)
    for path in runs:
        run_dir = path.parent
        if run_dir.is_symlink() or files.has_report(run_dir):
            continue
        try:
            if same_work(files.read_config(run_dir), config):
                return run_dir
        except KitError:
            continue
    return None


# ---------------------------------------------------------------- the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lock_holder(run_dir: Path) -> dict | None:
    """The live process that holds the run's lock, or None (no lock, or a dead holder's)."""
    path = Path(run_dir) / LOCK
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if holder.get("host") != socket.gethostname():
        return holder  # another machine's process: it cannot be checked, so it counts
    return holder if _alive(int(holder.get("pid", -1))) else None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the half-written files (fileio's `.NAME.XXXX.part`) of a process that was
    killed mid-write; whoever takes the run's lock is its only writer, so none is live."""
    for temporary in Path(run_dir).rglob(".*.part"):
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock while training it; a lock left by a dead process is taken over."""
    path = Path(run_dir) / LOCK
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(run_dir)
            if holder is not None:
                raise KitError(
                    f"{run_dir}: being trained by process {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('started')}; wait for it, or "
                    "start a separate run with RESUME=0 (--no-resume)") from None
            path.unlink(missing_ok=True)  # the holder died: take it over
            continue
        with os.fdopen(descriptor, "w") as f:
            f.write(mine)
        break
    else:
        raise KitError(f"{path}: could not take the run's lock; remove the file if no "
                       "`make cv` is running")
    remove_stale_temporaries(run_dir)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
