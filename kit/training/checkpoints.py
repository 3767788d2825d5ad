"""Checkpoints: pytrees as .npz files (no pickle), each fold's training position, and a
background writer that keeps file I/O off the training loop.

A fold's checkpoint holds its TrainState, its best weights so far and its progress (epoch,
next step, history, early-stopping counters, the epoch's running metric sums): enough to
continue to exactly the result of an uninterrupted run, since batches and keys are functions
of the seeds and the position.
"""
from __future__ import annotations

import copy
import json
import queue
import threading
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kit.core import fileio
from kit.core.errors import KitError

CHECKPOINT = "checkpoint.npz"


def save_tree(path: Path, tree: Any, **extra: str) -> None:
    """A pytree's leaves (and any text fields) as an .npz: no pickle, so loading never runs
    code; one file renamed into place, so a checkpoint is whole or absent."""
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"text_{name}": np.array(value) for name, value in extra.items()})
    with fileio.atomic_path(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)


def load_tree(path: Path, like: Any) -> tuple[Any, dict[str, str]]:
    """Leaves saved by save_tree poured into the structure of `like`, and the text fields.
    A file that is not such a tree (truncated, foreign, another network's) is a KitError."""
    treedef = jax.tree_util.tree_structure(like)
    expected = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(like)]
    try:
        with np.load(path, allow_pickle=False) as stored:
            leaves = [stored[f"leaf_{i:05d}"] for i in range(treedef.num_leaves)]
            texts = {k[len("text_"):]: str(stored[k]) for k in stored.files
                     if k.startswith("text_")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise KitError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    shapes = [leaf.shape for leaf in leaves]
    if shapes != expected:
        raise KitError(f"{path}: holds arrays of other shapes than this network's")
    tree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves])
    return tree, texts


@dataclass
class Progress:
    """Where a fold's training stands, on the host: all of it goes into the checkpoint."""

    epoch: int = 0  # the epoch in hand, from 0
    step: int = 0  # its next step
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1  # from 0; -1 before the first evaluation
    best_val_rmse: float | None = None
    bad_epochs: int = 0  # epochs since the best one
    stopped: bool = False  # early stopping ended the fold
    sums: dict[str, float] = field(default_factory=dict)  # the epoch's metric sums so far

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.step)


def save_fold(path: Path, state: Any, best: Any, progress: Progress) -> None:
    save_tree(path, (state, best), progress=json.dumps(asdict(progress)))


def load_fold(path: Path, like_state: Any, like_best: Any) -> tuple[Any, Any, Progress]:
    (state, best), texts = load_tree(path, (like_state, like_best))
    return state, best, read_progress(texts, path)


def read_progress(texts: dict[str, str], path: Path) -> Progress:
    try:
        return Progress(**json.loads(texts["progress"]))
    except (KeyError, TypeError, ValueError) as error:
        raise KitError(f"{path}: no readable progress record ({error})") from None


def peek_progress(path: Path) -> Progress | None:
    """The progress record alone (no arrays read), or None when the file is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return read_progress({"progress": str(stored["text_progress"])}, path)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, KitError):
        return None


def saved_position(path: Path | None, fold: int, note: Callable[[str], None]) -> tuple[int, int]:
    """Where a fold's checkpoint stands, (0, 0) without one; a corrupt one is said with
    `note`, removed, and the fold starts again."""
    if path is None or not path.exists():
        return (0, 0)
    progress = peek_progress(path)
    if progress is None:
        note(f"{path}: corrupt checkpoint, removed; fold {fold + 1} starts again")
        path.unlink(missing_ok=True)
        return (0, 0)
    return progress.position


def resume_fold(path: Path | None, fold: int, fresh_state: Any, fresh_best: Any,
                note: Callable[[str], None]) -> tuple[Any, Any, Progress]:
    """A fold's state, best weights and progress from its checkpoint, or the fresh ones
    without one; one that fails to load is said with `note`, removed, and the fold starts
    again."""
    if path is None or not path.exists():
        return fresh_state, fresh_best, Progress()
    try:
        return load_fold(path, fresh_state, fresh_best)
    except KitError as error:
        note(f"{error}; fold {fold + 1} starts again")
        path.unlink(missing_ok=True)
        return fresh_state, fresh_best, Progress()


def submit_group(writer: BackgroundWriter, paths: list[Path | None], host_tree: Any,
                 host_sums: dict | None, progress: list[Progress], step: int) -> None:
    """Queue each fold's checkpoint from host copies of a group's (states, best weights),
    stacked on a fold axis: at `step` of the epoch in hand, with its metric sums so far
    (host_sums None: none yet). A fold without a path is not saved."""
    for index, (path, fold) in enumerate(zip(paths, progress)):
        if path is None:
            continue
        saved = copy.deepcopy(fold)
        saved.step = step
        saved.sums = ({k: float(v[index]) for k, v in host_sums.items()}
                      if host_sums is not None else {})
        state, best = jax.tree_util.tree_map(lambda leaf, i=index: leaf[i], host_tree)
        writer.submit(lambda path=path, s=state, b=best, p=saved: save_fold(path, s, b, p))


def host_copy(tree: Any) -> Any:
    """Numpy copies of device arrays: the device buffers may be donated to the next step."""
    return jax.tree_util.tree_map(lambda leaf: np.array(leaf, copy=True), tree)


class BackgroundWriter:
    """Runs write jobs on one thread, in order, so training never waits for a disk.

    `wait()` blocks until every job submitted so far is written and re-raises a writer's
    error; call it before reporting a checkpoint as taken.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="kit-checkpoint-writer",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except BaseException as error:  # noqa: BLE001 - handed to the training thread
                self._error = error
            finally:
                self._jobs.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._jobs.put(job)

    def wait(self) -> None:
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
