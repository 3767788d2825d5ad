"""Train-step throughput (images/s) of each preset's network on this machine, augmentation
included, after compilation."""
from __future__ import annotations

import jax
import numpy as np

from bench.common import median_seconds
from kit import config as config_io
from kit.model.heads import networks, task_for
from kit.training import programs, train
from tests.helpers import batch_of, init_state

REPEATS = 3  # the median: a single timing moves by 20% here


def step_rate(config, steps: int = 10) -> float:
    """Images/s of the preset's (first) network's train step, augmentation included."""
    task = task_for(networks(config)[0])
    train_step = jax.jit(train.compiled(config, task)[2])
    size = config.train.batch_size
    # Split over the devices as training splits it (one per core on a CPU: kit.training.runtime).
    placement = programs.Placement.for_batch(size)
    state = placement.replicated(init_state(config, task, 0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (size, 96, 96), dtype=np.uint8)
    keypoints = rng.uniform(30, 66, (size, task.outputs)).astype(np.float32)
    batch = batch_of(images, keypoints, np.arange(size), config.train.learning_rate)
    batch = {**placement.split({k: v for k, v in batch.items() if k != "learning_rate"}, 0),
             "learning_rate": placement.replicated(batch["learning_rate"])}
    # Compile, and let the allocator reach the step's peak memory (the first steps fault in
    # pages that later steps reuse).
    for _ in range(3):
        state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    carry = [state]

    def run_steps():
        for _ in range(steps):
            carry[0], metrics = train_step(carry[0], batch)
        jax.block_until_ready(metrics)

    return size * steps / median_seconds(run_steps, REPEATS)


def run(presets: tuple[str, ...] = ("seed", "default")) -> dict:
    out = {"backend": jax.default_backend(), "devices": jax.device_count()}
    for name in presets:
        out[f"{name}_train_images_per_s"] = round(step_rate(config_io.preset(name)), 1)
    return out


if __name__ == "__main__":
    print(run())
