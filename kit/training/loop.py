"""The training loop: a network's folds trained together, stacked on a fold axis.

`train_folds` reads top to bottom: place the data, then for each group of folds load their
states, compile the programs, and per epoch dispatch chunks of steps (two in flight, each
sized to take about `engine.chunk_seconds`), checkpoint when due, score the held-out rows
and keep each fold's weights. Ctrl-C and SIGTERM are held until the next point where a
checkpoint may be taken, which saves and then stops (kit.training.interrupts); the rerun
continues from there to exactly the same result. A runtime error of XLA (CUDA, cuDNN, the
device's memory) becomes one KitError line naming where it struck; the checkpoints so far
are kept. Everything else is a small helper below it.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kit.config import Config
from kit.core.errors import KitError
from kit.training import checkpoints, interrupts, programs, train
from kit.training.checkpoints import Progress


@dataclass(frozen=True)
class FoldJob:
    """One fold of a network: rows of the network's data to train on and to validate on."""

    fold: int
    train_rows: np.ndarray
    val_rows: np.ndarray
    checkpoint: Path | None = None


@dataclass(frozen=True)
class NetworkData:
    """What a network learns from, on the host: uint8 images (N, 96, 96), pixel targets
    (N, outputs), NaN where missing, and each value's loss weight (None: all 1)."""

    images: np.ndarray
    targets: np.ndarray
    loss_weights: np.ndarray | None = None


@dataclass
class FoldResult:
    fold: int
    params: object
    net_state: object
    history: list[dict]
    best_epoch: int  # from 1
    best_val_rmse: float


@dataclass(frozen=True)
class EpochReport:
    """One fold's epoch, as the live display shows it."""

    fold: int
    epoch: int  # from 1
    epochs: int
    train_rmse: float
    val_rmse: float | None  # None: an epoch whose end did not score the held-out rows
    best_val_rmse: float | None
    seconds: float


@dataclass
class Stats:
    """What a run's training cost, summed over its groups."""

    compile_seconds: float = 0.0  # the group programs' ahead-of-time compiles
    train_seconds: float = 0.0  # wall time in the epoch loops
    images: int = 0  # training images processed, over all folds
    groups: list[dict] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.train_seconds if self.train_seconds else 0.0

    def add_group(self, network: str, group: Group, seconds: float) -> None:
        self.train_seconds += seconds
        self.groups.append({"network": network, "folds": group.folds,
                            "batching": group.batching, "placement": group.placement.way,
                            "devices": group.placement.devices, "seconds": round(seconds, 2),
                            "compile_seconds": round(group.programs.compile_seconds, 2)})


class Listener:
    """Hooks a display implements; the defaults do nothing (tests and scripts)."""

    def run_started(self, run_dir: Path, plan: list, epochs: int) -> None: ...
    def group_started(self, network: str, folds: list[int], epoch: int, epochs: int) -> None: ...
    def progress(self, network: str, fold_steps: int) -> None: ...
    def epoch(self, network: str, reports: list[EpochReport]) -> None: ...
    def fold_finished(self, network: str, fold: int, best_val_rmse: float,
                      skipped: bool) -> None: ...
    def note(self, text: str) -> None: ...


# ---------------------------------------------------------------- the loop


