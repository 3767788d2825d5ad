"""The compiled programs of training, built from `train_step`, and where their arrays live.

- the step programs: `make_chunk_of_steps` (a chunk of steps of every fold of a group in one
  dispatch) or `make_fold_step` (one step of one fold), named in FOLD_BATCHINGS; batches
  are gathered on the device from index arrays, so the data crosses to the device once per
  run.
- `evaluate`: each fold's validation squared error, on the device; a few scalars come back.
- `keep_best`: each fold's best-epoch weights, kept on the device.
- `predict_batched`: test-time prediction of any number of images, batches split over the
  devices.

Folds are independent trainings of one program on different rows and keys. Under "vmap" a
group's folds run as one batched program, many steps a dispatch (an accelerator fills up with
them); under "map" each dispatch is one step of one fold, because on CPUs XLA's convolutions
batched over folds run far slower, and their gradients inside loops slower still (see
make_fold_step; figures in docs/engine.md). Either way a Placement says where the folds run:
each batch split over the devices, or whole folds on each.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kit.config import TrainConfig
from kit.core.errors import KitError
from kit.model import networks
from kit.training import train

AXIS = "devices"


# ---------------------------------------------------------------- devices


@dataclass(frozen=True)
class Placement:
    """Where a group's arrays live on a mesh of local devices. "split": each batch split over
    the devices, state and data replicated, the devices meeting every step for gradients and
    batch-norm statistics. "whole": the fold axis split over the devices, each holding whole
    folds (state, batches, steps) that never meet another device's; data replicated."""

    mesh: Mesh
    way: str = "split"

    @classmethod
    def for_batch(cls, batch_size: int, devices: list | None = None) -> Placement:
        """The most local devices that divide the batch evenly (all of them, usually)."""
        devices = list(devices or jax.local_devices())
        count = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
        return cls(Mesh(np.array(devices[:count]), (AXIS,)))

    @classmethod
    def for_folds(cls, count: int, devices: list | None = None) -> Placement:
        """Whole folds on each of the first `count` local devices."""
        devices = list(devices or jax.local_devices())
        return cls(Mesh(np.array(devices[:count]), (AXIS,)), "whole")

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    @property
    def whole(self) -> bool:
        return self.way == "whole"

    @property
    def blocking(self) -> bool:
        """Wait for each program before dispatching the next. XLA:CPU's simulated devices
        meet in a rendezvous for every all-reduce, and with several such programs queued
        they can wait for each other until XLA ends the process (seen here within a minute
        of queuing a few thousand small steps; none with each one awaited). Whole folds
        never meet, so their programs queue freely and every device runs at once."""
        return (not self.whole and self.devices > 1
                and self.mesh.devices.flat[0].platform == "cpu")

    def replicated(self, tree):
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def split(self, tree, axis: int):
        """Each array's `axis` split over the devices (its length a multiple of their count)."""
        spec = PartitionSpec(*([None] * axis), AXIS)
        return jax.device_put(tree, NamedSharding(self.mesh, spec))

    def per_fold(self, tree):
        """Arrays with a leading fold axis: replicated when batches are split, else the fold
        axis split over the devices."""
        return self.split(tree, 0) if self.whole else self.replicated(tree)

    def batches(self, tree, axis: int):
        """Arrays of (folds, ..., batch) rows: `axis` (the batch's) split over the devices
        when batches are split, else the fold axis."""
        return self.split(tree, 0 if self.whole else axis)

    def padded(self, size: int) -> int:
        """A batch of `size` rounded up to a multiple of the devices that split it."""
        return size if self.whole else -(-size // self.devices) * self.devices

    def program(self, function: Callable, per_fold: tuple[bool, ...]) -> Callable:
        """`function` as each device runs it on its own folds (per_fold: which arguments
        have a fold axis; every output has one), or unchanged when batches are split."""
        if not self.whole:
            return function
        spec = {True: PartitionSpec(AXIS), False: PartitionSpec()}
        # No collectives anywhere, so replication need not be tracked (check_vma).
        return jax.shard_map(function, mesh=self.mesh, in_specs=tuple(spec[p] for p in per_fold),
                             out_specs=PartitionSpec(AXIS), check_vma=False)

    def local_valid(self, valid: np.ndarray) -> np.ndarray:
        """(folds, steps) of the group -> (folds a device, steps): a device's i-th fold's
        step counts where that of any device does (a program steps them all at once)."""
        if not self.whole:
            return valid
        return valid.reshape(self.devices, -1, valid.shape[1]).any(axis=0)


def split_parts(batch_size: int, folds: int, devices: list) -> list[tuple[int, Placement]]:
    """All the folds together, each batch split over the devices."""
    return [(folds, Placement.for_batch(batch_size, devices))]


def whole_parts(batch_size: int, folds: int, devices: list) -> list[tuple[int, Placement]]:
    """As many folds as divide evenly over the devices, whole folds on each; the rest whole
    on one device each."""
    even, rest = folds - folds % len(devices), folds % len(devices)
    return ([(even, Placement.for_folds(len(devices), devices))] if even else []) + \
        ([(rest, Placement.for_folds(rest, devices))] if rest else [])


def auto_parts(batch_size: int, folds: int, devices: list) -> list[tuple[int, Placement]]:
    """CPUs: split (whole folds did not beat it on 2 shared cores, docs/engine.md).
    Accelerators: whole folds where every device gets some, the rest split; whole folds save
    the all-reduce over PCIe, by reasoning, not yet measured."""
    if devices[0].platform == "cpu":
        return split_parts(batch_size, folds, devices)
    parts = whole_parts(batch_size, folds, devices)
    if parts[-1][1].devices < len(devices):
        parts[-1] = split_parts(batch_size, parts[-1][0], devices)[0]
    return parts


# engine.fold_placement's names ("auto": auto_parts, by its rule).
FOLD_PLACEMENTS: dict[str, Callable[[int, int, list], list[tuple[int, Placement]]]] = {
    "split": split_parts,
    "whole": whole_parts,
}


def group_placements(choice: str, batch_size: int, folds: int,
                     devices: list | None = None) -> list[tuple[int, Placement]]:
    """How a group of `folds` folds trains under engine.fold_placement=`choice`: (folds,
    placement) of its consecutive parts. One device is one placement, whatever the choice."""
    devices = list(devices or jax.local_devices())
    if len(devices) == 1:
        return split_parts(batch_size, folds, devices)
    return (auto_parts if choice == "auto" else FOLD_PLACEMENTS[choice])(batch_size, folds,
                                                                          devices)


def resolve_batching(choice: str, platform: str | None = None) -> str:
    """"auto" is "vmap" on accelerators and "map" on CPUs (see the module's note and
    make_fold_step), and "map" wherever this jax cannot batch a training step over folds;
    "vmap" asked of such a jax is refused in one line."""
    if choice == "vmap" and not can_batch_folds():
        raise KitError(f"engine.fold_batching=vmap: jax {jax.__version__} cannot batch a "
                       "convolution's weight gradient over folds of device-placed arrays "
                       "(its batching rule refuses an out_sharding); expected auto or map here, "
                       "or a newer jax")
    if choice != "auto":
        return choice
    if (platform or jax.default_backend()) == "cpu" or not can_batch_folds():
        return "map"
    return "vmap"


@functools.cache
def can_batch_folds() -> bool:
    """Whether vmap over folds of a convolution's gradient runs on arrays placed on a mesh,
    as the engine places them. jax 0.7.2 (Kaggle's and Colab's image) raises
    NotImplementedError in the convolution's batching rule there; jax 0.10 runs it."""
    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y**2).sum()

    mesh = Mesh(np.array(jax.local_devices()[:1]), (AXIS,))
    place = NamedSharding(mesh, PartitionSpec())
    weights = jax.device_put(jnp.ones((2, 3, 3, 1, 1)), place)
    images = jax.device_put(jnp.ones((2, 1, 4, 4, 1)), place)
    try:
        jax.jit(jax.vmap(jax.grad(loss))).lower(weights, images)
    except NotImplementedError:
        return False
    return True


