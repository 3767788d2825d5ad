"""A CV run killed with SIGKILL at a random moment resumes to the same report as an
uninterrupted run; nothing the kit writes holds a credential."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from kit.runs import files
from tests.conftest import QUICK
from tests.helpers import set_flags

REPO = Path(__file__).resolve().parents[1]
FAKE_USER = "resume-test-user"
FAKE_KEY = "0123456789abcdef-resume-test-key"


def cv_command(data_dir: Path, runs: Path) -> list[str]:
    # A checkpoint at every chunk of steps, each chunk a step or two: a kill lands anywhere,
    # mid-epoch too (engine settings are not part of the work: the run still resumes).
    overrides = set_flags(QUICK + ["engine.checkpoint_seconds=0",
                                   "engine.chunk_seconds=0.000001"])
    return [sys.executable, "-m", "kit", "--data", str(data_dir), "--runs", str(runs), "cv",
            "--preset", "quick", *overrides]


def test_sigkill_then_rerun_gives_the_uninterrupted_report(synth_competition, quick_run,
                                                           tmp_path):
    _, data_dir = synth_competition
    runs = tmp_path / "cv"
    env = dict(os.environ, KAGGLE_USERNAME=FAKE_USER, KAGGLE_KEY=FAKE_KEY, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(cv_command(data_dir, runs), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Wait until training is under way (a first checkpoint or finished fold), then kill at a
    # random moment: mid-epoch, mid-write or between folds.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if list(runs.glob("*/folds/*/checkpoint.npz")) or list(runs.glob("*/folds/*/oof.npz")):
            break
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 3.0))
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not killed or process.returncode == -signal.SIGKILL

    rerun = subprocess.run(cv_command(data_dir, runs), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    run_dirs = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(run_dirs) == 1, "the rerun must continue the killed run, not start another"
    resumed = run_dirs[0]

    expected = json.loads((quick_run / "report.json").read_text())
    got = json.loads((resumed / "report.json").read_text())
    for key in ("overall_rmse",):
        assert f"{got[key]:.4f}" == f"{expected[key]:.4f}"
    for subset, entry in expected["subsets"].items():
        assert f"{got['subsets'][subset]['rmse']:.4f}" == f"{entry['rmse']:.4f}"
        for fold, value in entry["per_fold"].items():
            assert f"{got['subsets'][subset]['per_fold'][fold]:.4f}" == f"{value:.4f}"
    pd.testing.assert_frame_equal(files.read_oof(resumed), files.read_oof(quick_run))

    # No file the kit wrote holds the credentials it had in its environment.
    for path in resumed.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert FAKE_KEY.encode() not in content, path
            assert FAKE_USER.encode() not in content, path
    assert FAKE_KEY not in rerun.stdout + rerun.stderr
    assert not list(resumed.rglob("*.part")), "a temporary file was left behind"


def test_ctrl_c_stops_cleanly_after_a_checkpoint_and_the_rerun_finishes_the_same(
        synth_competition, quick_run, tmp_path):
    _, data_dir = synth_competition
    runs = tmp_path / "cv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(cv_command(data_dir, runs), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if list(runs.glob("*/folds/*/checkpoint.npz")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert not (run_dir / ".lock").exists()
    assert list(run_dir.glob("folds/*/checkpoint.npz")) or list(run_dir.glob("folds/*/oof.npz"))
    rerun = subprocess.run(cv_command(data_dir, runs), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    pd.testing.assert_frame_equal(files.read_oof(run_dir), files.read_oof(quick_run))
