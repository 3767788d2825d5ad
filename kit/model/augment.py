"""Per-batch augmentation on the device: flips, affine warps, photometric jitter, occlusion.

Everything here is a pure, jittable function of a PRNG key and arrays; `AugmentConfig` is a
frozen dataclass, so `augment` can be jitted (or called inside a jitted train step) with the
config as a static argument.

Conventions
- images: float32 (B, H, W), H == W == `size`, pixel values in [0, 1].
- keypoints: float32 (B, 2K) in pixel coordinates, columns x, y, x, y, ... as named by a
  `columns` tuple (`kit.core.keypoints.COLUMNS` or `CORE_COLUMNS`); mask: float32 (B, 2K), 1 where a
  label is present (missing labels are 0 in both arrays).
- Pixel centres: Kaggle's x is the column index of a pixel's centre, so the pixel in row i,
  column j has its centre at (x, y) = (j, i) and covers [j - 0.5, j + 0.5]. The image centre is
  ((size - 1) / 2, (size - 1) / 2), a mirror maps x to (size - 1) - x, and a keypoint is "in
  frame" when both coordinates lie in [0, size - 1].
- Affine matrices are (B, 3, 3) homogeneous "push" matrices in (x, y): a point p of the input
  lands at M @ [x, y, 1] in the output. The image is resampled by pulling each output pixel
  from M^-1 @ its centre, bilinearly, with `fill` for neighbours outside the input (the
  `grid-constant` rule of `jax.scipy.ndimage.map_coordinates(order=1, mode="constant")`).
- A warp that would push a present keypoint out of frame is redrawn: each sample gets
  `max_redraws + 1` candidate warps and keeps the first one that keeps every present keypoint
  in frame; when none does, the sample is not warped at all (identity). Keypoints are never
  clipped and the mask is never zeroed by a warp, so every label that goes in comes out, exact.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from kit.config import AugmentConfig


def hflip(
    images: jax.Array, keypoints: jax.Array, permutation: np.ndarray | jax.Array,
    mirror_x: float = 47.5,
) -> tuple[jax.Array, jax.Array]:
    """Mirror every image left-right: x -> 2 * mirror_x - x (augment.mirror_x: 47.5 maps x to
    95 - x), and relabel left/right columns.

    `permutation` is `kit.core.keypoints.flip_permutation(columns)`; even columns are x.
    """
    is_x = (jnp.arange(keypoints.shape[-1]) % 2) == 0
    mirrored = jnp.where(is_x, 2.0 * mirror_x - keypoints, keypoints)
    return images[..., ::-1], mirrored[..., jnp.asarray(permutation)]


def affine_matrices(key: jax.Array, batch: int, config: AugmentConfig, size: int) -> jax.Array:
    """(batch, 3, 3) push matrices: rotate, zoom, then shift, about the image centre.

    Angle uniform in +-rotate_degrees, zoom uniform in [1 - scale, 1 + scale], each shift
    uniform in +-shift_pixels. A point p lands at zoom * R(angle) (p - c) + c + shift.
    """
    angle_key, zoom_key, shift_key = jax.random.split(key, 3)
    max_angle = math.radians(config.rotate_degrees)
    angle = jax.random.uniform(angle_key, (batch,), minval=-max_angle, maxval=max_angle)
    zoom = jax.random.uniform(
        zoom_key, (batch,), minval=1.0 - config.scale, maxval=1.0 + config.scale
    )
    shift = jax.random.uniform(
        shift_key, (batch, 2), minval=-config.shift_pixels, maxval=config.shift_pixels
    )
    return similarity_matrices(angle, zoom, shift, size)


def similarity_matrices(
    angle: jax.Array, zoom: jax.Array, shift: jax.Array, size: int
) -> jax.Array:
    """(B, 3, 3) push matrices from angles (B,) in radians, zooms (B,) and shifts (B, 2).

    In image coordinates (y down) a positive angle turns the face clockwise on screen.
    """
    centre = (size - 1) / 2.0
    cos, sin = zoom * jnp.cos(angle), zoom * jnp.sin(angle)
    # M @ (p - c) + c + t, written out so that angle 0, zoom 1, shift 0 is exactly the identity.
    tx = centre - (cos * centre - sin * centre) + shift[:, 0]
    ty = centre - (sin * centre + cos * centre) + shift[:, 1]
    zeros, ones = jnp.zeros_like(cos), jnp.ones_like(cos)
    rows = [
        jnp.stack([cos, -sin, tx], axis=-1),
        jnp.stack([sin, cos, ty], axis=-1),
        jnp.stack([zeros, zeros, ones], axis=-1),
    ]
    return jnp.stack(rows, axis=-2).astype(jnp.float32)


def identity_matrices(batch: int) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, 3, 3))


def transform_keypoints(keypoints: jax.Array, matrices: jax.Array) -> jax.Array:
    """Map (..., 2K) x,y keypoints by (..., 3, 3) push matrices."""
    x, y = keypoints[..., 0::2], keypoints[..., 1::2]
    m = matrices[..., None, :, :]  # broadcast over the K points
    new_x = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
    new_y = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
    return jnp.stack([new_x, new_y], axis=-1).reshape(new_x.shape[:-1] + (-1,))


def invert(matrices: jax.Array) -> jax.Array:
    # Closed form for an affine 3x3, exact for the identity (unlike a general LU inverse).
    a, b, tx = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    c, d, ty = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    zeros, ones = jnp.zeros_like(a), jnp.ones_like(a)
    rows = [
        jnp.stack([ia, ib, itx], axis=-1),
        jnp.stack([ic, id_, ity], axis=-1),
        jnp.stack([zeros, zeros, ones], axis=-1),
    ]
    return jnp.stack(rows, axis=-2)


def warp(
    images: jax.Array, keypoints: jax.Array, matrices: jax.Array, fill: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Warp images (bilinear, `fill` outside) and keypoints by the same (B, 3, 3) push matrices."""
    _, height, width = images.shape
    inverse = invert(matrices)
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    m = inverse[:, None, None, :, :]
    source_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    source_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    # Materialise the coordinates once. A floor and its fractional weight must come from the
    # same rounding: a hand-written gather here, without this barrier, had XLA recompute a
    # coordinate in two fusions and put one pixel a whole pixel off. Cheap insurance.
    source_x, source_y = jax.lax.optimization_barrier((source_x, source_y))

    def sample(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        # Bilinear; a neighbour outside the image counts as `fill` (scipy's "grid-constant").
        # `fill` must be a Python float: map_coordinates takes cval as a static argument.
        return map_coordinates(image, [y, x], order=1, mode="constant", cval=float(fill))

    warped = jax.vmap(sample)(images, source_x, source_y)
    return warped.astype(images.dtype), transform_keypoints(keypoints, matrices)


def photometric(key: jax.Array, images: jax.Array, config: AugmentConfig) -> jax.Array:
    """Brightness shift, contrast about each image's mean, gaussian noise; clipped to [0, 1].

    Per image: delta uniform in +-brightness, factor uniform in 1 +- contrast, noise standard
    deviation uniform in [0, noise_std]. Zero strengths return the images unchanged, exactly.
    """
    batch = images.shape[0]
    brightness_key, contrast_key, sigma_key, noise_key = jax.random.split(key, 4)
    per_image = (batch,) + (1,) * (images.ndim - 1)
    delta = jax.random.uniform(
        brightness_key, per_image, minval=-config.brightness, maxval=config.brightness
    )
    factor = jax.random.uniform(
        contrast_key, per_image, minval=1.0 - config.contrast, maxval=1.0 + config.contrast
    )
    sigma = jax.random.uniform(sigma_key, per_image, minval=0.0, maxval=config.noise_std)
    mean = images.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
    # x * f + mean * (1 - f) rather than (x - mean) * f + mean: exact when f == 1.
    out = images * factor + mean * (1.0 - factor) + delta
    if config.noise_std > 0:
        out = out + sigma * jax.random.normal(noise_key, images.shape, images.dtype)
    return jnp.clip(out, 0.0, 1.0).astype(images.dtype)


def occlude(key: jax.Array, images: jax.Array, config: AugmentConfig) -> jax.Array:
    """Cover one axis-aligned rectangle of each image (with occlude_prob) in a flat grey.

    Its width and height are drawn from [occlude_size / 2, occlude_size] of the side, its
    centre anywhere in the frame (so it may be cut by the edge), its grey uniform in [0, 1].
    """
    batch, height, width = images.shape
    apply_key, side_key, centre_key, grey_key = jax.random.split(key, 4)
    sides = jax.random.uniform(side_key, (batch, 2), minval=0.5 * config.occlude_size,
                               maxval=config.occlude_size) * jnp.array([width, height])
    centres = jax.random.uniform(centre_key, (batch, 2)) * jnp.array([width - 1, height - 1])
    grey = jax.random.uniform(grey_key, (batch, 1, 1), dtype=images.dtype)
    xs = jnp.arange(width, dtype=jnp.float32)[None, None, :]
    ys = jnp.arange(height, dtype=jnp.float32)[None, :, None]
    inside = ((jnp.abs(xs - centres[:, 0, None, None]) <= sides[:, 0, None, None] / 2)
              & (jnp.abs(ys - centres[:, 1, None, None]) <= sides[:, 1, None, None] / 2))
    apply = (jax.random.uniform(apply_key, (batch,)) < config.occlude_prob)[:, None, None]
    return jnp.where(inside & apply, grey, images)


def choose_warps(
    key: jax.Array, keypoints: jax.Array, mask: jax.Array, config: AugmentConfig, size: int
) -> jax.Array:
    """(B, 3, 3) warps that keep every present keypoint in [0, size - 1], else the identity.

    Draws `max_redraws + 1` candidates per sample and keeps the first valid one; a sample
    whose candidates all fail, or that loses the `affine_prob` draw, gets the identity.
    """
    batch = keypoints.shape[0]
    tries = config.max_redraws + 1
    apply_key, matrix_key = jax.random.split(key)
    candidates = affine_matrices(matrix_key, tries * batch, config, size)
    candidates = candidates.reshape(tries, batch, 3, 3)
    moved = transform_keypoints(keypoints[None], candidates)  # (tries, B, 2K)
    in_frame = (moved >= 0.0) & (moved <= size - 1.0)
    valid = jnp.all(in_frame | (mask[None] <= 0), axis=-1)  # (tries, B)
    first = jnp.argmax(valid, axis=0)
    chosen = jnp.take_along_axis(candidates, first[None, :, None, None], axis=0)[0]
    apply = jax.random.uniform(apply_key, (batch,)) < config.affine_prob
    use = (apply & jnp.any(valid, axis=0))[:, None, None]
    return jnp.where(use, chosen, identity_matrices(batch))


def augment(
    key: jax.Array,
    images: jax.Array,
    keypoints: jax.Array,
    mask: jax.Array,
    config: AugmentConfig,
    permutation: np.ndarray | jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Flip (each sample with flip_prob), warp (affine_prob, redrawn), photometric, then
    occlusion (occlude_prob; the labels are kept).

    Returns (images, keypoints, mask); the mask is only permuted by flips (a value's weight,
    where it is not 1, follows its label), and missing labels stay 0. Jit with `config`
    static, e.g. jax.jit(augment, static_argnames="config").
    """
    batch, size = images.shape[0], images.shape[-1]
    flip_key, warp_key, photo_key = jax.random.split(key, 3)
    present = mask > 0

    if config.flip_prob > 0:
        flip = jax.random.uniform(flip_key, (batch,)) < config.flip_prob
        flipped_images, flipped_keypoints = hflip(images, keypoints, permutation, config.mirror_x)
        images = jnp.where(flip[:, None, None], flipped_images, images)
        keypoints = jnp.where(flip[:, None], flipped_keypoints, keypoints)
        present = jnp.where(flip[:, None], present[:, jnp.asarray(permutation)], present)
        mask = jnp.where(flip[:, None], mask[:, jnp.asarray(permutation)], mask)

    if config.affine_prob > 0:
        matrices = choose_warps(warp_key, keypoints, present.astype(jnp.float32), config, size)
        images, keypoints = warp(images, keypoints, matrices, config.fill)

    if config.brightness > 0 or config.contrast > 0 or config.noise_std > 0:
        images = photometric(photo_key, images, config)

    if config.occlude_prob > 0:
        # A key of its own: configs without occlusion draw exactly what they drew before.
        images = occlude(jax.random.fold_in(key, 3), images, config)

    keypoints = jnp.where(present, keypoints, 0.0)
    return images, keypoints, jnp.where(present, mask, 0.0).astype(mask.dtype)
