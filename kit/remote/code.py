"""The code a remote run pushes: the working tree's kit (kit/ and pyproject.toml, as git lists
them: tracked and untracked but not ignored) as a gzip tar, put into one script with
kit/kaggle/kernel_setup.py as its body (Kaggle script kernels are a single file), and the cv
flags that script passes on.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core import source
from kit.core.errors import KitError
from kit.kaggle.credentials import contains_credentials

CODE_PATHS = ("kit", "pyproject.toml")
MAIN_BLOCK = 'if __name__ == "__main__":'


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


def collect_code(root: Path = source.ROOT) -> Code:
    """kit/ and pyproject.toml of the working tree, as they are now (saved edits included)."""
    listed = source.git("ls-files", "-z", "-c", "-o", "--exclude-standard", "--", *CODE_PATHS,
                        root=root)
    commit = source.commit(root)
    if listed is None:  # not a checkout: the installed package itself
        names = [str(path.relative_to(root)) for path in sorted((root / "kit").rglob("*.py"))]
        names += ["pyproject.toml"] if (root / "pyproject.toml").is_file() else []
        commit = None
    else:
        names = [name for name in listed.split("\0") if name]
    # A tracked file deleted in the working tree is still listed; what is there is what runs.
    names = sorted({name for name in names if (root / name).is_file()
                    and "__pycache__" not in Path(name).parts})
    status = source.git("status", "--porcelain", "-z", "--", *CODE_PATHS, root=root) \
        if commit else ""
    changed = tuple(sorted(entry[3:] for entry in (status or "").split("\0") if len(entry) > 3))
    files = {name: (root / name).read_bytes() for name in names}
    found = [name for name, content in files.items() if contains_credentials(content)]
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
    template = (source.PACKAGE / "kaggle" / "kernel_setup.py").read_text()
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