def train_folds(config: Config, task: train.Task, network: str, data: NetworkData,
                jobs: list[FoldJob], listener: Listener, stats: Stats) -> Iterator[FoldResult]:
    """Train the jobs' folds, yielding each fold's result as its group finishes.

    Folds whose checkpoints stand at the same position train together, as many as
    `engine.fold_group` (0: as many as the device's memory holds, halving until they fit)."""
    placement = programs.Placement.for_batch(config.train.batch_size)
    with failures_named(f"{network} network, placing the data", placement, config):
        arrays = placement.replicated(device_arrays(data))
    pending = fold_groups(jobs, config.engine.fold_group, listener.note)
    while pending:
        group = prepare_group(config, task, network, arrays, pending.pop(0), listener.note)
        if isinstance(group, list):  # the jobs train in smaller groups, these first
            pending[:0] = group
            continue
        run = group.run
        stats.compile_seconds += group.programs.compile_seconds
        listener.group_started(network, group.folds, run.progress[0].epoch, config.train.epochs)
        started = time.perf_counter()
        with checkpoints.BackgroundWriter() as writer, interrupts.Deferred() as interrupt:
            saver = Saver(writer, group.jobs, interrupt, config.engine.checkpoint_seconds)
            try:
                while not finished(config, run.progress):
                    epoch_started = time.perf_counter()
                    train_epoch(config, group, run, listener, stats, saver)
                    # The epoch's end: score the held-out rows where due, keep the weights.
                    improved, progress, reports = end_epoch(
                        config, network, group.jobs, run.progress, jax.device_get(run.sums),
                        held_out_errors(config, group, run), time.perf_counter() - epoch_started)
                    run.best = group.programs.keep_best(run.best, run.states,
                                                        group.placement.per_fold(improved))
                    run.progress, run.step, run.sums = progress, 0, None
                    listener.epoch(network, reports)
                    if not finished(config, run.progress):
                        saver.when_due(run)
                # Saved as finished, so a run stopped before every fold's model is written
                # writes the rest on its rerun without training again.
                saver.save(run)
                interrupt.check()
            except KeyboardInterrupt:
                # A listener's or the held signal's, raised where the run's fields agree: the
                # last dispatched chunk finishes and is saved. A second signal stops at once.
                if not interrupt.forced:
                    jax.block_until_ready(run.states)
                    saver.save(run)
                    writer.wait()
                raise
            except jax.errors.JaxRuntimeError as error:
                raise KitError(failure_line(error, run.stage, group.placement, config)) from None
        stats.add_group(network, group, time.perf_counter() - started)
        yield from fold_results(group.jobs, run.best, run.progress)


# ---------------------------------------------------------------- set-up


class GroupPrograms(NamedTuple):
    """A group's compiled programs and what they take unchanged every epoch."""

    step: Callable  # the training steps (FOLD_BATCHINGS' make_steps), compiled
    early: Callable | None  # the same at train.early_size, for progressive resizing's epochs
    calls: Callable  # FOLD_BATCHINGS' calls: the dispatches that cover a chunk of steps
    evaluate: Callable
    keep_best: Callable
    totals: jax.Array  # (folds,) steps of each fold's schedule
    val_rows: jax.Array  # (folds, chunks, chunk) validation rows, chunks split over devices
    val_real: jax.Array  # 1 for each real row, 0 for padding
    steps_per_epoch: int  # the longest fold's
    compile_seconds: float


def device_arrays(data: NetworkData) -> dict:
    """The arrays the programs gather batches from: uint8 images, pixel targets (0 where
    missing) and their mask: 0 where missing, else the value's loss weight."""
    present = ~np.isnan(data.targets)
    mask = present if data.loss_weights is None else np.where(present, data.loss_weights, 0.0)
    return {"images": np.ascontiguousarray(data.images, np.uint8),
            "keypoints": np.where(present, data.targets, 0.0).astype(np.float32),
            "mask": mask.astype(np.float32)}


def fold_groups(jobs: list[FoldJob], fold_group: int,
                note: Callable[[str], None]) -> list[list[FoldJob]]:
    """Jobs whose checkpoints stand at the same position, in groups of at most `fold_group`
    (0: all of them); a corrupt checkpoint is said with `note` and its fold starts again."""
    by_position: dict[tuple[int, int], list[FoldJob]] = {}
    for job in jobs:
        by_position.setdefault(checkpoints.saved_position(job.checkpoint, job.fold, note),
                               []).append(job)
    limit = fold_group or len(jobs)
    return [same[start:start + limit] for same in by_position.values()
            for start in range(0, len(same), limit)]


def oversize(group: GroupPrograms | None, folds: int) -> str | None:
    """Why `folds` folds must train in halves, or None: compiling their programs ran out of
    memory (group None), or the programs need more than 0.8 of what the device holds."""
    half = math.ceil(folds / 2)
    if group is None:
        return (f"{folds} folds together ran out of the device's memory while compiling: "
                f"training them in groups of {half}")
    need, have = programs.program_bytes(group.step), programs.device_memory_bytes()
    if need and have and need > 0.8 * have:
        return (f"{folds} folds together need {need / 2**30:.1f} GiB, the device holds "
                f"{have / 2**30:.1f}: training them in groups of {half}")
    return None


