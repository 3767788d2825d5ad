"""The training loop around kit.training.programs: a group of folds of one network trained
together, stacked on a fold axis (`fit_folds` makes the groups, `Group.run` trains one).

Each epoch, until every fold has its epochs or has stopped early:
1. the epoch's batch order goes to the device (`_order`); its steps go in chunks, two in
   flight, each sized to take about `engine.chunk_seconds` (kit.training.chunks);
2. after each chunk the display moves and, when `checkpoint_due`, host copies of the group's
   `Position` are written by a background thread;
3. `_end_epoch` validates every fold, keeps its best weights and stops folds that no longer
   improve; a checkpoint may follow.
Ctrl-C and SIGTERM are held until the next of those points, which saves and then stops
(kit.training.interrupts); the rerun continues from there to exactly the same result.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kit.config import Config
from kit.core.errors import KitError
from kit.training import checkpoints, chunks, interrupts, programs, train
from kit.training.checkpoints import Progress


@dataclass(frozen=True)
class FoldJob:
    """One fold of a network: rows of the network's data to train on and to validate on."""

    fold: int
    train_rows: np.ndarray
    val_rows: np.ndarray
    checkpoint: Path | None = None


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


class Listener:
    """Hooks a display implements; the defaults do nothing (tests and scripts)."""

    def run_started(self, run_dir: Path, plan: list, epochs: int) -> None: ...
    def group_started(self, network: str, folds: list[int], epoch: int, epochs: int) -> None: ...
    def progress(self, network: str, fold_steps: int) -> None: ...
    def epoch(self, network: str, reports: list[EpochReport]) -> None: ...
    def fold_finished(self, network: str, fold: int, best_val_rmse: float,
                      skipped: bool) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class DeviceData:
    """A network's training data on the devices, once per run: uint8 images, pixel targets
    (0 where missing) and their mask: 0 where missing, else the value's loss weight (1
    unless `weights` says otherwise)."""

    arrays: dict
    placement: programs.Placement

    @classmethod
    def put(cls, images: np.ndarray, targets: np.ndarray, placement: programs.Placement,
            weights: np.ndarray | None = None) -> DeviceData:
        present = ~np.isnan(targets)
        mask = present if weights is None else np.where(present, weights, 0.0)
        return cls(placement.replicated({
            "images": np.ascontiguousarray(images, np.uint8),
            "keypoints": np.where(present, targets, 0.0).astype(np.float32),
            "mask": mask.astype(np.float32),
        }), placement)


# ---------------------------------------------------------------- the loop's rules


@dataclass
class Position:
    """Where a group's training stands, its parts agreeing: what a checkpoint saves. states
    and sums are the last dispatched chunk's (it may still be running), step its end in the
    epoch in hand; sums is None between epochs."""

    states: object
    best: object
    progress: list[Progress]
    step: int = 0
    sums: object = None


def checkpoint_due(since_last: float, every: float, interrupted: bool) -> bool:
    """Save now: `every` seconds have passed since the last checkpoint, or a held Ctrl-C or
    SIGTERM waits for one before it stops the run."""
    return interrupted or since_last >= every


