"""Faults a Kaggle session (and any machine) brings: a full disk while a run writes, and run
files damaged by hand or cut short. Each ends in one line naming the file and what was
expected, leaves nothing half-written, and a rerun carries on."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit.core.errors import KitError
from kit.results import ensemble
from kit.runs import files, predict
from tests.conftest import QUICK
from tests.helpers import one_device_environment, set_flags

REPO = Path(__file__).resolve().parents[1]


def kit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False, env=one_device_environment())


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB tmpfs (root only: elsewhere the test is skipped), grown by calling it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)

    try:
        yield folder, grow
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_the_run_resumes_once_there_is_room(
        synth_competition, small_disk):
    _, data_dir = synth_competition
    runs, grow = small_disk
    overrides = set_flags(QUICK)
    command = ("--data", str(data_dir), "--runs", str(runs), "cv", "--preset", "quick",
               *overrides)
    full = kit(*command)
    assert full.returncode == 1, full.stderr[-2000:]
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left on the device writing" in lines[0], lines
    assert "Traceback" not in full.stderr
    assert not list(runs.rglob("*.part")), "a half-written file was left behind"
    grow()
    again = kit(*command)
    assert again.returncode == 0, again.stderr[-2000:]
    run_dirs = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()
                and not p.name.startswith(".")]
    assert len(run_dirs) == 1 and files.is_finished(run_dirs[0])


@pytest.fixture
def run_copy(quick_run, tmp_path):
    copy = tmp_path / "cv" / quick_run.name
    shutil.copytree(quick_run, copy)
    return copy


DAMAGES = {
    "config.json": ('{"folds": 5', "not a readable run config"),
    "folds.json": ('{"networks": {}}', "no training_rows"),
    "oof.csv": ("row,column\n1,2\n", "columns row,column; expected a CSV with columns"),
    "report.json": ("[]", "no subsets"),
    "engine.json": ('{"calls": 3}', "`calls` is damaged"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_damaged_run_file_is_refused_in_one_line_naming_it(run_copy, name):
    text, expected = DAMAGES[name]
    (run_copy / name).write_text(text)
    readers = {"config.json": files.read_config, "folds.json": files.read_folds,
               "oof.csv": files.read_oof, "report.json": files.read_report,
               "engine.json": files.read_engine_calls}
    with pytest.raises(KitError) as error:
        readers[name](run_copy)
    message = str(error.value)
    assert str(run_copy / name) in message and expected in message and "\n" not in message


def test_a_fold_files_damage_is_refused_naming_the_file(run_copy):
    folder = files.fold_dir(run_copy, "15", 0)
    (folder / files.HISTORY).write_text('{"history": []}')
    with pytest.raises(KitError, match=r"history.json: no best_val_rmse"):
        files.read_history(folder)
    (folder / files.FOLD_OOF).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(KitError, match=r"oof.npz: unreadable"):
        files.read_fold_oof(folder)
    (folder / files.MODEL).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(KitError, match=r"model.npz: unreadable"):
        predict.load_fold_models(run_copy, "15")


def test_a_damaged_ensemble_json_is_refused(run_copy):
    (run_copy / files.ENSEMBLE).write_text('{"members": "a", "weights": {}}')
    with pytest.raises(KitError, match=r"ensemble.json: `members` or `weights` damaged"):
        files.ensemble_members(run_copy)
    (run_copy / files.ENSEMBLE).unlink()
    with pytest.raises(KitError, match=r"at least 2 runs"):
        ensemble.check_members([ensemble.load_member(run_copy)])


def test_kit_report_on_an_oof_with_other_columns_is_one_line(run_copy, synth_competition):
    _, data_dir = synth_competition
    (run_copy / files.OOF).write_text("row,subset,fold,wrong\n1,15,0,2\n")
    result = kit("--data", str(data_dir), "--runs", str(run_copy.parent), "report",
                 run_copy.name, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "oof.csv: columns row,subset,fold,wrong" in lines[0], lines
    assert json.loads((run_copy / files.CONFIG).read_text())  # the rest is untouched