# ---------------------------------------------------------------- programs


def zero_metrics() -> dict:
    return {name: jnp.zeros((), jnp.float32) for name in ("loss", "squared_error", "count")}


def _one_fold_step(train_step: Callable, train_config: TrainConfig) -> Callable:
    """(data, state, rows, ok, total) -> (state, metrics): one step of one fold, or none
    where not `ok` (its state left exactly as it was, its metrics 0)."""

    def one_fold(data, state, rows, ok, total):
        batch = {
            "images": data["images"][rows],
            "keypoints": data["keypoints"][rows],
            "mask": data["mask"][rows],
            "learning_rate": train.learning_rate(train_config, state.step, total),
        }
        if train_config.swa_epochs:
            batch["average_rate"] = train.average_rate(train_config, state.step, total)
        # A select, not a lax.cond: XLA:CPU compiles a conditional's branches like a loop's
        # body (the same slow gradients), and under vmap a cond computes both sides anyway.
        stepped, metrics = train_step(state, batch)
        keep = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), stepped, state)
        return keep, jax.tree_util.tree_map(lambda m: jnp.where(ok, m, 0.0), metrics)

    return one_fold


# What both step programs take. states: TrainStates stacked on a fold axis. sums: (folds,)
# running totals of the step metrics. data: the network's device arrays, "images" uint8
# (N, 96, 96), "keypoints" and "mask" (N, outputs). order: (folds, steps, batch) rows of data.
# valid: (folds, steps), False for a fold's padding steps and for stopped folds. totals:
# (folds,) steps of each fold's schedule.


