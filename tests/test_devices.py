"""Training uses every local device: with two (simulated) CPU devices each batch is split over
both and the folds' results match the one-device run; a run interrupted on two devices
continues on one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from kit.training import runtime
runtime.prepare_process()  # as an entry point does: the session's compile cache
from pathlib import Path
import jax, numpy as np
from kit.model import heads
from kit import config as config_io
from kit.runs import cv
from kit.training import loop
from kit.training import programs
from kit.data import synth
stop_after, folder = int(sys.argv[1]), Path(sys.argv[2])
images, points = synth.make_faces(48, seed=3, source="full")
config = config_io.override(config_io.preset("quick"), [
    "train.epochs=2", "train.batch_size=8", "augment.noise_std=0",
    "engine.checkpoint_seconds=0"])

class StopAfter(loop.Listener):
    def epoch(self, network, reports):
        if reports[0].epoch == stop_after:
            raise KeyboardInterrupt

placement = programs.Placement.for_batch(config.train.batch_size)
data = loop.NetworkData(images, points.astype(np.float32))
rows = np.arange(48)
jobs = [loop.FoldJob(f, rows[rows % 2 != f], rows[rows % 2 == f], folder / f"fold-{f}.npz")
        for f in (0, 1)]
try:
    results = list(loop.train_folds(config, heads.task_for("15"), "15", data, jobs,
                                    StopAfter(), loop.Stats()))
except KeyboardInterrupt:
    print(json.dumps({"interrupted": True}))
    sys.exit(0)
print(json.dumps({"devices": jax.device_count(), "split_over": placement.devices,
                  "val": [[h["val_rmse"] for h in r.history] for r in results]}))
"""


def run(devices: int, folder: Path, stop_after: int = 0) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(stop_after), str(folder)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_close(a: list, b: list) -> None:
    for fold_a, fold_b in zip(a, b):
        assert fold_a == pytest.approx(fold_b, rel=1e-3)


def test_two_devices_split_the_batch_and_match_one_device(tmp_path):
    one, two = run(1, tmp_path / "one"), run(2, tmp_path / "two")
    assert (one["devices"], one["split_over"]) == (1, 1)
    assert (two["devices"], two["split_over"]) == (2, 2)
    assert len(one["val"]) == 2 and all(len(v) == 2 for v in one["val"])
    assert_close(two["val"], one["val"])


def test_a_run_interrupted_on_two_devices_continues_on_one(tmp_path):
    assert run(2, tmp_path, stop_after=1) == {"interrupted": True}
    assert (tmp_path / "fold-0.npz").exists() and (tmp_path / "fold-1.npz").exists()
    resumed = run(1, tmp_path)
    assert_close(resumed["val"], run(1, tmp_path / "fresh")["val"])
