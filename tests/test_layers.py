"""The packages' layering (pyproject.toml's import-linter contract): the kit keeps it, and an
upward import breaks it, so a new cycle or an import from a higher layer fails CI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], check=False, cwd=root, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_the_kit_keeps_its_layers():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "kit", tmp_path / "kit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "kit" / "core" / "errors.py"
    # core, the bottom layer, reaching up into the CLI.
    errors.write_text(errors.read_text() + "\nfrom kit.cli import console  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "kit.core.errors -> kit.cli.console" in result.stdout