def make_chunk_of_steps(train_step: Callable, train_config: TrainConfig) -> Callable:
    """(states, sums, data, order, valid, totals, first, last) -> (states, sums): steps
    first..last-1 of every fold, the folds batched (vmap), in a loop with traced bounds so
    a chunk of any length is one program. For accelerators ("vmap")."""
    one_fold = _one_fold_step(train_step, train_config)

    def chunk_of_steps(states, sums, data, order, valid, totals, first, last):
        def body(i, carry):
            states, sums = carry
            states, metrics = jax.vmap(one_fold, in_axes=(None, 0, 0, 0, 0))(
                data, states, order[:, i], valid[:, i], totals)
            return states, jax.tree_util.tree_map(jnp.add, sums, metrics)

        return jax.lax.fori_loop(first, last, body, (states, sums))

    return chunk_of_steps


def make_fold_step(train_step: Callable, train_config: TrainConfig) -> Callable:
    """(states, sums, data, order, valid, totals, fold, step) -> (states, sums): step `step`
    of fold `fold` alone, outside any loop. For CPUs ("map"): the host loops over folds and
    steps and leaves out the steps that do not count. XLA:CPU runs a convolution's gradient
    inside a loop or a conditional many times slower than outside one (docs/engine.md), so
    there no training step may sit inside control flow."""
    one_fold = _one_fold_step(train_step, train_config)

    def fold_step(states, sums, data, order, valid, totals, fold, step):
        state = jax.tree_util.tree_map(lambda leaf: leaf[fold], states)
        state, metrics = one_fold(data, state, order[fold, step], valid[fold, step],
                                  totals[fold])
        states = jax.tree_util.tree_map(lambda all_, one: all_.at[fold].set(one), states, state)
        sums = jax.tree_util.tree_map(lambda all_, one: all_.at[fold].add(one), sums, metrics)
        return states, sums

    return fold_step


def fold_step_calls(first: int, last: int, valid: np.ndarray) -> list[tuple[int, int]]:
    """(fold, step) of every step from first to last-1 that counts, step by step."""
    return [(int(fold), step) for step in range(first, last)
            for fold in np.flatnonzero(valid[:, step])]


class FoldBatching(NamedTuple):
    """How a group's folds run: `make_steps(train_step, train_config)`, the training steps'
    function to compile; `calls(first, last, valid)`, the (a, b) of each dispatch (its
    last two arguments) that covers steps first..last-1 (valid: the host's (folds, steps)
    copy); `over_folds(f, *per-fold args)`, f applied over their leading fold axis."""

    make_steps: Callable[[Callable, TrainConfig], Callable]
    calls: Callable[[int, int, np.ndarray], list[tuple[int, int]]]
    over_folds: Callable


# engine.fold_batching's names ("auto" picks one of them: resolve_batching).
FOLD_BATCHINGS: dict[str, FoldBatching] = {
    "vmap": FoldBatching(make_chunk_of_steps, lambda first, last, valid: [(first, last)],
                         lambda f, *xs: jax.vmap(f)(*xs)),
    "map": FoldBatching(make_fold_step, fold_step_calls,
                        lambda f, *xs: jax.lax.map(lambda args: f(*args), xs)),
}