def load_group(config: Config, task: train.Task, network: str, jobs: list[FoldJob],
               note: Callable[[str], None]):
    """Stacked states and best weights, from checkpoints or fresh, and each fold's
    progress."""
    net, optimizer, _ = train.build(config, task)
    init = jax.jit(jax.vmap(train.make_init(net, optimizer, config.train.ema,
                                            train.resolved_precision(config),
                                            swa=bool(config.train.swa_epochs))))
    fresh = init(jnp.stack([train.fold_key(config, task, job.fold) for job in jobs]))
    states, bests, progress = [], [], []
    for index, job in enumerate(jobs):
        state = programs.fold_of(fresh, index)
        state, best, fold_progress = checkpoints.resume_fold(
            job.checkpoint, job.fold, state, train.kept_weights(state), note)
        states.append(state)
        bests.append(best)
        progress.append(fold_progress)
    if len({p.position for p in progress}) > 1:  # a checkpoint failed to load since grouping
        raise KitError(f"{network} network: {fold_names(jobs)} stand at different positions; "
                       "run `make cv` again to regroup them")
    return programs.stack(states), programs.stack(bests), progress


def compile_group(config: Config, task: train.Task, batching: str,
                  placement: programs.Placement, arrays: dict, jobs: list[FoldJob],
                  states, best) -> GroupPrograms:
    """The group's programs for its shapes, compiled ahead of time (or read from disk)."""
    net, _, train_step = train.build(config, task)
    way = programs.FOLD_BATCHINGS[batching]
    folds, batch = len(jobs), config.train.batch_size
    fold_steps = np.array([train.steps_per_epoch(len(job.train_rows), batch) for job in jobs])
    steps = int(fold_steps.max())
    totals = placement.per_fold((fold_steps * config.train.epochs).astype(np.int32))
    val_rows, val_real = placement.batches(programs.validation_arrays(
        [job.val_rows for job in jobs], placement.padded(config.train.eval_batch_size)), 2)
    states, best = placement.per_fold((states, best))
    sums = placement.per_fold({k: jnp.zeros(folds, jnp.float32)
                               for k in programs.zero_metrics()})
    order = placement.batches(np.zeros((folds, steps, batch), np.int32), 2)
    valid = placement.per_fold(np.zeros((folds, steps), bool))
    bound = placement.replicated(np.int32(0))
    active = placement.per_fold(np.ones(folds, bool))
    seconds = []

    def compiled(function, *args, donate=()):
        program, took = programs.compile_program(function, *args, donate=donate)
        seconds.append(took)
        return program

    # Which arguments have a fold axis: under whole folds each device runs its own.
    def step_program(step_function):
        return compiled(placement.program(way.make_steps(step_function, config.train),
                                          (True, True, False, True, True, True, False, False)),
                        states, sums, arrays, order, valid, totals, bound, bound, donate=(0,))

    step = step_program(train_step)
    evaluate = compiled(placement.program(programs.make_evaluate(net, way.over_folds),
                                          (True, True, False, True, True, True)),
                        *train.kept_weights(states), arrays, val_rows, val_real, active)
    keep_best = compiled(placement.program(programs.keep_best, (True, True, True)), best,
                         states, active)
    early = (step_program(train.early_step(config, task))
             if train.early_epochs(config.train) else None)
    return GroupPrograms(step, early, way.calls, evaluate, keep_best, totals, val_rows,
                         val_real, steps, sum(seconds))


# ---------------------------------------------------------------- a group and its run


@dataclass
class GroupRun:
    """A group's training as last dispatched, which is what a checkpoint saves: the stacked
    states and kept weights, the epoch's metric sums so far (None between epochs), each
    fold's progress and the step of the epoch in hand. `chunk`: steps the next dispatch
    takes; `stage`: where a runtime error would have struck, for its one line."""

    states: object
    best: object
    sums: object
    progress: list[Progress]
    step: int
    chunk: int = 1  # 1 until a chunk is timed
    stage: str = ""


@dataclass(frozen=True)
class Group:
    """Folds that train together, set up: their jobs, where they run, the data placed there,
    the compiled programs, and their run (from checkpoints or fresh), which training updates."""

    network: str
    jobs: list[FoldJob]
    placement: programs.Placement
    arrays: dict
    programs: GroupPrograms
    batching: str
    where: str  # "15 network, folds 1, 2", for error lines
    run: GroupRun

    @property
    def folds(self) -> list[int]:
        return [job.fold for job in self.jobs]


