"""Run folders: a live run's lock keeps a second `make cv` out; a dead one's is taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.runs import cv, folders


def test_a_second_start_of_a_live_run_is_refused_in_one_line(tmp_path, training, quick_config):
    run_dir = folders.new_run_dir(tmp_path, quick_config)
    (run_dir / "config.json").write_text(json.dumps(config_io.to_dict(quick_config)))
    with folders.locked(run_dir), pytest.raises(KitError) as refused:
        cv.run_cv(quick_config, training, tmp_path)
    message = str(refused.value)
    assert f"being trained by process {os.getpid()}" in message and "\n" not in message
    assert not (run_dir / folders.LOCK).exists(), "the holder releases its lock"


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / folders.LOCK).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    assert folders.lock_holder(tmp_path) is None
    with folders.locked(tmp_path):
        assert json.loads((tmp_path / folders.LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / folders.LOCK).exists()


def test_engine_settings_do_not_make_another_run(quick_config):
    faster = config_io.override(quick_config, ["engine.checkpoint_seconds=5",
                                               "engine.fold_batching=vmap"])
    assert folders.same_work(faster, quick_config)
    assert not folders.same_work(config_io.override(quick_config, ["train.epochs=3"]),
                              quick_config)


def test_scoring_fewer_epochs_makes_another_run_only_where_the_scores_choose(quick_config):
    """A run started before `default` scored every 6th epoch resumes under it: under
    train.select=last the scores choose nothing."""
    last = config_io.override(quick_config, ["train.select=last"])
    assert folders.same_work(config_io.override(last, ["train.validate_every=6"]), last)
    assert not folders.same_work(config_io.override(last, ["train.validate_every=6"]),
                                 quick_config)


def test_two_new_runs_in_one_second_get_two_folders(tmp_path, quick_config):
    first, second = (folders.new_run_dir(tmp_path, quick_config) for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()


def test_taking_the_lock_removes_what_a_killed_writer_left_half_written(tmp_path):
    from kit.core import fileio

    folder = tmp_path / "folds" / "shared-0"
    folder.mkdir(parents=True)
    left = [tmp_path / ".keypoint-error.png.x1y2.part", folder / ".oof.npz.abcd.part"]
    for path in left:
        path.write_bytes(b"half")
    fileio.write_text(tmp_path / "report.md", "kept")
    with folders.locked(tmp_path):
        assert not any(path.exists() for path in left)
    assert (tmp_path / "report.md").read_text() == "kept"
