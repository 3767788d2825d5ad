"""Training uses every local device: with two (simulated) CPU devices the batch is split over
both and the result matches the one-device run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, jax, numpy as np
from kit import config as config_io, synth, train
from kit.cv import task_for
images, points = synth.make_faces(48, seed=3, source="full")
points = points.astype(np.float32)
config = config_io.override(config_io.preset("quick"), ["train.epochs=2", "augment.noise_std=0"])
replicate, shard = train.device_placement(config.train.batch_size)
batch = shard(train.batch_of(images, points, np.arange(32)))
result = train.fit(config, task_for("15"), images[:40], points[:40], images[40:], points[40:])
print(json.dumps({"devices": jax.device_count(),
                  "batch_devices": len(getattr(batch["images"], "devices", lambda: [0])()),
                  "val": [h["val_rmse"] for h in result.history]}))
"""


def run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_devices_split_the_batch_and_match_one_device():
    one, two = run(1), run(2)
    assert (one["devices"], one["batch_devices"]) == (1, 1)
    assert (two["devices"], two["batch_devices"]) == (2, 2)
    for a, b in zip(one["val"], two["val"]):
        assert abs(a - b) <= 1e-2 * a
