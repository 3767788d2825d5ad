"""The kit's own source tree: the folder holding kit/ and pyproject.toml, git run there, and
the commit it is at. One place, so a submission's manifest and a remote run's entry name the
same commit the same way.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # kit/
ROOT = PACKAGE.parent  # the checkout (or site-packages, for an installed kit)


def git(*args: str, root: Path = ROOT) -> str | None:
    """git's output in `root`, or None when git is missing, fails or `root` is no checkout."""
    try:
        # --no-optional-locks: `git status` must not rewrite the index of a checkout in use.
        result = subprocess.run(["git", "--no-optional-locks", *args], cwd=root,
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def commit(root: Path = ROOT) -> str | None:
    """The commit `root` is checked out at (40 hex digits), or None outside a git checkout."""
    text = (git("rev-parse", "HEAD", root=root) or "").strip()
    return text if len(text) == 40 else None