@dataclass
class Saver:
    """Checkpoints of a group, written by the background writer: when `every` seconds have
    passed since the last, or at once where a held Ctrl-C or SIGTERM waits for one (which
    then stops the run)."""

    writer: checkpoints.BackgroundWriter
    jobs: list[FoldJob]
    interrupt: interrupts.Deferred
    every: float
    last_saved: float = field(default_factory=time.monotonic)

    def when_due(self, run: GroupRun) -> None:
        if checkpoint_due(time.monotonic() - self.last_saved, self.every,
                          self.interrupt.requested):
            self.save(run)
            self.interrupt.check()

    def save(self, run: GroupRun) -> None:
        save_group(self.writer, self.jobs, run.states, run.best, run.sums, run.progress,
                   run.step)
        self.last_saved = time.monotonic()


def prepare_group(config: Config, task: train.Task, network: str, arrays: dict,
                  jobs: list[FoldJob], note: Callable[[str], None]) -> Group | list[list[FoldJob]]:
    """The jobs set up to train together, or the smaller groups they must train in instead:
    parts that divide evenly over the devices (engine.fold_placement), or halves where the
    group does not fit the device's memory (only with engine.fold_group 0, "auto")."""
    parts = programs.group_placements(config.engine.fold_placement, config.train.batch_size,
                                      len(jobs))
    if len(parts) > 1:
        return fold_parts(jobs, [size for size, _ in parts])
    placement = parts[0][1]
    arrays = placement.replicated(arrays)
    batching = programs.resolve_batching(config.engine.fold_batching)
    where = f"{network} network, {fold_names(jobs)}"
    auto_group = not config.engine.fold_group and len(jobs) > 1
    try:
        states, best, progress = load_group(config, task, network, jobs, note)
        compiled = compile_group(config, task, batching, placement, arrays, jobs, states, best)
    except jax.errors.JaxRuntimeError as error:
        if not (auto_group and is_out_of_memory(error)):
            raise KitError(failure_line(error, f"{where}, compiling", placement,
                                        config)) from None
        compiled = None
    too_big = oversize(compiled, len(jobs)) if auto_group else None
    if too_big:
        note(too_big)
        half = math.ceil(len(jobs) / 2)
        return [jobs[:half], jobs[half:]]
    states, best = placement.per_fold((states, best))
    run = GroupRun(states, best, None, progress, progress[0].step,
                   stage=f"{where}, the first step")
    return Group(network, jobs, placement, arrays, compiled, batching, where, run)


def train_epoch(config: Config, group: Group, run: GroupRun, listener: Listener,
                stats: Stats, saver: Saver) -> None:
    """The rest of the epoch in hand, in chunks of steps, two in flight: the device starts
    the next while the host reads the last one's figures. run's states, sums and step are
    always the last dispatched chunk's, so a checkpoint may be taken while it still runs."""
    placement, steps, epoch = group.placement, group.programs.steps_per_epoch, run.progress[0].epoch
    program = group.programs.early if train.is_early(config.train, epoch) else group.programs.step
    order, valid = epoch_batches(config, group.jobs, run.progress, steps)
    batches = (group.arrays, placement.batches(order, 2), placement.per_fold(valid),
               group.programs.totals)
    run.sums = placement.per_fold(progress_sums(run.progress))
    in_flight: collections.deque = collections.deque()
    last_done = time.perf_counter()
    while run.step < steps or in_flight:
        if run.step < steps and len(in_flight) < 2:
            end = min(steps, run.step + run.chunk)
            run.states, run.sums = run_chunk(program, group.programs.calls, placement,
                                             run.states, run.sums, batches, valid, run.step,
                                             end)
            in_flight.append((run.step, end, run.sums))
            run.step = end
            continue
        begin, end, done = in_flight.popleft()
        jax.block_until_ready(done)
        now = time.perf_counter()
        run.chunk = chunk_size(end - begin, now - last_done, config.engine.chunk_seconds, steps)
        last_done = now
        run.stage = f"{group.where}, epoch {epoch + 1}"
        fold_steps = int(valid[:, begin:end].sum())
        stats.images += fold_steps * config.train.batch_size
        listener.progress(group.network, fold_steps)
        if run.step < steps:
            saver.when_due(run)


def held_out_errors(config: Config, group: Group, run: GroupRun) -> np.ndarray | None:
    """(folds, 2) squared error and value count of each fold's held-out rows under its kept
    weights, at the epochs train.validate_every scores (None at the others)."""
    if not train.is_validated(config.train, run.progress[0].epoch):
        return None
    active = group.placement.per_fold(np.array([not p.stopped for p in run.progress]))
    return np.asarray(group.programs.evaluate(*train.kept_weights(run.states), group.arrays,
                                              group.programs.val_rows,
                                              group.programs.val_real, active))


