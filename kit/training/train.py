"""The pure pieces of training one network: its state, the jitted step, the learning-rate
schedule, the loss, the epoch's batch order and test-time prediction.

`train_step(state, batch) -> (state, metrics)` is the unit everything larger is built from
(kit.training.programs scans it over a chunk of steps and maps it over folds); augmentation runs inside
it, on the device. Every random choice comes from the seed.
"""
from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import numpy as np
import optax

from kit.config import Config, TrainConfig
from kit.config.schema import early_epochs  # the rule lives beside the checks that use it
from kit.core.keypoints import IMAGE_SIZE
from kit.model import augment, networks
from kit.model.tasks import Task
from kit.training import precision as precisions


class TrainState(NamedTuple):
    """Everything a fold's training carries from one step to the next."""

    params: hk.Params
    net_state: hk.State
    opt_state: optax.OptState
    key: jax.Array
    step: jax.Array  # steps taken: the schedule's position
    # The exponential moving average of params (train.ema > 0), else (): no leaves, so the
    # state and its checkpoints are what they were without it.
    average: hk.Params | tuple = ()
    # fp16's dynamic loss scale (kit.training.precision), else () as `average`.
    loss_scale: precisions.LossScale | tuple = ()
    # Under SWA (train.swa_epochs), the batch-norm statistics of `average`, gathered by the
    # averaged weights themselves; else ().
    average_state: hk.State | tuple = ()


def kept_weights(state: TrainState) -> tuple[hk.Params, hk.State]:
    """The weights a fold is judged and kept by: the moving average or SWA's mean where there
    is one, with SWA's own batch-norm statistics."""
    return ((state.params if isinstance(state.average, tuple) else state.average),
            (state.net_state if isinstance(state.average_state, tuple) else state.average_state))


def update_average(average: hk.Params, params: hk.Params, decay: float,
                   step: jax.Array) -> hk.Params:
    """One step of the weights' moving average. The decay ramps up as (1 + t) / (10 + t)
    (as tf.train.ExponentialMovingAverage's num_updates), so the early, random weights
    are forgotten within the first epochs instead of dragging on a short run's average."""
    t = jnp.asarray(step, jnp.float32)
    return moved_toward(average, params, 1.0 - jnp.minimum(decay, (1.0 + t) / (10.0 + t)))


def moved_toward(average: hk.Params, params: hk.Params, rate: jax.Array) -> hk.Params:
    """`average` moved `rate` of the way to `params` (1: onto them)."""
    return jax.tree_util.tree_map(lambda a, p: a + rate * (p - a), average, params)


# ---------------------------------------------------------------- pure pieces


def _adamw(weight_decay: float) -> optax.GradientTransformation:
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay))


def _sgd(weight_decay: float) -> optax.GradientTransformation:
    return optax.add_decayed_weights(weight_decay)


# TrainConfig.optimizer's choices: the weight decay -> the update direction.
OPTIMIZERS = {"adamw": _adamw, "sgd": _sgd}


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """The update direction; train_step scales it by -learning_rate. The rate stays outside
    optax's schedules because folds differ in length, so each fold has its own total steps
    while all of them run one compiled program. The same updates as optax.adamw and
    optax.sgd with add_decayed_weights."""
    return OPTIMIZERS[train.optimizer](train.weight_decay)


def apply_update(params, direction, rate):
    """One step down `direction` (make_optimizer's update) at `rate`."""
    return jax.tree_util.tree_map(lambda p, d: p - rate * d, params, direction)


# The one-cycle shape (optax.cosine_onecycle_schedule's defaults as the kit used them).
ONECYCLE_WARMUP, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.25, 20.0, 200.0


