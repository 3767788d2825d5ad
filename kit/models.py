"""The networks, as plain Haiku functions of (images, is_training) -> keypoints in [-1, 1].

Targets are scaled to a unit range (the student report's advice): a pixel coordinate c maps to
(c - 48) / 48, so the head's outputs start near the face's centre.
"""
from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from kit.config import ModelConfig
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
    and refine with residual blocks; batch norm throughout; a dense head.

    Nothing runs at full resolution: on a CPU those layers cost the most, and the stem's 16
    channels at half resolution keep the detail a keypoint needs.
    """

    def conv_bn(x, width, stride, is_training, relu=True):
        x = hk.Conv2D(width, 3, stride=stride, with_bias=False)(x)
        x = _batch_norm()(x, is_training)
        return jax.nn.relu(x) if relu else x

    def forward(images: jnp.ndarray, is_training: bool) -> jnp.ndarray:
        x = conv_bn(images[..., None], config.stem_width, 2, is_training)
        for width in config.widths:
            x = conv_bn(x, width, 2, is_training)
            for _ in range(config.blocks_per_stage):
                residual = conv_bn(x, width, 1, is_training)
                residual = conv_bn(residual, width, 1, is_training, relu=False)
                x = jax.nn.relu(x + residual)
        x = hk.Flatten()(x)
        if is_training and config.dropout > 0:
            x = hk.dropout(hk.next_rng_key(), config.dropout, x)
        x = jax.nn.relu(hk.Linear(config.dense)(x))
        return hk.Linear(outputs, w_init=hk.initializers.VarianceScaling(0.01))(x)

    return forward


NETWORKS = {"seed": seed_net, "resnet": resnet}


def build(config: ModelConfig, outputs: int) -> hk.TransformedWithState:
    """The network as a pure (init, apply) pair; batch-norm statistics live in `state`."""
    if config.kind not in NETWORKS:
        raise ValueError(f"unknown model kind {config.kind!r}: expected one of {list(NETWORKS)}")
    forward = NETWORKS[config.kind](config, outputs)

    def net(images, is_training):
        if images.shape[1] != config.input_size:
            size = config.input_size
            images = jax.image.resize(images, (images.shape[0], size, size), "linear")
        return forward(images, is_training)

    return hk.transform_with_state(net)


def parameter_count(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
