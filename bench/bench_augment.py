"""Throughput of the jitted `kit.model.augment.augment` on batches of 64 random 96x96 faces.

Run: python bench/bench_augment.py   (prints {"augment_images_per_s": ...})
"""
from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp

from kit.config import AugmentConfig
from kit.core.keypoints import COLUMNS, IMAGE_SIZE, flip_permutation
from kit.model.augment import augment

BATCH = 64
STEPS = 50
WARMUP = 3
REPEATS = 5  # the median of several timed runs, since other work shares this machine's cores


def run(batch: int = BATCH, steps: int = STEPS, repeats: int = REPEATS) -> dict:
    """Images per second through augment with the default config, after compilation."""
    config = AugmentConfig()
    permutation = flip_permutation(COLUMNS)
    data_key, keypoint_key = jax.random.split(jax.random.PRNGKey(0))
    images = jax.random.uniform(data_key, (batch, IMAGE_SIZE, IMAGE_SIZE), jnp.float32)
    # Keypoints spread over the middle of the frame, as faces are, all present.
    keypoints = jax.random.uniform(
        keypoint_key, (batch, len(COLUMNS)), jnp.float32, minval=20.0, maxval=76.0
    )
    mask = jnp.ones_like(keypoints)
    step = jax.jit(augment, static_argnames="config")
    keys = jax.random.split(jax.random.PRNGKey(1), steps + WARMUP)
    for i in range(WARMUP):
        jax.block_until_ready(step(keys[i], images, keypoints, mask, config, permutation))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(WARMUP, WARMUP + steps):
            # Block every step, as a train step that consumes the batch would.
            jax.block_until_ready(step(keys[i], images, keypoints, mask, config, permutation))
        rates.append(batch * steps / (time.perf_counter() - start))
    return {
        "augment_images_per_s": statistics.median(rates),
        "augment_images_per_s_best": max(rates),
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "backend": jax.default_backend(),
        "load_average_1min": os.getloadavg()[0],  # other work on the cores slows every figure
    }


if __name__ == "__main__":
    print(run())