def make_evaluate(net: hk.TransformedWithState, over_folds: Callable) -> Callable:
    """(params, net_state, data, rows, real, active) -> (folds, 2): each fold's squared
    pixel error and value count over its validation rows (rows, real: (folds, chunks,
    chunk); real 0 marks padding); over_folds: a FoldBatching's. Plain predictions, no
    test-time augmentation."""

    def evaluate(params, net_state, data, rows, real, active):
        def one_fold(params, net_state, rows, real, ok):
            def chunk(total, xs):
                chunk_rows, chunk_real = xs
                images = data["images"][chunk_rows].astype(jnp.float32) / 255.0
                output = net.apply(params, net_state, None, images, False)[0]
                mask = data["mask"][chunk_rows] * chunk_real[:, None]
                error = (networks.to_pixels(output) - data["keypoints"][chunk_rows]) * mask
                return total + jnp.stack([(error**2).sum(), mask.sum()]), None

            def run(_):
                return jax.lax.scan(chunk, jnp.zeros(2, jnp.float32), (rows, real))[0]

            return jax.lax.cond(ok, run, lambda _: jnp.zeros(2, jnp.float32), None)

        return over_folds(one_fold, params, net_state, rows, real, active)

    return evaluate


def keep_best(best, states: train.TrainState, improved: jax.Array):
    """(params, net_state) of each fold: the current ones (the moving average where training
    keeps one) where `improved`, else the kept."""
    def choose(kept, current):
        return jnp.where(improved.reshape((-1,) + (1,) * (kept.ndim - 1)), current, kept)

    return jax.tree_util.tree_map(choose, best, train.kept_weights(states))


def validation_arrays(val_rows: list[np.ndarray], chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Each fold's validation rows as (folds, chunks, chunk) rows and a mask of the real ones
    (0 for padding), so folds with different counts share one evaluate program."""
    chunks = max(math.ceil(max(len(r) for r in val_rows) / chunk), 1)
    rows = np.zeros((len(val_rows), chunks * chunk), np.int32)
    real = np.zeros((len(val_rows), chunks * chunk), np.float32)
    for index, fold_rows in enumerate(val_rows):
        rows[index, : len(fold_rows)] = fold_rows
        real[index, : len(fold_rows)] = 1.0
    shape = (len(val_rows), chunks, chunk)
    return rows.reshape(shape), real.reshape(shape)


def stack(trees: list):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def fold_of(tree, index: int):
    """One fold's slice of a tree stacked on a fold axis."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


# ---------------------------------------------------------------- compiling


def compile_program(function: Callable, *args, donate: tuple[int, ...] = ()):
    """Ahead-of-time compile for these arguments' shapes and placements: (program, seconds).
    The persistent cache (kit.training.runtime) makes a second run's compile a disk read."""
    started = time.perf_counter()
    program = jax.jit(function, donate_argnums=donate).lower(*args).compile()
    return program, time.perf_counter() - started


def program_bytes(program) -> int | None:
    """What a compiled program needs on its device: arguments, outputs and temporaries."""
    try:
        stats = program.memory_analysis()
    except (NotImplementedError, AttributeError, jax.errors.JaxRuntimeError):
        return None
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def device_memory_bytes(device=None) -> int | None:
    """What the device can hold: KIT_DEVICE_MEMORY (bytes, for a device shared with other
    work), else an accelerator's limit, or the host's memory for CPUs."""
    import os

    if os.environ.get("KIT_DEVICE_MEMORY"):
        return int(float(os.environ["KIT_DEVICE_MEMORY"]))
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------- prediction


def predict_batched(predict: Callable, params, net_state, images: np.ndarray,
                    batch_size: int, placement: Placement | None = None) -> np.ndarray:
    """Predict any number of images with one compiled shape (the last batch is padded),
    each batch split over the devices."""
    placement = placement or Placement.for_batch(batch_size)
    batch_size = placement.padded(batch_size)
    params, net_state = placement.replicated((params, net_state))
    out = []
    for begin in range(0, len(images), batch_size):
        chunk = images[begin : begin + batch_size]
        padded = np.zeros((batch_size,) + images.shape[1:], images.dtype)
        padded[: len(chunk)] = chunk
        predictions = predict(params, net_state, placement.split(padded, 0))
        out.append(np.asarray(predictions)[: len(chunk)])
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------- compile time

_clocks: list[CompileClock] = []  # the clocks running now; jax.monitoring has one listener


class CompileClock:
    """Seconds this process spends tracing, lowering and compiling (or reading compiled
    programs from the persistent cache) while the clock runs, for every program."""

    EVENTS = ("/jax/core/compile/backend_compile_duration",
              "/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self):
        if not _listening:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _listening.append(True)
        _clocks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _clocks.remove(self)


_listening: list[bool] = []


def _on_duration(event: str, seconds: float, **_) -> None:
    if event in CompileClock.EVENTS:
        for clock in _clocks:
            clock.seconds += seconds
