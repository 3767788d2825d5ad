"""Atomic file writes: a temporary name beside the target, then a rename, so that a crash
never leaves a half-written file that a later command would read as valid."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kit.core.errors import KitError

# A full disk, or a full quota: the same to a user.
FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto the target on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    # mkstemp makes owner-only files; a data file should get the user's usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except OSError as error:
        if error.errno not in FULL:
            raise
        raise KitError(f"{target.parent}: no space left on the device writing {target.name} "
                       "(nothing half-written is kept); free some space and run the command "
                       "again: a run resumes where it stopped") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(target: Path | str, data: bytes) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


def write_text(target: Path | str, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: Path | str, data: Any) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays, Paths: the values a report holds.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