def is_out_of_memory(error: Exception) -> bool:
    """A JAX runtime error that says the device's memory ran out (XLA's wording varies by
    backend)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


# ---------------------------------------------------------------- groups


def fit_folds(config: Config, task: train.Task, data: DeviceData, jobs: list[FoldJob],
              listener: Listener, stats: Stats, network: str) -> Iterator[FoldResult]:
    """Train the jobs' folds, yielding each result as its group finishes.

    Folds whose checkpoints stand at the same position train together, as many as
    `engine.fold_group` (0: as many as the device's memory holds, halving until they fit).
    """
    restored = {job.fold: checkpoints.standing(job.checkpoint, job.fold, listener.note)
                for job in jobs}
    by_position: dict[tuple[int, int], list[FoldJob]] = {}
    for job in jobs:
        by_position.setdefault(restored[job.fold], []).append(job)
    limit = config.engine.fold_group or len(jobs)
    for position_jobs in by_position.values():
        for start in range(0, len(position_jobs), limit):
            yield from _fit_fitting(config, task, data, position_jobs[start:start + limit],
                                    listener, stats, network, auto=not config.engine.fold_group)


def _fit_fitting(config, task, data, jobs, listener, stats, network, auto) -> Iterator[FoldResult]:
    group = Group(config, task, data, jobs, listener, network)
    need, have = group.memory_bytes(), programs.device_memory_bytes()
    if auto and len(jobs) > 1 and need and have and need > 0.8 * have:
        half = math.ceil(len(jobs) / 2)
        listener.note(f"{len(jobs)} folds together need {need / 2**30:.1f} GiB, the device "
                      f"holds {have / 2**30:.1f}: training them in groups of {half}")
        for part in (jobs[:half], jobs[half:]):
            yield from _fit_fitting(config, task, data, part, listener, stats, network, auto)
        return
    yield from group.run(stats)


class Group:
    """Folds of one network stacked on a fold axis, trained by one set of programs."""

    def __init__(self, config: Config, task: train.Task, data: DeviceData,
                 jobs: list[FoldJob], listener: Listener, network: str):
        self.config, self.task, self.data, self.jobs = config, task, data, jobs
        self.listener, self.network = listener, network
        self.placement = data.placement
        self.batching = programs.resolve_batching(config.engine.fold_batching)
        self.net, self.optimizer, self.train_step = train.compiled(config, task)
        batch = config.train.batch_size
        self.fold_steps = np.array([train.steps_per_epoch(len(j.train_rows), batch)
                                    for j in jobs])
        self.steps = int(self.fold_steps.max())
        self.totals = self.fold_steps * config.train.epochs
        # On the devices once per group: what every epoch's programs take unchanged.
        self.totals_device = self.placement.replicated(self.totals.astype(np.int32))
        # (folds, chunks, chunk) validation rows and weights, chunks split over the devices.
        self.val_rows, self.val_weight = self.placement.split(programs.validation_arrays(
            [j.val_rows for j in jobs], self.placement.padded(config.train.eval_batch_size)), 2)
        self.compile_seconds = 0.0
        self._programs = None
        self._states = None

    # ------------------------------------------------------------ set-up

    def _fresh_states(self):
        init = jax.jit(jax.vmap(train.make_init(self.net, self.optimizer,
                                                self.config.train.ema)))
        keys = jnp.stack([train.fold_key(self.config, self.task, j.fold) for j in self.jobs])
        return init(keys)

    def _load(self):
        """Stacked states and best weights, from checkpoints or fresh; each fold's progress."""
        if self._states is not None:
            return self._states
        fresh = self._fresh_states()
        states, bests, progress = [], [], []
        for index, job in enumerate(self.jobs):
            state = programs.fold_of(fresh, index)
            state, best, fold_progress = checkpoints.resume_fold(
                job.checkpoint, job.fold, state, train.weights(state), self.listener.note)
            states.append(state)
            bests.append(best)
            progress.append(fold_progress)
        positions = {p.position for p in progress}
        if len(positions) > 1:  # a checkpoint failed to load after the grouping was made
            raise KitError(f"{self.network} network: folds "
                           f"{', '.join(str(j.fold + 1) for j in self.jobs)} stand at different "
                           "positions; run `make cv` again to regroup them")
        self._states = (programs.stack(states), programs.stack(bests), progress)
        return self._states

    def _compile(self):
        """The three programs for this group's shapes, compiled once (or read from disk)."""
        if self._programs is not None:
            return self._programs
        states, best, _ = self._load()
        place = self.placement
        states, best = place.replicated((states, best))
        folds = len(self.jobs)
        sums = place.replicated({k: jnp.zeros(folds, jnp.float32)
                                 for k in programs.zero_metrics()})
        order = place.split(np.zeros((folds, self.steps, self.config.train.batch_size),
                                     np.int32), 2)
        valid = place.replicated(np.zeros((folds, self.steps), bool))
        totals, rows, weight = self.totals_device, self.val_rows, self.val_weight
        bound = place.replicated(np.int32(0))
        active = place.replicated(np.ones(folds, bool))
        seconds = []

        def compiled(function, *args, donate=()):
            program, took = programs.compile_program(function, *args, donate=donate)
            seconds.append(took)
            return program

        def step_program(train_step) -> programs.StepProgram:
            steps = programs.step_program(self.batching, train_step, self.config.train)
            return steps._replace(function=compiled(
                steps.function, states, sums, self.data.arrays, order, valid, totals, bound,
                bound, donate=(0,)))

        steps = step_program(self.train_step)
        evaluate = compiled(programs.make_evaluate(self.net, self.batching),
                            *train.weights(states), self.data.arrays, rows, weight, active)
        keep_best = compiled(programs.keep_best, best, states, active)
        # Progressive resizing's early epochs: the same step at train.early_size.
        early = (step_program(train.early_step(self.config, self.task))
                 if train.early_epochs(self.config.train) else None)
        self.compile_seconds = sum(seconds)
        self._programs = (steps, evaluate, keep_best, early)
        return self._programs

    def memory_bytes(self) -> int | None:
        return programs.program_bytes(self._compile()[0].function)

    def _order(self, epoch: int, progress: list[Progress]):
        """(folds, steps, batch) rows of this epoch and (folds, steps) which steps count."""
        config, batch = self.config, self.config.train.batch_size
        order = np.zeros((len(self.jobs), self.steps, batch), np.int32)
        valid = np.zeros((len(self.jobs), self.steps), bool)
        for index, job in enumerate(self.jobs):
            picks = train.epoch_order(train.training_seeds(config), job.fold, epoch, len(job.train_rows), batch)
            order[index, : len(picks)] = job.train_rows[picks]
            valid[index, : len(picks)] = not progress[index].stopped
        return order, valid

    # ------------------------------------------------------------ the loop

    def run(self, stats: Stats) -> Iterator[FoldResult]:
        """Train the group to its end, checkpointing when due; yields the folds' results."""
        states, best, progress = self._load()
        place, config = self.placement, self.config
        states, best = place.replicated((states, best))
        at = Position(states, best, progress, progress[0].step)
        stats.compile_seconds += self.compile_seconds
        self.listener.group_started(self.network, [j.fold for j in self.jobs],
                                    progress[0].epoch, config.train.epochs)
        started = time.perf_counter()
        every = config.engine.checkpoint_seconds
        with checkpoints.BackgroundWriter() as writer, interrupts.Deferred() as interrupt:
            try:
                last_saved = time.monotonic()
                for can_save in self._train(at, stats):
                    if can_save and checkpoint_due(time.monotonic() - last_saved, every,
                                                   interrupt.requested):
                        self._checkpoint(writer, at)
                        last_saved = time.monotonic()
                        interrupt.check()
                # A Ctrl-C in the last epoch stops here, saved as finished: a rerun writes
                # the group's models without training again.
                interrupt.check()
            except KeyboardInterrupt:
                # A listener's or the held signal's, raised where `at` is whole: the last
                # dispatched chunk finishes and is saved. A second signal stops at once.
                if not interrupt.forced:
                    jax.block_until_ready(at.states)
                    self._checkpoint(writer, at)
                    writer.wait()
                raise
            except jax.errors.JaxRuntimeError as error:
                if is_out_of_memory(error):
                    raise KitError(self._out_of_memory()) from None
                raise
        seconds = time.perf_counter() - started
        stats.train_seconds += seconds
        stats.groups.append({"network": self.network, "folds": [j.fold for j in self.jobs],
                             "batching": self.batching, "devices": place.devices,
                             "seconds": round(seconds, 2),
                             "compile_seconds": round(self.compile_seconds, 2)})
        yield from self._results(at.best, at.progress)

    def _train(self, at: Position, stats: Stats) -> Iterator[bool]:
        """Move `at` through the remaining epochs, yielding at each point where `at` is whole
        whether a checkpoint may be taken there: after each chunk (while its epoch has steps
        left) and after each epoch (unless training is over)."""
        step_program, evaluate, keep_best, early_program = self._compile()
        pace = chunks.Pace(self.config.engine.chunk_seconds, self.steps)
        while not self._finished(at.progress):
            epoch_started = time.perf_counter()
            early = train.is_early(self.config.train, at.progress[0].epoch)
            yield from self._epoch_steps(at, early_program if early else step_program, pace,
                                         stats)
            best, progress, reports = self._end_epoch(
                evaluate, keep_best, at.states, at.best, at.sums, at.progress,
                time.perf_counter() - epoch_started)
            at.best, at.progress, at.step, at.sums = best, progress, 0, None
            self.listener.epoch(self.network, reports)
            yield not self._finished(at.progress)

    def _epoch_steps(self, at: Position, step_program: programs.StepProgram,
                     pace: chunks.Pace, stats: Stats) -> Iterator[bool]:
        """The epoch's remaining steps, chunk by chunk; yields after each chunk whether the
        epoch has steps left."""
        order_host, valid_host = self._order(at.progress[0].epoch, at.progress)
        order = self.placement.split(order_host, 2)
        valid = self.placement.replicated(valid_host)
        at.sums = self.placement.replicated({
            k: np.array([p.sums.get(k, 0.0) for p in at.progress], np.float32)
            for k in programs.zero_metrics()})
        at.step = at.progress[0].step

        def dispatch(first: int, last: int):
            at.states, at.sums = self._advance(step_program, at.states, at.sums, order, valid,
                                               valid_host, first, last)
            at.step = last
            return at.sums

        for begin, end in chunks.dispatch(at.step, self.steps, dispatch, pace):
            fold_steps = int(valid_host[:, begin:end].sum())
            stats.images += fold_steps * self.config.train.batch_size
            self.listener.progress(self.network, fold_steps)
            # at.states, sums and step are the last dispatched chunk's, so a checkpoint may
            # be taken with that chunk still running.
            yield at.step < self.steps

    def _finished(self, progress: list[Progress]) -> bool:
        return (progress[0].epoch >= self.config.train.epochs
                or all(p.stopped for p in progress))

    def _advance(self, step_program: programs.StepProgram, states, sums, order, valid,
                 valid_host: np.ndarray, first: int, last: int):
        """Steps first..last-1 of every fold, queued without waiting (one dispatch under
        "vmap", one a fold and step under "map")."""
        scalar = self.placement.replicated
        for a, b in step_program.calls(first, last, valid_host):
            states, sums = step_program.function(states, sums, self.data.arrays, order, valid,
                                                 self.totals_device, scalar(np.int32(a)),
                                                 scalar(np.int32(b)))
            if self.placement.blocking:
                jax.block_until_ready(sums)
        return states, sums

    def _end_epoch(self, evaluate, keep_best, states, best, sums, progress: list[Progress],
                   seconds: float):
        """Validation, early stopping and the best weights: (best, the folds' new progress,
        the epoch's reports). The old progress is left as it was, so an interrupt sees
        either the epoch before its end or after."""
        place, config = self.placement, self.config
        progress = [copy.deepcopy(p) for p in progress]
        active_host = np.array([not p.stopped for p in progress])
        # The group's folds stand at one epoch, so they are scored together or not at all.
        scored = train.is_validated(config.train, progress[0].epoch)
        errors = (np.asarray(evaluate(*train.weights(states), self.data.arrays, self.val_rows,
                                      self.val_weight, place.replicated(active_host)))
                  if scored else None)
        totals = jax.device_get(sums)
        improved = np.zeros(len(self.jobs), bool)
        reports = []
        for index, (job, fold) in enumerate(zip(self.jobs, progress)):
            if fold.stopped:
                continue
            epoch = fold.epoch
            count = float(totals["count"][index])
            train_rmse = math.sqrt(float(totals["squared_error"][index]) / max(count, 1.0))
            if not math.isfinite(train_rmse):
                raise KitError(
                    f"{self.network} network, fold {job.fold + 1}: training diverged at epoch "
                    f"{epoch + 1} (the loss is not finite); lower train.learning_rate "
                    f"(now {config.train.learning_rate})")
            val_rmse = None
            if scored:
                squared, values = errors[index]
                val_rmse = math.sqrt(squared / values) if values > 0 else float("nan")
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
        best = keep_best(best, states, place.replicated(improved))
        for fold in progress:
            fold.epoch, fold.step, fold.sums = fold.epoch + 1, 0, {}
        return best, progress, reports

    def _checkpoint(self, writer: checkpoints.BackgroundWriter, at: Position) -> None:
        """Host copies of the group at `at.step` of the epoch in hand (its metric sums so far
        with it); the files are written by the background thread."""
        host_sums = jax.device_get(at.sums) if at.sums is not None and at.step > 0 else None
        checkpoints.submit_group(writer, [j.checkpoint for j in self.jobs],
                                 checkpoints.host_copy((at.states, at.best)), host_sums,
                                 at.progress, at.step)

    def _results(self, best, progress) -> Iterator[FoldResult]:
        params, net_state = best
        host = checkpoints.host_copy((params, net_state))
        for index, (job, fold) in enumerate(zip(self.jobs, progress)):
            fold_params, fold_state = programs.fold_of(host, index)
            yield FoldResult(job.fold, fold_params, fold_state, fold.history,
                             fold.best_epoch + 1,
                             float("nan") if fold.best_val_rmse is None else fold.best_val_rmse)

    def _out_of_memory(self) -> str:
        """The line a KitError says when the group's programs do not fit on the device."""
        config = self.config
        return (f"the device ran out of memory training {len(self.jobs)} folds of the "
                f"{self.network} network together (preset {config.preset}, batch "
                f"{config.train.batch_size}); lower --set engine.fold_group (now "
                f"{config.engine.fold_group or 'auto'}) or train.batch_size; the last "
                "checkpoint is kept, so `make cv` continues from it")