def _constant(peak: float, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    return jnp.asarray(peak, jnp.float32)


def _onecycle(peak: float, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    """Cosine warm-up from peak/20 to the peak over the first quarter, then cosine decay to
    peak/4000, as optax.cosine_onecycle_schedule."""
    total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
    step = jnp.asarray(step, jnp.float32)
    start, low = peak / ONECYCLE_DIV, peak / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    warmup = jnp.floor(ONECYCLE_WARMUP * total)

    def cosine(begin, end, fraction):
        return end + (begin - end) / 2 * (jnp.cos(math.pi * jnp.clip(fraction, 0.0, 1.0)) + 1)

    rising = cosine(start, peak, step / jnp.maximum(warmup, 1.0))
    falling = cosine(peak, low, (step - warmup) / jnp.maximum(total - warmup, 1.0))
    return jnp.where(step < warmup, rising, falling).astype(jnp.float32)


# TrainConfig.schedule's choices: (peak rate, step, the fold's total steps) -> the rate.
SCHEDULES = {"onecycle": _onecycle, "constant": _constant}


def learning_rate(train: TrainConfig, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    """The rate at `step` of a fold with `total_steps`: both may be traced, so one program
    serves folds of any length. Under SWA the schedule runs over the steps before its window
    and the rate never falls below SWA's constant one."""
    if not train.swa_epochs:
        return SCHEDULES[train.schedule](train.learning_rate, step, total_steps)
    scheduled = SCHEDULES[train.schedule](train.learning_rate, step, swa_start(train, total_steps))
    return jnp.maximum(scheduled, jnp.float32(train.swa_rate * train.learning_rate))


def swa_start(train: TrainConfig, total_steps: jax.Array) -> jax.Array:
    """The first step of SWA's window: the last train.swa_epochs of the fold's epochs."""
    return total_steps - total_steps * train.swa_epochs // train.epochs


def average_rate(train: TrainConfig, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    """How far step `step` moves SWA's mean toward the new weights: all the way before and at
    the window's first step, then 1/(n+1) at its n-th further one (a plain mean)."""
    since = step - swa_start(train, total_steps)
    return jnp.where(since > 0, 1.0 / (since + 1.0), 1.0).astype(jnp.float32)


def _squared(error: jnp.ndarray) -> jnp.ndarray:
    return error**2


def _wing(error: jnp.ndarray) -> jnp.ndarray:
    """Wing loss (Feng et al. 2018) in pixel units: log-shaped near zero, L1 far away."""
    width, curvature = 4.0, 2.0
    pixels = jnp.abs(error) * networks.HALF
    offset = width - width * jnp.log1p(width / curvature)
    return jnp.where(
        pixels < width, width * jnp.log1p(pixels / curvature), pixels - offset
    ) / networks.HALF


# TrainConfig.loss's choices: the error (prediction - target, unit coordinates) -> each
# value's loss.
LOSSES = {"mse": _squared, "l1": jnp.abs, "wing": _wing}


def masked_loss(prediction: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray,
                kind: str) -> jnp.ndarray:
    """Mean loss over the values present; targets and predictions in unit coordinates. The
    mask weighs each value (1: a label, 0: none, between: a doubted label, kit.results.teacher)."""
    per_value = LOSSES[kind](prediction - target)
    return (per_value * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def gaussian_log_heatmaps(keypoints: jnp.ndarray, height: int, width: int,
                          sigma: float) -> jnp.ndarray:
    """(B, 2K) pixel keypoints -> (B, H * W, K) log of a Gaussian of standard deviation `sigma`
    pixels centred at each keypoint, normalised over the H x W grid of the soft-argmax head
    (its cells' centres as networks.soft_argmax places them)."""
    batch, points = keypoints.shape[0], keypoints.shape[1] // 2
    x, y = keypoints[:, 0::2], keypoints[:, 1::2]
    across = (networks.cell_centres(width)[None, :, None] - x[:, None, :]) ** 2  # (B, W, K)
    down = (networks.cell_centres(height)[None, :, None] - y[:, None, :]) ** 2  # (B, H, K)
    exponent = -(down[:, :, None, :] + across[:, None, :, :]) / (2 * sigma**2)
    return jax.nn.log_softmax(exponent.reshape(batch, height * width, points), axis=1)


def jensen_shannon(log_p: jnp.ndarray, log_q: jnp.ndarray, axis: int) -> jnp.ndarray:
    """The Jensen-Shannon divergence (nats, at most log 2) of two distributions given as logs,
    summed over `axis`: from logs, so a cell far from a narrow Gaussian stays finite."""
    log_mean = jnp.logaddexp(log_p, log_q) - jnp.log(2.0)
    return 0.5 * ((jnp.exp(log_p) * (log_p - log_mean)).sum(axis)
                  + (jnp.exp(log_q) * (log_q - log_mean)).sum(axis))


def heatmap_divergence(logits: jnp.ndarray, keypoints: jnp.ndarray, mask: jnp.ndarray,
                       sigma: float) -> jnp.ndarray:
    """DSNT's heatmap term: the mean Jensen-Shannon divergence between each keypoint's softmax
    heatmap ((B, H, W, K) logits) and a Gaussian at its pixel target (`gaussian_log_heatmaps`),
    over the keypoints present, weighed by their mask as masked_loss weighs values."""
    batch, height, width, points = logits.shape
    log_maps = jax.nn.log_softmax(logits.reshape(batch, height * width, points), axis=1)
    divergence = jensen_shannon(
        log_maps, gaussian_log_heatmaps(keypoints, height, width, sigma), axis=1)  # (B, K)
    # A keypoint is present where both of its values are; a doubted value's weight carries.
    weight = jnp.minimum(mask[:, 0::2], mask[:, 1::2])
    return (divergence * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def make_train_step(net: hk.TransformedWithState, optimizer: optax.GradientTransformation,
                    config: Config, task: Task, input_size: int | None = None,
                    precision: str = "fp32") -> Callable:
    """The step, not jitted: the programs that call it are. The network sees the augmented
    images at `input_size` (None: model.input_size). Under fp16 (`precision`, resolved) the
    loss is scaled by the state's loss scale and a step whose gradient is not finite changes
    nothing but the scale (halved) and the step count; its metrics are 0. With
    train.heatmap_loss > 0 the loss adds that weight times `heatmap_divergence`; at 0 the
    network is asked for no heatmaps, so the step is the coordinate loss's alone.

    batch: uint8 "images" (B, 96, 96), pixel "keypoints" and their "mask" (B, outputs), and
    the step's "learning_rate" (a scalar, from `learning_rate`).
    """
    permutation = task.permutation
    scaled = precision == "fp16"
    heatmap_weight, heatmap_sigma = config.train.heatmap_loss, config.train.heatmap_sigma

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key, augment_key, dropout_key = jax.random.split(state.key, 3)
        images = batch["images"].astype(jnp.float32) / 255.0
        images, keypoints, mask = augment.augment(
            augment_key, images, batch["keypoints"], batch["mask"], config.augment, permutation
        )
        target = networks.to_unit(keypoints)

        loss_scale = state.loss_scale
        if scaled and not isinstance(loss_scale, precisions.LossScale):
            raise ValueError("an fp16 step needs a loss scale: make_init(..., precision='fp16')")

        def loss_fn(params):
            output, net_state = net.apply(params, state.net_state, dropout_key, images, True,
                                          input_size, maps=bool(heatmap_weight))
            if heatmap_weight:
                output, logits = output
            loss = masked_loss(output, target, mask, config.train.loss)
            if heatmap_weight:
                loss = loss + heatmap_weight * heatmap_divergence(logits, keypoints, mask,
                                                                  heatmap_sigma)
            return (loss * loss_scale.scale if scaled else loss), (loss, net_state, output)

        (_, (loss, net_state, output)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        if scaled:
            grads = precisions.unscale(loss_scale, grads)
        direction, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = apply_update(state.params, direction, batch["learning_rate"])
        average, average_state = state.average, state.average_state
        if config.train.ema:
            average = update_average(average, params, config.train.ema, state.step)
        if config.train.swa_epochs:
            average, average_state = swa_update(net, state, params, images, dropout_key,
                                                batch["average_rate"], input_size)
        squared = ((output - target) * networks.HALF) ** 2 * mask
        metrics = {"loss": loss, "squared_error": squared.sum(), "count": mask.sum()}
        if scaled:
            finite = jmp.all_finite(grads)
            loss_scale = precisions.adjust(loss_scale, finite)
            params, net_state, opt_state, average, average_state = jmp.select_tree(
                finite, (params, net_state, opt_state, average, average_state),
                (state.params, state.net_state, state.opt_state, state.average,
                 state.average_state))
            metrics = {name: jnp.where(finite, value, 0.0) for name, value in metrics.items()}
        return TrainState(params, net_state, opt_state, key, state.step + 1, average,
                          loss_scale, average_state), metrics

    return train_step


def swa_update(net: hk.TransformedWithState, state: TrainState, params: hk.Params,
               images: jnp.ndarray, key: jax.Array, rate: jax.Array, input_size: int | None):
    """SWA's mean moved `rate` of the way to `params`, and its batch-norm statistics: inside
    the window, the averaged weights' forward pass over this step's batch updates them (the
    network's own statistics belong to weights that moved on); before it, nothing runs."""
    average = moved_toward(state.average, params, rate)

    def gathered():
        return net.apply(average, state.average_state, key, images, True, input_size)[1]

    # A cond, not a select: the forward pass costs a third of a step, and the window is short.
    average_state = jax.lax.cond(rate < 1.0, gathered, lambda: state.average_state)
    return average, average_state


def tta_views(shift: float = 0.0, zoom: float = 0.0,
              rotate: float = 0.0) -> tuple[tuple[float, float, float, float], ...]:
    """Test-time views as (angle in radians, zoom, dx, dy): the image itself, then each
    non-zero setting's pair (or, for shifts, four) of opposite warps, so their first-order
    errors cancel in the mean."""
    views = [(0.0, 1.0, 0.0, 0.0)]
    if shift:
        views += [(0.0, 1.0, shift, 0.0), (0.0, 1.0, -shift, 0.0),
                  (0.0, 1.0, 0.0, shift), (0.0, 1.0, 0.0, -shift)]
    if zoom:
        views += [(0.0, 1.0 + zoom, 0.0, 0.0), (0.0, 1.0 - zoom, 0.0, 0.0)]
    if rotate:
        views += [(math.radians(rotate), 1.0, 0.0, 0.0), (-math.radians(rotate), 1.0, 0.0, 0.0)]
    return tuple(views)


def make_predict(net: hk.TransformedWithState, task: Task, flip_tta: bool,
                 views: tuple[tuple[float, float, float, float], ...] = ((0.0, 1.0, 0.0, 0.0),),
                 mirror_x: float = 47.5) -> Callable:
    """A jitted (params, net_state, uint8 images) -> pixel keypoints.

    Test-time augmentation averages the predictions of transformed copies, each mapped back
    to the original frame: every view of `tta_views` (warped, predicted, then its keypoints
    pushed through the warp's inverse), each with its mirror image too if flip_tta (mapped
    back about augment.mirror_x, as training's flips map the labels).
    """
    permutation = task.permutation

    def one_view(params, net_state, images):
        pixels = networks.to_pixels(net.apply(params, net_state, None, images, False)[0])
        if not flip_tta:
            return pixels
        flipped = networks.to_pixels(net.apply(params, net_state, None, images[:, :, ::-1],
                                             False)[0])[:, permutation]
        flipped = flipped.at[:, 0::2].set(2.0 * mirror_x - flipped[:, 0::2])
        return (pixels + flipped) / 2

    def predict(params, net_state, images):
        images = images.astype(jnp.float32) / 255.0
        batch = images.shape[0]
        outputs = []
        for angle, zoom, dx, dy in views:
            if (angle, zoom, dx, dy) == (0.0, 1.0, 0.0, 0.0):
                outputs.append(one_view(params, net_state, images))
                continue
            matrices = augment.similarity_matrices(
                jnp.full(batch, angle), jnp.full(batch, zoom),
                jnp.tile(jnp.array([[dx, dy]], jnp.float32), (batch, 1)), IMAGE_SIZE)
            moved, _ = augment.warp(images, jnp.zeros((batch, 2)), matrices)
            pixels = one_view(params, net_state, moved)
            outputs.append(augment.transform_keypoints(pixels, augment.invert(matrices)))
        return sum(outputs) / len(outputs)

    return jax.jit(predict)


def training_seeds(config: Config) -> tuple[int, ...]:
    """What seeds a run's training randomness: the run's seed, and train.seed where it is
    set. Runs that differ only in train.seed share their folds (drawn from the run's seed
    alone), so they are members of one ensemble; train.seed=0 keeps older runs' draws."""
    return (config.seed,) + ((config.train.seed,) if config.train.seed else ())


def epoch_order(seeds: tuple[int, ...], fold_seed: int, epoch: int, rows: int,
                batch_size: int) -> np.ndarray:
    """The epoch's batches as (steps, batch) row indices; a function of the seeds alone, so a
    resumed run draws the same batches as an uninterrupted one."""
    rng = np.random.default_rng([*seeds, fold_seed, epoch])
    order = rng.permutation(rows)
    steps = max(rows // batch_size, 1)
    if rows < batch_size:
        order = rng.choice(rows, batch_size, replace=True)
    return order[: steps * batch_size].reshape(steps, batch_size)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return max(rows // batch_size, 1)


def resolved_precision(config: Config) -> str:
    """What train.precision trains in on this process's device (auto resolved)."""
    return precisions.on_this_device(config.train.precision)


@functools.lru_cache(maxsize=8)
def build(config: Config, task: Task):
    """The network, optimiser and step, built once per config and task: a fresh closure per
    call would make XLA compile the same program again."""
    precision = resolved_precision(config)
    net = networks.build(config.model, task.outputs, precisions.compute_dtype(precision))
    optimizer = make_optimizer(config.train)
    return net, optimizer, make_train_step(net, optimizer, config, task, precision=precision)


@functools.lru_cache(maxsize=8)
def early_step(config: Config, task: Task) -> Callable:
    """The step of progressive resizing's early epochs: the same network and optimiser as
    `compiled`'s, the images at train.early_size."""
    net, optimizer, _ = build(config, task)
    return make_train_step(net, optimizer, config, task, config.train.early_size,
                           resolved_precision(config))


def is_early(train: TrainConfig, epoch: int) -> bool:
    """Whether epoch `epoch` (from 0) trains at train.early_size."""
    return epoch < early_epochs(train)


def is_validated(train: TrainConfig, epoch: int) -> bool:
    """Whether epoch `epoch`'s (from 0) end scores the held-out rows: every
    train.validate_every epochs, counted from the first, and always the last."""
    return (epoch + 1) % train.validate_every == 0 or epoch + 1 >= train.epochs


def fold_key(config: Config, task: Task, fold_seed: int) -> jax.Array:
    key = jax.random.PRNGKey(config.seed)
    if config.train.seed:
        key = jax.random.fold_in(key, config.train.seed)
    return jax.random.fold_in(jax.random.fold_in(key, fold_seed), zlib.crc32(task.name.encode()))


def make_init(net: hk.TransformedWithState, optimizer: optax.GradientTransformation,
              ema: float = 0.0, precision: str = "fp32", swa: bool = False) -> Callable:
    """key -> a fresh TrainState; pure, so folds are initialised together under vmap.
    `precision`: the resolved one (`resolved_precision`), fp16's state carrying a loss
    scale; `swa`: the state carries SWA's mean and its batch-norm statistics."""

    def init(key: jax.Array) -> TrainState:
        init_key, key = jax.random.split(key)
        dummy = jnp.zeros((2, IMAGE_SIZE, IMAGE_SIZE), jnp.float32)
        params, net_state = net.init(init_key, dummy, True)
        return TrainState(params, net_state, optimizer.init(params), key,
                          jnp.zeros((), jnp.int32), params if ema or swa else (),
                          precisions.initial_loss_scale(precision),
                          net_state if swa else ())

    return init
