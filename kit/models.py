"""The networks, as plain Haiku functions of (images, is_training) -> keypoints in [-1, 1].

Targets are scaled to a unit range (the student report's advice): a pixel coordinate c maps to
(c - 48) / 48, so the head's outputs start near the face's centre.
"""
from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from kit.config import ModelConfig
from kit.errors import KitError
from kit.keypoints import IMAGE_SIZE

HALF = IMAGE_SIZE / 2


def to_unit(keypoints: jnp.ndarray) -> jnp.ndarray:
    return (keypoints - HALF) / HALF


def to_pixels(unit: jnp.ndarray) -> jnp.ndarray:
    return unit * HALF + HALF


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max pooling, stride 2, as a reshape and a max: the same values as hk.max_pool, but
    its gradient avoids XLA's select-and-scatter, which is slow on CPUs."""
    batch, height, width, channels = x.shape
    x = x[:, : height - height % 2, : width - width % 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def seed_net(config: ModelConfig, outputs: int):
    """The report's CNN: conv, max-pool, conv, max-pool, flatten, dense; a linear head."""

    def forward(images: jnp.ndarray, is_training: bool) -> jnp.ndarray:
        x = images[..., None]
        for width in config.widths:
            x = jax.nn.relu(hk.Conv2D(width, 3)(x))
            x = max_pool_2x2(x)
        x = hk.Flatten()(x)
        x = jax.nn.relu(hk.Linear(config.dense)(x))
        if is_training and config.dropout > 0:
            x = hk.dropout(hk.next_rng_key(), config.dropout, x)
        return hk.Linear(outputs)(x)

    return forward


def _batch_norm() -> hk.BatchNorm:
    return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9)


def resnet(config: ModelConfig, outputs: int):
    """A stride-2 stem, then stages that each halve the resolution with a stride-2 convolution
    and refine with residual blocks; batch norm throughout; a dense or a soft-argmax head.

    Nothing runs at full resolution: on a CPU those layers cost the most, and the stem's 16
    channels at half resolution keep the detail a keypoint needs.
    """

    def conv_bn(x, width, stride, is_training, relu=True):
        x = hk.Conv2D(width, 3, stride=stride, with_bias=False)(x)
        x = _batch_norm()(x, is_training)
        return jax.nn.relu(x) if relu else x

    def forward(images: jnp.ndarray, is_training: bool) -> jnp.ndarray:
        x = conv_bn(images[..., None], config.stem_width, 2, is_training)
        stages = []
        for width in config.widths:
            x = conv_bn(x, width, 2, is_training)
            for _ in range(config.blocks_per_stage):
                residual = conv_bn(x, width, 1, is_training)
                residual = conv_bn(residual, width, 1, is_training, relu=False)
                x = jax.nn.relu(x + residual)
            stages.append(x)
        if config.head == "soft_argmax":
            return soft_argmax_head(config, outputs, stages, images.shape[1], is_training)
        x = hk.Flatten()(x)
        if is_training and config.dropout > 0:
            x = hk.dropout(hk.next_rng_key(), config.dropout, x)
        x = jax.nn.relu(hk.Linear(config.dense)(x))
        return hk.Linear(outputs, w_init=hk.initializers.VarianceScaling(0.01))(x)

    return forward


def soft_argmax_head(config: ModelConfig, outputs: int, stages: list, input_size: int,
                     is_training: bool) -> jnp.ndarray:
    """Keypoints as the expected positions of per-keypoint heatmaps (integral regression).

    The deepest stage is upsampled and merged with each finer one down to `head_stride`, as in
    a feature pyramid: the coarse maps know which face part is where, the fine ones where
    exactly. A heatmap is a softmax over the grid, so the read-out is differentiable and
    sub-pixel, and the same cells answer wherever a face sits: a shifted face moves the map.
    """
    x = hk.Conv2D(config.head_width, 1)(stages[-1])
    for finer in reversed(stages[:-1]):
        if input_size // finer.shape[1] < config.head_stride:
            break
        batch, height, width, _ = finer.shape
        x = jax.image.resize(x, (batch, height, width, x.shape[-1]), "nearest")
        x = x + hk.Conv2D(config.head_width, 1, with_bias=False)(finer)
        x = hk.Conv2D(config.head_width, 3, with_bias=False)(jax.nn.relu(x))
        x = jax.nn.relu(_batch_norm()(x, is_training))
    logits = hk.Conv2D(outputs // 2, 1, w_init=hk.initializers.VarianceScaling(0.01))(x)
    return soft_argmax(logits)


def soft_argmax(logits: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, K) heatmap logits -> (B, 2K) expected x, y of each map in unit coordinates.

    The maps span the whole 96-pixel frame whatever the input size, so cell (i, j) of an H x W
    grid has its centre at pixel ((j + 0.5) * 96 / W - 0.5, (i + 0.5) * 96 / H - 0.5), pixel
    centres being integers as in Kaggle's coordinates.
    """
    batch, height, width, points = logits.shape
    weights = jax.nn.softmax(logits.reshape(batch, height * width, points), axis=1)
    centres_y = to_unit((jnp.arange(height) + 0.5) / height * IMAGE_SIZE - 0.5)
    centres_x = to_unit((jnp.arange(width) + 0.5) / width * IMAGE_SIZE - 0.5)
    x = jnp.einsum("bnp,n->bp", weights, jnp.tile(centres_x, height))
    y = jnp.einsum("bnp,n->bp", weights, jnp.repeat(centres_y, width))
    return jnp.stack([x, y], axis=-1).reshape(batch, 2 * points)


NETWORKS = {"seed": seed_net, "resnet": resnet}
HEADS = ("dense", "soft_argmax")


def build(config: ModelConfig, outputs: int) -> hk.TransformedWithState:
    """The network as a pure (init, apply) pair; batch-norm statistics live in `state`."""
    if config.kind not in NETWORKS:
        raise KitError(f"model.kind={config.kind!r}: expected one of {', '.join(NETWORKS)}")
    if config.head not in HEADS:
        raise KitError(f"model.head={config.head!r}: expected one of {', '.join(HEADS)}")
    forward = NETWORKS[config.kind](config, outputs)

    def net(images, is_training):
        if images.shape[1] != config.input_size:
            size = config.input_size
            images = jax.image.resize(images, (images.shape[0], size, size), "linear")
        return forward(images, is_training)

    return hk.transform_with_state(net)


def parameter_count(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
