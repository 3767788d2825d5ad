"""Train-step throughput (images/s) of each preset's network on this machine, augmentation
included, after compilation; with several devices, both fold placements side by side:
"split" (one fold, each batch split over the devices, which meet every step) and "whole"
(a fold on each device, never meeting), and one fold on one device (a fold left over under
whole folds). They are timed in turns, so a load shared with other work hits each alike:
compare their ratio, not the absolute figures."""
from __future__ import annotations

import jax
import numpy as np

from bench.common import median_seconds
from kit import config as config_io
from kit.model.tasks import network_names, task_for
from kit.training import programs, train
from tests.helpers import batch_of, init_state

REPEATS = 3  # the median: a single timing moves by 20% here


def placements(config) -> dict:
    """name -> (images a step, a function that runs `steps` steps and waits) for each way
    this machine can place the preset's (first) network's train step."""
    task = task_for(network_names(config)[0])
    train_step = train.build(config, task)[2]
    size = config.train.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (size, 96, 96), dtype=np.uint8)
    keypoints = rng.uniform(30, 66, (size, task.outputs)).astype(np.float32)
    host_batch = batch_of(images, keypoints, np.arange(size), config.train.learning_rate)
    rate = host_batch.pop("learning_rate")
    state = init_state(config, task, 0)
    count = jax.local_device_count()

    def runner(step, state, batch, rate):
        carry = [state]

        def run_steps(steps: int) -> None:
            for _ in range(steps):
                carry[0], metrics = step(carry[0], {**batch, "learning_rate": rate})
            jax.block_until_ready(metrics)

        return run_steps

    # Split over the devices as training splits it (one per core on a CPU: kit.training.runtime).
    split = programs.Placement.for_batch(size)
    ways = {"split": (size, runner(jax.jit(train_step), split.replicated(state),
                                   split.split(host_batch, 0), split.replicated(rate)))}
    if count > 1:
        one = programs.Placement.for_folds(1)
        ways["one device"] = (size, runner(jax.jit(train_step), one.replicated(state),
                                           one.replicated(host_batch), one.replicated(rate)))
        whole = programs.Placement.for_folds(count)

        def fold_each(states, batches, rates):  # a device's fold: the block's only one
            state, metrics = train_step(programs.fold_of(states, 0),
                                        {**programs.fold_of(batches, 0),
                                         "learning_rate": rates[0]})
            return programs.stack([state]), programs.stack([metrics])

        step = jax.jit(whole.program(lambda states, batch: fold_each(
            states, {k: v for k, v in batch.items() if k != "learning_rate"},
            batch["learning_rate"]), (True, True)))
        stacked = lambda tree: programs.stack([tree] * count)
        ways["whole"] = (size * count, runner(step, whole.per_fold(stacked(state)),
                                              whole.per_fold(stacked(host_batch)),
                                              whole.per_fold(np.full(count, rate))))
    return ways


def step_rates(config, steps: int = 10, only: tuple[str, ...] | None = None) -> dict:
    """Images/s of each placement (or of those named in `only`), timed in turns."""
    ways = {name: way for name, way in placements(config).items() if only is None or name in only}
    # Compile, and let the allocator reach the step's peak memory (the first steps fault in
    # pages that later steps reuse).
    for _, run_steps in ways.values():
        run_steps(3)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(REPEATS):
        for name, (_, run_steps) in ways.items():
            times[name].append(median_seconds(lambda r=run_steps: r(steps), 1))
    return {name: images * steps / float(np.median(times[name]))
            for name, (images, _) in ways.items()}


def run(presets: tuple[str, ...] = ("seed", "default")) -> dict:
    out = {"backend": jax.default_backend(), "devices": jax.device_count()}
    for name in presets:
        rates = step_rates(config_io.preset(name))
        out[f"{name}_train_images_per_s"] = round(rates["split"], 1)
        for way in ("whole", "one device"):
            if way in rates:
                out[f"{name}_{way.replace(' ', '_')}_images_per_s"] = round(rates[way], 1)
                out[f"{name}_{way.replace(' ', '_')}_vs_split"] = round(
                    rates[way] / rates["split"], 2)
    return out


if __name__ == "__main__":
    print(run())
