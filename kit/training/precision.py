"""Mixed precision: the dtype the network computes in, and fp16's dynamic loss scale.

`train.precision=auto` follows the device (`auto_precision`: fp32 on CPUs, bf16 on TPUs and on GPUs of compute capability 8.0 or newer, fp16 on 7.x, which has no
bf16, fp32 on older cards). Only the network's convolutions and dense layers compute in the
reduced dtype (kit.model.networks.build); weights, batch norm, the heatmaps' softmax, the loss
and the optimiser stay fp32. fp16's narrow range needs the loss scaled up before the gradient
and the gradient scaled back, the scale halving at each non-finite step (which is skipped)
and doubling after a run of finite ones (`LossScale`: jmp.DynamicLossScale's rule, part of
the TrainState and so of its checkpoints).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kit.core.errors import KitError

# TrainConfig.precision's choices: the network's compute dtype (None: the device decides).
PRECISIONS = {"auto": None, "fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}

# fp16's loss scale: jmp's documented start, halved at each non-finite step and doubled after
# this many finite ones in a row.
INITIAL_LOSS_SCALE = 2.0**15
GROWTH_PERIOD = 2000


def capability(text: str | None) -> tuple[int, int] | None:
    """A compute capability ("8.9") as (major, minor); None where there is none."""
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def auto_precision(platform: str, compute_capability: str | None) -> str:
    """train.precision=auto's rule: fp32 on CPUs; bf16 on TPUs and GPUs of compute capability
    8.0 or newer; fp16 (dynamic loss scaling) on 7.x; fp32 on older cards."""
    if platform == "tpu":
        return "bf16"
    if platform not in ("gpu", "cuda", "rocm"):
        return "fp32"
    found = capability(compute_capability)
    if found is None or found < (7, 0):
        return "fp32"
    return "bf16" if found >= (8, 0) else "fp16"


def resolve(choice: str, platform: str, compute_capability: str | None) -> str:
    """The precision `choice` trains in on a device of `platform` (jax's name) and compute
    capability ("8.9", None where the device has none); a KitError for bf16 on a GPU without
    bf16 (compute capability below 8.0), where it runs emulated, slower than fp32."""
    if choice == "auto":
        return auto_precision(platform, compute_capability)
    found = capability(compute_capability)
    if choice == "bf16" and platform in ("gpu", "cuda") and found and found < (8, 0):
        raise KitError(f"train.precision=bf16: this GPU (compute capability "
                       f"{compute_capability}) has no bf16; expected fp16 or auto (fp16 here) "
                       "or fp32")
    return choice


def on_this_device(choice: str) -> str:
    """`resolve` for jax's first device, the one training's programs are built for."""
    device = jax.local_devices()[0]
    return resolve(choice, device.platform, getattr(device, "compute_capability", None))


def compute_dtype(precision: str):
    """A resolved precision's dtype for the network's convolutions and dense layers."""
    return PRECISIONS[precision]


class LossScale(NamedTuple):
    """fp16's dynamic loss scale: jmp.DynamicLossScale's rule as a plain NamedTuple (jmp's
    dataclass checks its leaves' dtype whenever it is rebuilt, which fails on the
    placeholders jax's ahead-of-time lowering passes through a pytree)."""

    scale: jax.Array  # float32, a power of two
    counter: jax.Array  # int32: finite steps in a row, modulo the growth period


def initial_loss_scale(precision: str) -> LossScale | tuple:
    """A fresh loss scale for fp16; () elsewhere (no leaves: the state and its checkpoints
    stay what they are without one)."""
    if precision != "fp16":
        return ()
    return LossScale(jnp.asarray(INITIAL_LOSS_SCALE, jnp.float32), jnp.zeros((), jnp.int32))


def unscale(loss_scale: LossScale, grads):
    """The gradient of the scaled loss brought back to the loss's own."""
    return jax.tree_util.tree_map(lambda g: g / loss_scale.scale, grads)


def adjust(loss_scale: LossScale, finite: jax.Array,
           period: int = GROWTH_PERIOD) -> LossScale:
    """The scale after a step: halved (not below 1) where the gradient was not finite,
    doubled after `period` finite steps in a row (unless that overflows), else kept."""
    doubled = loss_scale.scale * 2
    grown = jnp.where((loss_scale.counter == period - 1) & jnp.isfinite(doubled), doubled,
                      loss_scale.scale)
    scale = jnp.where(finite, grown, jnp.maximum(loss_scale.scale / 2, 1.0))
    counter = jnp.where(finite, (loss_scale.counter + 1) % period, 0)
    return LossScale(scale.astype(jnp.float32), counter.astype(jnp.int32))
