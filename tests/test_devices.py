"""Training uses every local device, whole folds on each or each batch split over them
(engine.fold_placement). On two simulated CPU devices every placement trains each fold as
that fold trains alone on one device: bit for bit where the fold is alone on its device, to
float rounding where a two-device program trains whole folds (XLA compiles it apart from the
one-device program: about 1e-7 of the error here) or splits the batches; a run interrupted
on two devices continues on one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL_NETWORK

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import hashlib, json, sys
from kit.training import runtime
runtime.prepare_process()  # as an entry point does: the session's compile cache
from pathlib import Path
import jax, numpy as np
from kit.model import tasks
from kit import config as config_io
from kit.training import loop, programs
from kit.data import synth
stop_after, folder, runs = int(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
SMALL_NETWORK = json.loads(sys.argv[4])
images, points = synth.make_faces(48, seed=3, source="full")
data = loop.NetworkData(images, points.astype(np.float32))
rows = np.arange(48)

class StopAfter(loop.Listener):
    def epoch(self, network, reports):
        if reports[0].epoch == stop_after:
            raise KeyboardInterrupt

def digest(tree):
    leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
    return hashlib.sha256(b"".join(np.asarray(leaf).tobytes() for leaf in leaves)).hexdigest()

parts = programs.group_placements("auto", 8, 3, jax.devices())  # what auto would train
out = {"devices": jax.device_count(), "runs": [],
       "auto_parts": [[placement.way, placement.devices, count] for count, placement in parts]}
for placement, folds in runs:  # [placement, [fold, ...]]: one train_folds call each
    config = config_io.override(config_io.preset("quick"), [
        "train.epochs=2", "train.batch_size=8", "augment.noise_std=0", *SMALL_NETWORK,
        "engine.checkpoint_seconds=0", f"engine.fold_placement={placement}"])
    jobs = [loop.FoldJob(f, rows[rows % 3 != f], rows[rows % 3 == f],
                         folder / placement / f"fold-{f}.npz") for f in folds]
    stats = loop.Stats()
    try:
        results = list(loop.train_folds(config, tasks.task_for("15"), "15", data, jobs,
                                        StopAfter(), stats))
    except KeyboardInterrupt:
        out["runs"].append({"interrupted": True})
        continue
    out["runs"].append({
        "parts": [[g["placement"], g["devices"], g["folds"]] for g in stats.groups],
        "folds": {r.fold: {"val": [h["val_rmse"] for h in r.history],
                           "weights": digest((r.params, r.net_state))} for r in results}})
print(json.dumps(out))
"""


def run(devices: int, folder: Path, runs: list, stop_after: int = 0) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(stop_after), str(folder),
                           json.dumps(runs), json.dumps(SMALL_NETWORK)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == devices
    return out


def folds_of(runs: list[dict]) -> dict:
    return {int(fold): result for one in runs for fold, result in one["folds"].items()}


def assert_close(a: dict, b: dict, rel: float = 1e-3) -> None:
    assert sorted(a) == sorted(b)
    for fold in a:
        assert a[fold]["val"] == pytest.approx(b[fold]["val"], rel=rel), fold


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict:
    """Each of the three folds trained on its own, on one device."""
    folder = tmp_path_factory.mktemp("one")
    return folds_of(run(1, folder, [["auto", [f]] for f in range(3)])["runs"])


def test_every_placement_trains_each_fold_as_it_trains_alone(tmp_path, alone):
    trained = run(2, tmp_path / "two", [["split", [0, 1, 2]], ["whole", [0, 1, 2]]])
    split, whole = trained["runs"]
    assert split["parts"] == [["split", 2, [0, 1, 2]]]
    # Two folds whole on the two devices, the one left over whole on one; auto on CPUs: split.
    assert whole["parts"] == [["whole", 2, [0, 1]], ["whole", 1, [2]]]
    assert trained["auto_parts"] == [["split", 2, 3]]
    assert all(len(fold["val"]) == 2 for fold in alone.values())
    assert whole["folds"]["2"] == alone[2]  # the fold left over, whole on one device
    whole_two = {f: folds_of([whole])[f] for f in (0, 1)}
    assert_close(whole_two, {f: alone[f] for f in (0, 1)}, rel=1e-5)
    assert_close(folds_of([split]), alone)


def test_a_run_interrupted_on_two_devices_continues_on_one(tmp_path, alone):
    folds = [["whole", [0, 1]]]  # whole folds on two devices, then on one
    assert run(2, tmp_path, folds, stop_after=1)["runs"] == [{"interrupted": True}]
    assert (tmp_path / "whole" / "fold-0.npz").exists()
    assert (tmp_path / "whole" / "fold-1.npz").exists()
    resumed = run(1, tmp_path, folds)["runs"]
    assert_close(folds_of(resumed), {f: alone[f] for f in (0, 1)})
