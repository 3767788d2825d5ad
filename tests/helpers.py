"""Helpers of tests and benchmarks alone (production code never needs them): a fold's fresh
training state, a batch built on the host, a network's parameter count, and folds of a small
network trained through the loop."""
from __future__ import annotations

import os

import jax
import numpy as np

from kit import config as config_io
from kit.config import Config
from kit.model import tasks
from kit.runs.folds import assign_folds, fold_rows
from kit.training import loop, train

NETWORK = "4"  # on the 60 synthetic rows: 30 training rows a fold, 3 steps of 8 an epoch
# The quick preset in steps of 8, checkpointing at every chance, a chunk a step: the loop's
# every path in a few seconds.
SMALL = ["train.batch_size=8", "train.eval_batch_size=16", "train.epochs=2",
         "engine.checkpoint_seconds=0", "engine.chunk_seconds=0.000001"]


def set_flags(assignments: list[str]) -> list[str]:
    """Config assignments as the command line takes them: --set KEY=VALUE each."""
    return [word for assignment in assignments for word in ("--set", assignment)]


def one_device_environment() -> dict[str, str]:
    """The environment of a kit process a test starts where the test is not about devices:
    its tiny network on one CPU device, not split over two that wait on each other."""
    return dict(os.environ, KIT_CPU_DEVICES="1")


def init_state(config: Config, task: train.Task, fold_seed: int) -> train.TrainState:
    """The fresh TrainState of one fold, as the engine makes it for a group of folds."""
    net, optimizer, _ = train.build(config, task)
    return jax.jit(train.make_init(net, optimizer, config.train.ema,
                                   train.resolved_precision(config),
                                   swa=bool(config.train.swa_epochs)))(
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


def small_config(quick_config: Config) -> Config:
    return config_io.override(quick_config, SMALL)


def train_folds(config, training, folds=(0, 1), checkpoint_dir=None, listener=None,
                targets=None, stats=None) -> dict:
    """{fold: FoldResult} of NETWORK's folds trained together by the loop (checkpoints in
    checkpoint_dir, where given)."""
    assignment = assign_folds(config, training)
    if targets is None:
        targets = tasks.network_targets(NETWORK, training.keypoints)
    data = loop.NetworkData(training.images, targets)
    jobs = [loop.FoldJob(fold, *fold_rows(assignment, NETWORK, fold),
                         None if checkpoint_dir is None else checkpoint_dir / f"fold-{fold}.npz")
            for fold in folds]
    results = loop.train_folds(config, tasks.task_for(NETWORK), NETWORK, data, jobs,
                               listener or loop.Listener(), stats or loop.Stats())
    return {result.fold: result for result in results}


class Chunks(loop.Listener):
    """Counts the loop's chunks of steps; raises KeyboardInterrupt after the `stop`-th (0:
    never), where a Ctrl-C held until that chunk's end would stop the run."""

    def __init__(self, stop: int = 0):
        self.stop, self.count = stop, 0

    def progress(self, network, fold_steps):
        self.count += 1
        if self.count == self.stop:
            raise KeyboardInterrupt