# ---------------------------------------------------------------- the loop's helpers


def run_chunk(program: Callable, calls: Callable, placement: programs.Placement, states,
              sums, batches: tuple, valid: np.ndarray, first: int, last: int):
    """Steps first..last-1 of every fold, queued without waiting (one dispatch under "vmap",
    one a fold and step under "map"). batches: the data, order, valid and totals arrays on
    the devices; valid: the host's copy."""
    for a, b in calls(first, last, placement.local_valid(valid)):
        states, sums = program(states, sums, *batches, placement.replicated(np.int32(a)),
                               placement.replicated(np.int32(b)))
        if placement.blocking:
            jax.block_until_ready(sums)
    return states, sums


def chunk_size(steps: int, seconds: float, target_seconds: float, most: int) -> int:
    """Steps for the next chunk to take about target_seconds at the rate the last one ran
    (`steps` in `seconds`): at least 1, at most `most` (an epoch)."""
    rate = steps / max(seconds, 1e-6)
    return max(1, min(most, round(target_seconds * rate)))


def checkpoint_due(since_last: float, every: float, interrupted: bool) -> bool:
    """Save now: `every` seconds have passed since the last checkpoint, or a held Ctrl-C or
    SIGTERM waits for one before it stops the run."""
    return interrupted or since_last >= every


def finished(config: Config, progress: list[Progress]) -> bool:
    return progress[0].epoch >= config.train.epochs or all(p.stopped for p in progress)


