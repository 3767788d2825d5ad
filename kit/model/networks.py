"""The networks, as plain Haiku functions of (images, is_training) -> keypoints in [-1, 1]
(with `maps=True`, a soft-argmax head's heatmap logits too, for a loss that shapes them).

Targets are scaled to a unit range (the student report's advice): a pixel coordinate c maps to
(c - 48) / 48, so the head's outputs start near the face's centre.
"""
from __future__ import annotations

import contextlib

import haiku as hk
import jax
import jax.numpy as jnp
import jmp

from kit.config import ModelConfig
from kit.core.keypoints import IMAGE_SIZE

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


def _shifted_views(images: jnp.ndarray) -> list[jnp.ndarray]:
    """The nine (B, H, W) views a 3x3 'SAME' window sees, row by row: zero beyond the edge."""
    height, width = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1)))
    return [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]


def _lax_conv(images: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(images[..., None], kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv3x3_one_channel(images: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """A 3x3 'SAME' convolution of (B, H, W) images by a (3, 3, 1, C) kernel: (B, H, W, C).

    The same numbers as lax.conv_general_dilated, computed as nine shifted multiply-adds and,
    for the kernel's gradient, one (9, B*H*W) x (B*H*W, C) product: with one input channel
    XLA:CPU's convolution and its kernel gradient run far below the machine's speed, and this
    way runs faster (docs/engine.md).
    """
    taps = kernel.reshape(9, -1)
    return sum(view[..., None] * taps[k] for k, view in enumerate(_shifted_views(images)))


def _conv3x3_forward(images, kernel):
    return conv3x3_one_channel(images, kernel), (images, kernel)


def _conv3x3_backward(residuals, output_gradient):
    images, kernel = residuals
    channels = output_gradient.shape[-1]
    patches = jnp.stack(_shifted_views(images), axis=-1).reshape(-1, 9)
    kernel_gradient = (patches.T @ output_gradient.reshape(-1, channels)).reshape(kernel.shape)
    # The images' gradient is never used in training (they are data, not parameters) and XLA
    # drops it then; it is the plain convolution's, for anyone who differentiates the input.
    _, image_vjp = jax.vjp(lambda x: _lax_conv(x, kernel), images)
    return image_vjp(output_gradient)[0], kernel_gradient


conv3x3_one_channel.defvjp(_conv3x3_forward, _conv3x3_backward)


class OneChannelConv2D(hk.Module):
    """hk.Conv2D(width, 3) on one-channel images through conv3x3_one_channel: the same
    parameters (w: (3, 3, 1, width), b), initialisation and default name, so checkpoints of
    either load in the other."""

    def __init__(self, width: int, name: str = "conv2_d"):
        super().__init__(name=name)
        self.width = width

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        # hk.Conv2D's default: truncated normal with standard deviation 1 / sqrt(fan-in).
        fan_in = 3 * 3 * 1
        w = hk.get_parameter("w", (3, 3, 1, self.width), images.dtype,
                             init=hk.initializers.TruncatedNormal(1.0 / fan_in**0.5))
        b = hk.get_parameter("b", (self.width,), images.dtype, init=jnp.zeros)
        return conv3x3_one_channel(images, w) + b


def seed_net(config: ModelConfig, outputs: int):
    """The report's CNN: conv, max-pool, conv, max-pool, flatten, dense; a linear head."""

    def forward(images: jnp.ndarray, is_training: bool, maps: bool = False) -> jnp.ndarray:
        if maps:
            raise ValueError("the seed net has no heatmaps: maps=True needs the soft-argmax head")
        x = max_pool_2x2(jax.nn.relu(OneChannelConv2D(config.widths[0])(images)))
        for width in config.widths[1:]:
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

    def forward(images: jnp.ndarray, is_training: bool, maps: bool = False):
        x = conv_bn(images[..., None], config.stem_width, 2, is_training)
        stages = []
        for index, width in enumerate(config.widths):
            x = conv_bn(x, width, 2, is_training)
            deepest = index == len(config.widths) - 1
            for _ in range(config.blocks_per_stage + (config.deep_blocks if deepest else 0)):
                residual = conv_bn(x, width, 1, is_training)
                residual = conv_bn(residual, width, 1, is_training, relu=False)
                x = jax.nn.relu(x + residual)
            stages.append(x)
        return HEADS[config.head](config, outputs, stages, images.shape[1], is_training, maps)

    return forward


def dense_head(config: ModelConfig, outputs: int, stages: list, input_size: int,
               is_training: bool, maps: bool = False) -> jnp.ndarray:
    """The deepest stage flattened into a dense layer, then a linear read-out."""
    if maps:
        raise ValueError("a dense head has no heatmaps: maps=True needs the soft-argmax head")
    x = hk.Flatten()(stages[-1])
    if is_training and config.dropout > 0:
        x = hk.dropout(hk.next_rng_key(), config.dropout, x)
    x = jax.nn.relu(hk.Linear(config.dense)(x))
    return hk.Linear(outputs, w_init=hk.initializers.VarianceScaling(0.01))(x)


def soft_argmax_head(config: ModelConfig, outputs: int, stages: list, input_size: int,
                     is_training: bool, maps: bool = False):
    """Keypoints as the expected positions of per-keypoint heatmaps (integral regression).

    The deepest stage is upsampled and merged with each finer one down to `head_stride`, as in
    a feature pyramid: the coarse maps know which face part is where, the fine ones where
    exactly. A heatmap is a softmax over the grid, so the read-out is differentiable and
    sub-pixel, and the same cells answer wherever a face sits: a shifted face moves the map.
    With `maps`, (keypoints, the (B, H, W, K) fp32 heatmap logits) for a loss on the maps.
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
    # The softmax over a whole map and its weighted mean need fp32 under mixed precision.
    logits = logits.astype(jnp.float32)
    keypoints = soft_argmax(logits)
    return (keypoints, logits) if maps else keypoints


def cell_centres(cells: int) -> jnp.ndarray:
    """The pixel centres of `cells` heatmap cells spanning the 96-pixel frame along one axis,
    pixel centres being integers as in Kaggle's coordinates."""
    return (jnp.arange(cells) + 0.5) / cells * IMAGE_SIZE - 0.5


def soft_argmax(logits: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, K) heatmap logits -> (B, 2K) expected x, y of each map in unit coordinates.

    The maps span the whole 96-pixel frame whatever the input size, so cell (i, j) of an H x W
    grid has its centre at pixel ((j + 0.5) * 96 / W - 0.5, (i + 0.5) * 96 / H - 0.5), pixel
    centres being integers as in Kaggle's coordinates (`cell_centres`).
    """
    batch, height, width, points = logits.shape
    weights = jax.nn.softmax(logits.reshape(batch, height * width, points), axis=1)
    centres_y = to_unit(cell_centres(height))
    centres_x = to_unit(cell_centres(width))
    x = jnp.einsum("bnp,n->bp", weights, jnp.tile(centres_x, height))
    y = jnp.einsum("bnp,n->bp", weights, jnp.repeat(centres_y, width))
    return jnp.stack([x, y], axis=-1).reshape(batch, 2 * points)


# ModelConfig.head's choices (the resnet's): (config, outputs, the stages' maps, the input
# size, is_training, maps) -> keypoints in unit coordinates (and, with maps, the heatmap
# logits, which only the soft-argmax head has).
HEADS = {"dense": dense_head, "soft_argmax": soft_argmax_head}
# ModelConfig.kind's choices: (config, outputs) -> the forward function.
NETWORKS = {"seed": seed_net, "resnet": resnet}


# The modules that compute in a reduced dtype under mixed precision; everything else
# (activations, pooling, resizing) follows the dtype it is given.
COMPUTING_MODULES = (hk.Conv2D, hk.Linear, OneChannelConv2D)


@contextlib.contextmanager
def mixed_precision(dtype):
    """Haiku's per-class policies while the network is traced, taken back after (they are
    thread-wide, so a build of another precision in the same process never sees them):
    weights stored fp32 and cast to `dtype` for the convolutions and dense layers, batch norm
    computed in fp32 (its statistics are means of squares, beyond fp16's range)."""
    f32 = jnp.float32
    with contextlib.ExitStack() as stack:
        for module in COMPUTING_MODULES:
            stack.enter_context(hk.mixed_precision.push_policy(
                module, jmp.Policy(param_dtype=f32, compute_dtype=dtype, output_dtype=dtype)))
        stack.enter_context(hk.mixed_precision.push_policy(
            hk.BatchNorm, jmp.Policy(param_dtype=f32, compute_dtype=f32, output_dtype=dtype)))
        yield


def build(config: ModelConfig, outputs: int, dtype=None) -> hk.TransformedWithState:
    """The network as a pure (init, apply) pair; batch-norm statistics live in `state`.
    `dtype`: what its layers compute in (None or float32: fp32 throughout, else mixed
    precision); the weights and the keypoints it returns are fp32 either way."""
    forward = NETWORKS[config.kind](config, outputs)
    reduced = dtype is not None and jnp.dtype(dtype) != jnp.float32

    def net(images, is_training, size=None, maps=False):
        # `size`: another input size than the config's (progressive resizing's early epochs).
        # `maps`: (keypoints, heatmap logits) instead of keypoints, for the training step.
        size = size or config.input_size
        if images.shape[1] != size:
            images = jax.image.resize(images, (images.shape[0], size, size), "linear")
        if not reduced:
            return forward(images, is_training, maps)
        with mixed_precision(dtype):
            output = forward(images.astype(dtype), is_training, maps)
            return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), output)

    return hk.transform_with_state(net)
