"""The training loop around kit.training.programs: a group of folds of one network trained together.

Each epoch is a few dispatches of `run_steps` (chunks sized so progress moves about every
`engine.chunk_seconds`), one of `evaluate`, one of `keep_best`; the host sees a few scalars
per fold per chunk. The next chunk is dispatched before the last one's figures are read, so
the device never waits for the host. Checkpoints are host copies written by a background
thread at most every `engine.checkpoint_seconds`; Ctrl-C writes one before it stops.
"""
from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kit.config import Config
from kit.core.errors import KitError
from kit.training import checkpoints, programs, train
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
    val_rmse: float
    best_val_rmse: float
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


# ---------------------------------------------------------------- groups


def fit_folds(config: Config, task: train.Task, data: DeviceData, jobs: list[FoldJob],
              listener: Listener, stats: Stats, network: str) -> Iterator[FoldResult]:
    """Train the jobs' folds, yielding each result as its group finishes.

    Folds whose checkpoints stand at the same position train together, as many as
    `engine.fold_group` (0: as many as the device's memory holds, halving until they fit).
    """
    restored = {job.fold: _position(job, listener) for job in jobs}
    by_position: dict[tuple[int, int], list[FoldJob]] = {}
    for job in jobs:
        by_position.setdefault(restored[job.fold], []).append(job)
    limit = config.engine.fold_group or len(jobs)
    for position_jobs in by_position.values():
        for start in range(0, len(position_jobs), limit):
            yield from _fit_fitting(config, task, data, position_jobs[start:start + limit],
                                    listener, stats, network, auto=not config.engine.fold_group)