def epoch_batches(config: Config, jobs: list[FoldJob], progress: list[Progress],
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(folds, steps, batch) rows of the epoch in hand and (folds, steps) which steps count:
    a shorter fold's padding steps and a stopped fold's do not."""
    batch, epoch = config.train.batch_size, progress[0].epoch
    order = np.zeros((len(jobs), steps, batch), np.int32)
    valid = np.zeros((len(jobs), steps), bool)
    for index, job in enumerate(jobs):
        picks = train.epoch_order(train.training_seeds(config), job.fold, epoch,
                                  len(job.train_rows), batch)
        order[index, : len(picks)] = job.train_rows[picks]
        valid[index, : len(picks)] = not progress[index].stopped
    return order, valid


def progress_sums(progress: list[Progress]) -> dict:
    """(folds,) metric sums of the epoch so far: zeros, or a resumed checkpoint's."""
    return {k: np.array([p.sums.get(k, 0.0) for p in progress], np.float32)
            for k in programs.zero_metrics()}


def end_epoch(config: Config, network: str, jobs: list[FoldJob], progress: list[Progress],
              sums: dict, errors: np.ndarray | None, seconds: float):
    """Early stopping and which folds keep their weights, from the epoch's metric sums and
    held-out errors (None: not scored): (improved, the folds' new progress, the epoch's
    reports). The old progress is left as it was, so an interrupt sees either the epoch
    before its end or after."""
    progress = [copy.deepcopy(p) for p in progress]
    improved = np.zeros(len(jobs), bool)
    reports = []
    for index, (job, fold) in enumerate(zip(jobs, progress)):
        if fold.stopped:
            continue
        epoch = fold.epoch
        count = float(sums["count"][index])
        train_rmse = math.sqrt(float(sums["squared_error"][index]) / max(count, 1.0))
        val_rmse = None
        if errors is not None:
            squared, values = errors[index]
            val_rmse = math.sqrt(squared / values) if values > 0 else float("nan")
        # Weights whose predictions are not finite must never be kept as the fold's.
        held_out_diverged = errors is not None and values > 0 and not math.isfinite(val_rmse)
        if not math.isfinite(train_rmse) or held_out_diverged:
            raise KitError(
                f"{network} network, fold {job.fold + 1}: training diverged at epoch "
                f"{epoch + 1} ({'held-out predictions' if held_out_diverged else 'the loss'} "
                f"not finite); lower train.learning_rate (now {config.train.learning_rate})")
        better = val_rmse is not None and (fold.best_val_rmse is None
                                           or val_rmse < fold.best_val_rmse)
        if config.train.select == "last" or better:
            improved[index] = True
            fold.best_epoch, fold.bad_epochs = epoch, 0
            if val_rmse is not None:
                fold.best_val_rmse = val_rmse
        else:
            fold.bad_epochs += 1
        # Held-out rows may stop a fold only where they also choose its weights.
        fold.stopped = (config.train.select == "best"
                        and fold.bad_epochs >= config.train.patience)
        fold.history.append({"epoch": epoch + 1, "train_rmse": train_rmse,
                             "val_rmse": val_rmse, "seconds": seconds})
        reports.append(EpochReport(job.fold, epoch + 1, config.train.epochs, train_rmse,
                                   val_rmse, fold.best_val_rmse, seconds))
    for fold in progress:
        fold.epoch, fold.step, fold.sums = fold.epoch + 1, 0, {}
    return improved, progress, reports


def save_group(writer: checkpoints.BackgroundWriter, jobs: list[FoldJob], states, best,
               sums, progress: list[Progress], step: int) -> None:
    """Host copies of the group at `step` of the epoch in hand (its metric sums so far with
    it; sums None between epochs); the files are written by the background thread."""
    host_sums = jax.device_get(sums) if sums is not None and step > 0 else None
    checkpoints.submit_group(writer, [job.checkpoint for job in jobs],
                             checkpoints.host_copy((states, best)), host_sums, progress, step)


def fold_results(jobs: list[FoldJob], best, progress: list[Progress]) -> Iterator[FoldResult]:
    host = checkpoints.host_copy(best)
    for index, (job, fold) in enumerate(zip(jobs, progress)):
        params, net_state = programs.fold_of(host, index)
        yield FoldResult(job.fold, params, net_state, fold.history, fold.best_epoch + 1,
                         float("nan") if fold.best_val_rmse is None else fold.best_val_rmse)


def fold_parts(jobs: list[FoldJob], sizes: list[int]) -> list[list[FoldJob]]:
    """The jobs cut into consecutive parts of these sizes."""
    ends = np.cumsum(sizes)
    return [jobs[end - size:end] for size, end in zip(sizes, ends)]


def fold_names(jobs: list[FoldJob]) -> str:
    """"fold 2" or "folds 1, 2, 3" (counted from 1, as the display counts them)."""
    numbers = ", ".join(str(job.fold + 1) for job in jobs)
    return f"fold {numbers}" if len(jobs) == 1 else f"folds {numbers}"


# ---------------------------------------------------------------- runtime errors


def is_out_of_memory(error: Exception) -> bool:
    """A JAX runtime error that says the device's memory ran out (XLA's wording varies by
    backend)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


# What to try for a runtime error whose text holds the key (in lower case): the first key
# found wins; the empty key is found in every error.
REMEDIES = {
    "cudnn": ("the installed jax wants a cuDNN this machine lacks: reinstall with `pip "
              "install -e '.[cuda12]'`, or run on the CPU with JAX_PLATFORMS=cpu"),
    "cuda": ("the driver and the installed jax's CUDA disagree: update the driver or reinstall "
             "with `pip install -e '.[cuda12]'`, or run on the CPU with JAX_PLATFORMS=cpu"),
    "": "run again with --debug for XLA's whole report, or on the CPU with JAX_PLATFORMS=cpu",
}


def failure_line(error: Exception, where: str, placement: programs.Placement,
                 config: Config) -> str:
    """The one line a KitError says for a JAX runtime error: `where` it struck (a network's
    folds and their stage: compiling, the first step, epoch N), on which devices, XLA's
    first line, and what to try."""
    device = placement.mesh.devices.flat[0]
    devices = (f"{placement.devices} {device.platform} device"
               f"{'s' if placement.devices > 1 else ''} ({device.device_kind})")
    said = " ".join(str(error).split("\n", 1)[0].split())[:200]
    if is_out_of_memory(error):
        remedy = (f"the device ran out of memory: lower --set engine.fold_group (now "
                  f"{config.engine.fold_group or 'auto'}) or train.batch_size (now "
                  f"{config.train.batch_size})")
    else:
        text = str(error).lower()
        remedy = next(advice for key, advice in REMEDIES.items() if key in text)
    return (f"{where}, on {devices}: {said}; {remedy}; the last checkpoint is kept, so "
            "`make cv` continues from it")


@contextlib.contextmanager
def failures_named(where: str, placement: programs.Placement, config: Config) -> Iterator[None]:
    """A JAX runtime error inside becomes failure_line's KitError."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        raise KitError(failure_line(error, where, placement, config)) from None
