"""Training one network on one fold: the jitted step, evaluation, early stopping, checkpoints.

The loop is plain Python around one jitted `train_step(state, batch) -> (state, metrics)`;
augmentation runs inside the step, on the device. Every random choice comes from the seed.
"""
from __future__ import annotations

import functools
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kit import augment, fileio, models
from kit.config import Config, TrainConfig
from kit.errors import KitError
from kit.keypoints import IMAGE_SIZE, flip_permutation


class TrainState(NamedTuple):
    """Everything a fold's training carries from one step to the next."""

    params: hk.Params
    net_state: hk.State
    opt_state: optax.OptState
    key: jax.Array


@dataclass(frozen=True)
class Task:
    """What a network predicts: its output columns and how a mirror image relabels them."""

    name: str
    columns: tuple[str, ...]
    flip: tuple[int, ...]  # outputs[..., flip] are a mirrored face's outputs

    @classmethod
    def of(cls, name: str, columns: tuple[str, ...]) -> Task:
        return cls(name, columns, tuple(int(i) for i in flip_permutation(columns)))

    @property
    def outputs(self) -> int:
        return len(self.columns)

    @property
    def permutation(self) -> np.ndarray:
        return np.array(self.flip)


# ---------------------------------------------------------------- pure pieces


def make_optimizer(train: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    if train.schedule == "onecycle":
        rate = optax.cosine_onecycle_schedule(
            transition_steps=max(total_steps, 1), peak_value=train.learning_rate,
            pct_start=0.25, div_factor=20.0, final_div_factor=200.0,
        )
    elif train.schedule == "constant":
        rate = train.learning_rate
    else:
        raise ValueError(f"unknown schedule {train.schedule!r}")
    if train.optimizer == "adamw":
        return optax.adamw(rate, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(train.weight_decay), optax.sgd(rate))
    raise ValueError(f"unknown optimizer {train.optimizer!r}")


def masked_loss(prediction: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray,
                kind: str) -> jnp.ndarray:
    """Mean loss over the values present; targets and predictions in unit coordinates."""
    error = (prediction - target) * mask
    if kind == "mse":
        per_value = error**2
    elif kind == "l1":
        per_value = jnp.abs(error)
    elif kind == "wing":
        # Wing loss (Feng et al. 2018) in pixel units: log-shaped near zero, L1 far away.
        width, curvature = 4.0, 2.0
        pixels = jnp.abs(error) * models.HALF
        offset = width - width * jnp.log1p(width / curvature)
        per_value = jnp.where(
            pixels < width, width * jnp.log1p(pixels / curvature), pixels - offset
        ) / models.HALF
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return per_value.sum() / jnp.maximum(mask.sum(), 1.0)


def pixel_rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """RMSE in pixels over the values present in truth (NaN elsewhere)."""
    present = ~np.isnan(truth)
    if not present.any():
        return float("nan")
    return float(np.sqrt(np.mean((prediction[present] - truth[present]) ** 2)))


def make_train_step(net: hk.TransformedWithState, optimizer: optax.GradientTransformation,
                    config: Config, task: Task) -> Callable:
    permutation = task.permutation

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key, augment_key, dropout_key = jax.random.split(state.key, 3)
        images = batch["images"].astype(jnp.float32) / 255.0
        images, keypoints, mask = augment.augment(
            augment_key, images, batch["keypoints"], batch["mask"], config.augment, permutation
        )
        target = models.to_unit(keypoints)

        def loss_fn(params):
            output, net_state = net.apply(params, state.net_state, dropout_key, images, True)
            return masked_loss(output, target, mask, config.train.loss), (net_state, output)

        (loss, (net_state, output)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        squared = ((output - target) * mask * models.HALF) ** 2
        metrics = {"loss": loss, "squared_error": squared.sum(), "count": mask.sum()}
        return TrainState(params, net_state, opt_state, key), metrics

    return jax.jit(train_step)


def make_predict(net: hk.TransformedWithState, task: Task, flip_tta: bool,
                 tta_shift: float = 0.0) -> Callable:
    """A jitted (params, net_state, uint8 images) -> pixel keypoints.

    Test-time augmentation averages the predictions of transformed copies, each mapped back:
    the mirror image (flip_tta) and copies shifted by tta_shift pixels left, right, up, down.
    """
    permutation = task.permutation
    shifts = [(0.0, 0.0)]
    if tta_shift:
        shifts += [(tta_shift, 0.0), (-tta_shift, 0.0), (0.0, tta_shift), (0.0, -tta_shift)]

    def one_view(params, net_state, images):
        pixels = models.to_pixels(net.apply(params, net_state, None, images, False)[0])
        if not flip_tta:
            return pixels
        flipped = models.to_pixels(net.apply(params, net_state, None, images[:, :, ::-1],
                                             False)[0])[:, permutation]
        flipped = flipped.at[:, 0::2].set((IMAGE_SIZE - 1) - flipped[:, 0::2])
        return (pixels + flipped) / 2

    def predict(params, net_state, images):
        images = images.astype(jnp.float32) / 255.0
        batch = images.shape[0]
        views = []
        for dx, dy in shifts:
            moved = images
            if (dx, dy) != (0.0, 0.0):
                shift = jnp.tile(jnp.array([[dx, dy]], jnp.float32), (batch, 1))
                matrices = augment.similarity_matrices(
                    jnp.zeros(batch), jnp.ones(batch), shift, IMAGE_SIZE)
                moved, _ = augment.warp(images, jnp.zeros((batch, 2)), matrices)
            pixels = one_view(params, net_state, moved)
            views.append(pixels - jnp.tile(jnp.array([dx, dy], jnp.float32), task.outputs // 2))
        return sum(views) / len(views)

    return jax.jit(predict)


def predict_batched(predict: Callable, params, net_state, images: np.ndarray,
                    batch_size: int) -> np.ndarray:
    """Predict any number of images with one compiled shape: the last batch is padded."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.zeros((batch_size,) + images.shape[1:], images.dtype)
        padded[: len(chunk)] = chunk
        out.append(np.asarray(predict(params, net_state, padded))[: len(chunk)])
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def batch_of(images: np.ndarray, keypoints: np.ndarray, index: np.ndarray) -> dict:
    values = keypoints[index]
    present = ~np.isnan(values)
    return {
        "images": images[index],
        "keypoints": np.where(present, values, 0.0).astype(np.float32),
        "mask": present.astype(np.float32),
    }


def device_placement(batch_size: int) -> tuple[Callable, Callable]:
    """(replicate, shard): put the training state on every local device and split each batch
    across them, so one program trains data-parallel on all GPUs (a no-op on one device)."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return (lambda tree: tree), (lambda tree: tree)
    if batch_size % len(devices):
        raise KitError(f"train.batch_size={batch_size} does not split over {len(devices)} "
                       "devices; choose a multiple of the device count")
    mesh = Mesh(np.array(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("batch"))
    return (lambda tree: jax.device_put(tree, replicated)), (lambda tree: jax.device_put(tree, split))


def epoch_order(seed: int, fold_seed: int, epoch: int, rows: int, batch_size: int) -> np.ndarray:
    """The epoch's batches as (steps, batch) row indices; a function of the seeds alone, so a
    resumed run draws the same batches as an uninterrupted one."""
    rng = np.random.default_rng([seed, fold_seed, epoch])
    order = rng.permutation(rows)
    steps = max(rows // batch_size, 1)
    if rows < batch_size:
        order = rng.choice(rows, batch_size, replace=True)
    return order[: steps * batch_size].reshape(steps, batch_size)


# ---------------------------------------------------------------- checkpoints


def save_tree(path: Path, tree: Any, **extra: str) -> None:
    """A pytree's leaves (and any text fields) as an .npz: no pickle, so loading never runs
    code; one file renamed into place, so a checkpoint is whole or absent."""
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"text_{name}": np.array(value) for name, value in extra.items()})
    with fileio.atomic_path(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)


def load_tree(path: Path, like: Any) -> tuple[Any, dict[str, str]]:
    """Leaves saved by save_tree poured into the structure of `like`, and the text fields."""
    treedef = jax.tree_util.tree_structure(like)
    with np.load(path, allow_pickle=False) as stored:
        leaves = [stored[f"leaf_{i:05d}"] for i in range(treedef.num_leaves)]
        texts = {k[len("text_"):]: str(stored[k]) for k in stored.files if k.startswith("text_")}
    tree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves])
    return tree, texts


@dataclass
class FitResult:
    params: hk.Params
    net_state: hk.State
    history: list[dict]
    best_epoch: int
    best_val_rmse: float


@dataclass(frozen=True)
class EpochReport:
    """What the live display shows after each epoch."""

    epoch: int
    epochs: int
    train_rmse: float
    val_rmse: float
    best_val_rmse: float
    seconds: float


@functools.lru_cache(maxsize=8)
def compiled(config: Config, task: Task, total_steps: int):
    """The network, optimiser and jitted functions, built once for all folds alike: a fresh
    closure per fold would make XLA compile the same step again."""
    net = models.build(config.model, task.outputs)
    optimizer = make_optimizer(config.train, total_steps)
    train_step = make_train_step(net, optimizer, config, task)
    predict = make_predict(net, task, flip_tta=False)
    return net, optimizer, train_step, predict


def init_state(net, optimizer, config: Config, task: Task, fold_seed: int) -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    key = jax.random.fold_in(jax.random.fold_in(key, fold_seed), zlib.crc32(task.name.encode()))
    init_key, key = jax.random.split(key)
    dummy = jnp.zeros((2, IMAGE_SIZE, IMAGE_SIZE), jnp.float32)
    params, net_state = net.init(init_key, dummy, True)
    return TrainState(params, net_state, optimizer.init(params), key)


def fit(
    config: Config,
    task: Task,
    train_images: np.ndarray,
    train_keypoints: np.ndarray,
    val_images: np.ndarray,
    val_keypoints: np.ndarray,
    fold_seed: int = 0,
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FitResult:
    """Train on (train_images, train_keypoints), early-stop on the validation pixel RMSE.

    With checkpoint_dir, every finished epoch is saved there and a later call continues from
    the last one: same seeds, same batches, so the result equals an uninterrupted run's.
    """
    train_config = config.train
    steps_per_epoch = max(len(train_images) // train_config.batch_size, 1)
    net, optimizer, train_step, predict = compiled(config, task,
                                                   steps_per_epoch * train_config.epochs)
    replicate, shard = device_placement(train_config.batch_size)
    state = replicate(init_state(net, optimizer, config, task, fold_seed))

    history: list[dict] = []
    best = {"epoch": -1, "val_rmse": float("inf"), "bad_epochs": 0}
    best_params, best_net_state = state.params, state.net_state
    start_epoch = 0
    if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT).exists():
        state, best_params, best_net_state, history, best = _restore(checkpoint_dir, state)
        state = replicate(state)
        start_epoch = len(history)

    for epoch in range(start_epoch, train_config.epochs):
        if best["bad_epochs"] >= train_config.patience:
            break
        started = time.perf_counter()
        order = epoch_order(config.seed, fold_seed, epoch, len(train_images),
                            train_config.batch_size)
        step_metrics = []
        for step, index in enumerate(order):
            state, metrics = train_step(state, shard(batch_of(train_images, train_keypoints,
                                                                index)))
            # Kept on the device: reading them here would stall the dispatch of the next step.
            step_metrics.append(metrics)
            if on_step is not None:
                on_step(step + 1, len(order))
        totals = jax.device_get(jax.tree_util.tree_map(lambda *m: sum(m), *step_metrics))
        squared, count = float(totals["squared_error"]), float(totals["count"])
        predictions = predict_batched(predict, state.params, state.net_state, val_images,
                                      train_config.eval_batch_size)
        val_rmse = pixel_rmse(predictions, val_keypoints)
        train_rmse = float(np.sqrt(squared / max(count, 1.0)))
        if not np.isfinite(train_rmse):
            raise KitError(f"{task.name} network, fold {fold_seed + 1}: training diverged at "
                           f"epoch {epoch + 1} (the loss is not finite); lower "
                           f"train.learning_rate (now {train_config.learning_rate})")
        if val_rmse < best["val_rmse"]:
            best = {"epoch": epoch, "val_rmse": val_rmse, "bad_epochs": 0}
            best_params, best_net_state = state.params, state.net_state
        else:
            best["bad_epochs"] += 1
        seconds = time.perf_counter() - started
        history.append({
            "epoch": epoch + 1, "train_rmse": train_rmse, "val_rmse": val_rmse,
            "seconds": seconds,
        })
        if checkpoint_dir is not None:
            _checkpoint(checkpoint_dir, state, best_params, best_net_state, history, best)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch + 1, train_config.epochs, train_rmse, val_rmse,
                                 best["val_rmse"], seconds))
    return FitResult(best_params, best_net_state, history, best["epoch"] + 1, best["val_rmse"])


CHECKPOINT = "checkpoint.npz"


def _checkpoint(folder: Path, state: TrainState, best_params, best_net_state,
                history: list[dict], best: dict) -> None:
    progress = json.dumps({"history": history, "best": best})
    save_tree(folder / CHECKPOINT, (state, best_params, best_net_state), progress=progress)


def _restore(folder: Path, like: TrainState):
    (state, best_params, best_net_state), texts = load_tree(
        folder / CHECKPOINT, (like, like.params, like.net_state)
    )
    progress = json.loads(texts["progress"])
    return state, best_params, best_net_state, progress["history"], progress["best"]