def _position(job: FoldJob, listener: Listener) -> tuple[int, int]:
    """Where a fold's checkpoint stands; a corrupt one is said in one line and removed, and
    the fold starts again."""
    if job.checkpoint is None or not job.checkpoint.exists():
        return (0, 0)
    progress = checkpoints.peek_progress(job.checkpoint)
    if progress is None:
        listener.note(f"{job.checkpoint}: corrupt checkpoint, removed; fold {job.fold + 1} "
                      "starts again")
        job.checkpoint.unlink(missing_ok=True)
        return (0, 0)
    return progress.position


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
        self.val_rows, self.val_weight = self._validation_arrays()
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
            best, fold_progress = train.weights(state), Progress()
            if job.checkpoint is not None and job.checkpoint.exists():
                try:
                    state, best, fold_progress = checkpoints.load_fold(job.checkpoint, state,
                                                                       best)
                except KitError as error:
                    self.listener.note(f"{error}; fold {job.fold + 1} starts again")
                    job.checkpoint.unlink(missing_ok=True)
                    fold_progress = Progress()
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
        run_steps, seconds_a = programs.compile_program(
            programs.make_run_steps(self.train_step, self.config.train, self.batching),
            states, sums, self.data.arrays, order, valid, totals, bound, bound, donate=(0,))
        evaluate, seconds_b = programs.compile_program(
            programs.make_evaluate(self.net, self.batching),
            *train.weights(states), self.data.arrays, rows, weight, active)
        keep_best, seconds_c = programs.compile_program(programs.keep_best, best, states, active)
        self.compile_seconds = seconds_a + seconds_b + seconds_c
        self._programs = (run_steps, evaluate, keep_best)
        return self._programs

    def memory_bytes(self) -> int | None:
        return programs.program_bytes(self._compile()[0])

    def _validation_arrays(self):
        """(folds, chunks, chunk) validation rows and weights (0 for padding), chunks split
        over the devices."""
        chunk = self.placement.padded(self.config.train.eval_batch_size)
        longest = max(len(j.val_rows) for j in self.jobs)
        chunks = max(math.ceil(longest / chunk), 1)
        rows = np.zeros((len(self.jobs), chunks * chunk), np.int32)
        weight = np.zeros((len(self.jobs), chunks * chunk), np.float32)
        for index, job in enumerate(self.jobs):
            rows[index, : len(job.val_rows)] = job.val_rows
            weight[index, : len(job.val_rows)] = 1.0
        shape = (len(self.jobs), chunks, chunk)
        return (self.placement.split(rows.reshape(shape), 2),
                self.placement.split(weight.reshape(shape), 2))

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
        run_steps, evaluate, keep_best = self._compile()
        states, best, progress = self._load()
        place, config = self.placement, self.config
        states, best = place.replicated((states, best))
        stats.compile_seconds += self.compile_seconds
        self.listener.group_started(self.network, [j.fold for j in self.jobs],
                                    progress[0].epoch, config.train.epochs)
        totals, rows, weight = self.totals_device, self.val_rows, self.val_weight
        chunk = 1  # steps per dispatch, adapted to chunk_seconds once a chunk is timed
        last_checkpoint = time.monotonic()
        started = time.perf_counter()
        step, sums = progress[0].step, None
        with checkpoints.BackgroundWriter() as writer, _DeferredInterrupt() as interrupt:
            try:
                while (progress[0].epoch < config.train.epochs
                       and not all(p.stopped for p in progress)):
                    epoch_started = time.perf_counter()
                    order_host, valid_host = self._order(progress[0].epoch, progress)
                    order, valid = place.split(order_host, 2), place.replicated(valid_host)
                    sums = place.replicated({
                        k: np.array([p.sums.get(k, 0.0) for p in progress], np.float32)
                        for k in programs.zero_metrics()})
                    step = progress[0].step
                    in_flight: list[tuple[int, int, object]] = []
                    last_done = time.perf_counter()
                    # Two chunks in flight: the device starts the next while the host reads
                    # the last one's figures.
                    while step < self.steps or in_flight:
                        if step < self.steps and len(in_flight) < 2:
                            stop = min(self.steps, step + chunk)
                            states, sums = self._advance(run_steps, states, sums, order, valid,
                                                         valid_host, totals, step, stop)
                            in_flight.append((step, stop, sums))
                            step = stop
                            continue
                        begin, end, done_sums = in_flight.pop(0)
                        jax.block_until_ready(done_sums)
                        now = time.perf_counter()
                        rate = (end - begin) / max(now - last_done, 1e-6)
                        chunk = max(1, min(self.steps, round(config.engine.chunk_seconds * rate)))
                        last_done = now
                        fold_steps = int(valid_host[:, begin:end].sum())
                        stats.images += fold_steps * config.train.batch_size
                        self.listener.progress(self.network, fold_steps)
                        due = (time.monotonic() - last_checkpoint
                               >= config.engine.checkpoint_seconds)
                        # states, sums and step always agree (the last dispatched chunk's),
                        # so a checkpoint may be taken with a chunk still running.
                        if step < self.steps and (due or interrupt.requested):
                            self._checkpoint(writer, states, best, sums, progress, step)
                            last_checkpoint = time.monotonic()
                            interrupt.check()
                    best, progress, reports = self._end_epoch(
                        evaluate, keep_best, states, best, sums, rows, weight, progress,
                        time.perf_counter() - epoch_started)
                    step, sums = 0, None
                    self.listener.epoch(self.network, reports)
                    finished = progress[0].epoch >= config.train.epochs or all(
                        p.stopped for p in progress)
                    due = time.monotonic() - last_checkpoint >= config.engine.checkpoint_seconds
                    if not finished and (due or interrupt.requested):
                        self._checkpoint(writer, states, best, None, progress, 0)
                        last_checkpoint = time.monotonic()
                        interrupt.check()
                # A Ctrl-C in the last epoch stops here, saved as finished: a rerun writes
                # the group's models without training again.
                interrupt.check()
            except KeyboardInterrupt:
                # Raised at a point where states, sums and step agree (a listener's or the
                # deferred Ctrl-C): the last dispatched chunk finishes and is saved.
                jax.block_until_ready(states)
                self._checkpoint(writer, states, best, sums, progress, step)
                writer.wait()
                raise
            except jax.errors.JaxRuntimeError as error:
                if "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower():
                    raise KitError(self._out_of_memory()) from None
                raise
        seconds = time.perf_counter() - started
        stats.train_seconds += seconds
        stats.groups.append({"network": self.network, "folds": [j.fold for j in self.jobs],
                             "batching": self.batching, "devices": place.devices,
                             "seconds": round(seconds, 2),
                             "compile_seconds": round(self.compile_seconds, 2)})
        yield from self._results(best, progress)

    def _advance(self, run_steps, states, sums, order, valid, valid_host, totals, first: int,
                 last: int):
        """Steps first..last-1 of every fold: one dispatch ("vmap"), or one a fold and step
        ("map"), all queued without waiting."""
        scalar = self.placement.replicated
        if self.batching == "vmap":
            calls = [(first, last)]
        else:
            calls = [(fold, step) for step in range(first, last)
                     for fold in np.flatnonzero(valid_host[:, step])]
        for a, b in calls:
            states, sums = run_steps(states, sums, self.data.arrays, order, valid, totals,
                                     scalar(np.int32(a)), scalar(np.int32(b)))
            if self.placement.blocking:
                jax.block_until_ready(sums)
        return states, sums

    def _end_epoch(self, evaluate, keep_best, states, best, sums, rows, weight,
                   progress: list[Progress], seconds: float):
        """Validation, early stopping and the best weights: (best, the folds' new progress,
        the epoch's reports). The old progress is left as it was, so an interrupt sees
        either the epoch before its end or after."""
        place, config = self.placement, self.config
        progress = [copy.deepcopy(p) for p in progress]
        active_host = np.array([not p.stopped for p in progress])
        errors = np.asarray(evaluate(*train.weights(states), self.data.arrays, rows,
                                     weight, place.replicated(active_host)))
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
            squared, values = errors[index]
            val_rmse = math.sqrt(squared / values) if values > 0 else float("nan")
            better = fold.best_val_rmse is None or val_rmse < fold.best_val_rmse
            if config.train.select == "last" or better:
                improved[index] = True
                fold.best_epoch, fold.best_val_rmse, fold.bad_epochs = epoch, val_rmse, 0
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

    def _checkpoint(self, writer, states, best, sums, progress: list[Progress],
                    step: int) -> None:
        """Host copies of the group at `step` of the epoch in hand (its metric sums so far
        with it); the files are written by the background thread."""
        host_states, host_best = checkpoints.host_copy((states, best))
        host_sums = jax.device_get(sums) if sums is not None and step > 0 else None
        for index, (job, fold) in enumerate(zip(self.jobs, progress)):
            if job.checkpoint is None:
                continue
            saved = copy.deepcopy(fold)
            saved.step = step
            saved.sums = ({k: float(v[index]) for k, v in host_sums.items()}
                          if host_sums is not None else {})
            state, fold_best = programs.fold_of((host_states, host_best), index)
            writer.submit(lambda path=job.checkpoint, s=state, b=fold_best, p=saved:
                          checkpoints.save_fold(path, s, b, p))

    def _results(self, best, progress) -> Iterator[FoldResult]:
        params, net_state = best
        host = checkpoints.host_copy((params, net_state))
        for index, (job, fold) in enumerate(zip(self.jobs, progress)):
            fold_params, fold_state = programs.fold_of(host, index)
            yield FoldResult(job.fold, fold_params, fold_state, fold.history,
                             fold.best_epoch + 1,
                             float("nan") if fold.best_val_rmse is None else fold.best_val_rmse)

    def _out_of_memory(self) -> str:
        config = self.config
        return (f"the device ran out of memory training {len(self.jobs)} folds of the "
                f"{self.network} network together (preset {config.preset}, batch "
                f"{config.train.batch_size}); lower --set engine.fold_group (now "
                f"{config.engine.fold_group or 'auto'}) or train.batch_size; the last "
                "checkpoint is kept, so `make cv` continues from it")


class _DeferredInterrupt:
    """Ctrl-C during training is held until the loop reaches a point it can save; a second
    Ctrl-C stops at once. Outside the main thread (no signals there) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
