"""The command line as a user meets it: one-line errors, the data summary, show/compare,
augment-preview, and `make download` without credentials."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kit.cli import main as cli

REPO = Path(__file__).resolve().parents[1]


def run_kit(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or REPO, timeout=300, check=False)


def clean_env(home: Path) -> dict:
    """No Kaggle credentials of any kind, a home folder of the test's own, and the kit's
    folders in it too (never the checkout's data/, cv/ or submissions/, nor /kaggle)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(home)
    env["KAGGLE_CONFIG_DIR"] = str(home / ".kaggle")
    for name, folder in (("KIT_DATA", "data"), ("KIT_RUNS", "cv"),
                         ("KIT_SUBMISSIONS", "submissions"), ("KIT_KAGGLE_ROOT", "no-kaggle")):
        env[name] = str(home / folder)
    return env


def test_download_without_credentials_fails_in_one_clear_line(tmp_path):
    result = run_kit("--data", str(tmp_path / "data"), "download", env=clean_env(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no Kaggle credentials" in lines[0] and "kaggle.json" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "training.csv").exists()


def test_make_download_without_credentials_fails_cleanly(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = clean_env(tmp_path)  # KIT_DATA: the user's own data/raw (a real download) is not seen
    result = subprocess.run(["make", "-s", "download"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode != 0
    assert "error: no Kaggle credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "training.csv").exists()


def test_a_bad_archive_is_one_line_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "facial-keypoints-detection.zip"
    bad.write_bytes(b"<!DOCTYPE html><html>Sign in</html>")
    result = run_kit("--data", str(tmp_path / "data"), "download", "--archive", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "HTML page" in result.stderr and str(bad) in result.stderr
    debug = run_kit("--debug", "--data", str(tmp_path / "data"), "download", "--archive", str(bad))
    assert "Traceback" in debug.stderr


def test_help_lists_the_verbs():
    text = cli.parser().format_help()
    for verb in ("download", "data", "cv", "submit", "submissions", "show", "compare",
                 "augment-preview", "synth", "score"):
        assert verb in text


def test_data_summary_prints_counts_patterns_and_lookup(synth_competition, capsys):
    made, data_dir = synth_competition
    assert cli.main(["--data", str(data_dir), "data"]) == 0
    out = capsys.readouterr().out
    assert f"{made['n_train']} rows" in out
    assert f"15-key subset (all 30 values) {made['n_train_complete']} rows" in out
    assert f"{made['n_test']} images" in out and f"{made['n_lookup_rows']} rows" in out
    assert f"{made['n_test_full']} images asked 30 values" in out
    assert f"{made['n_test_core']} images asked 8 values" in out
    assert "Missing-keypoint patterns" in out and "left_eye_center" in out


def test_show_prints_the_numbers_of_report_json(quick_run, capsys):
    assert cli.main(["--runs", str(quick_run.parent), "show", quick_run.name]) == 0
    out = capsys.readouterr().out
    stored = json.loads((quick_run / "report.json").read_text())
    assert f"{stored['overall_rmse']:.4f}" in out
    assert f"{stored['leaderboard_estimate']['rmse']:.4f}" in out
    for entry in stored["subsets"].values():
        assert f"{entry['rmse']:.4f}" in out
        for value in entry["per_keypoint"].values():
            assert f"{value:.4f}" in out


def test_show_without_any_run_says_to_run_make_cv(tmp_path, capsys):
    assert cli.main(["--runs", str(tmp_path), "show"]) == 1
    assert "run `make cv` first" in capsys.readouterr().err


def test_augment_preview_writes_a_png_grid(synth_competition, tmp_path, capsys):
    _, data_dir = synth_competition
    out = tmp_path / "preview.png"
    assert cli.main(["--data", str(data_dir), "augment-preview", "--images", "3",
                     "--versions", "4", "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
    assert width > height  # one row per face, the original and 4 augmented copies across


def test_score_verb_matches_the_independent_scorer(synth_competition, tmp_path, capsys):
    made, _ = synth_competition
    truth = Path(made["solution"])
    shifted = tmp_path / "sub.csv"
    lines = truth.read_text().splitlines()
    shifted.write_text("\n".join([lines[0]] + [
        f"{row.split(',')[0]},{float(row.split(',')[1]) + 3.0}" for row in lines[1:]]) + "\n")
    assert cli.main(["score", str(shifted), str(truth)]) == 0
    assert capsys.readouterr().out.strip() == "3.0000"
