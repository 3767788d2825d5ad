"""Helpers of tests and benchmarks alone (production code never needs them): a fold's fresh
training state, a batch built on the host, a network's parameter count."""
from __future__ import annotations

import jax
import numpy as np

from kit.config import Config
from kit.training import train


def init_state(config: Config, task: train.Task, fold_seed: int) -> train.TrainState:
    """The fresh TrainState of one fold, as the engine makes it for a group of folds."""
    net, optimizer, _ = train.build(config, task)
    return jax.jit(train.make_init(net, optimizer, config.train.ema,
                                   train.resolved_precision(config)))(
        train.fold_key(config, task, fold_seed))


def batch_of(images: np.ndarray, keypoints: np.ndarray, index: np.ndarray,
             rate: float = 0.0) -> dict:
    """A batch for train_step built on the host (training gathers its batches on the
    device from index arrays)."""
    values = keypoints[index]
    present = ~np.isnan(values)
    return {
        "images": images[index],
        "keypoints": np.where(present, values, 0.0).astype(np.float32),
        "mask": present.astype(np.float32),
        "learning_rate": np.float32(rate),
    }


def parameter_count(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
