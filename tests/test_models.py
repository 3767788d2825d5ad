"""The networks' heads: the soft-argmax read-out's geometry and the head's feature pyramid."""
from __future__ import annotations

import haiku as hk
import jax
import numpy as np
import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.model import networks


def peaked_logits(height: int, width: int, cells: list[tuple[int, int]]) -> np.ndarray:
    """(1, H, W, K) logits, map k sharply peaked at cells[k] = (row, column)."""
    logits = np.zeros((1, height, width, len(cells)), np.float32)
    for k, (row, column) in enumerate(cells):
        logits[0, row, column, k] = 60.0
    return logits


@pytest.mark.parametrize("grid", [12, 10, 6])
def test_soft_argmax_of_a_peak_is_its_cell_centre_in_kaggle_pixels(grid):
    cells = [(0, 0), (grid - 1, 2), (grid // 2, grid - 1)]
    unit = networks.soft_argmax(peaked_logits(grid, grid, cells))
    pixels = np.asarray(networks.to_pixels(unit)).reshape(-1, 2)
    cell = 96 / grid
    expected = [((c + 0.5) * cell - 0.5, (r + 0.5) * cell - 0.5) for r, c in cells]
    np.testing.assert_allclose(pixels, expected, atol=1e-3)


def test_soft_argmax_of_flat_maps_is_the_frame_centre_and_moves_smoothly():
    flat = np.zeros((1, 12, 12, 2), np.float32)
    np.testing.assert_allclose(networks.to_pixels(networks.soft_argmax(flat)), [[47.5] * 4],
                               atol=1e-4)
    # Two equal peaks in neighbouring cells: the read-out lies halfway, a sub-cell position.
    logits = np.zeros((1, 12, 12, 1), np.float32)
    logits[0, 3, 4, 0] = logits[0, 3, 5, 0] = 60.0
    x, y = np.asarray(networks.to_pixels(networks.soft_argmax(logits)))[0]
    assert x == pytest.approx((4.5 + 5.5) / 2 * 8 - 0.5, abs=1e-3)
    assert y == pytest.approx(3.5 * 8 - 0.5, abs=1e-3)


def convolution_shapes(model: config_io.ModelConfig, outputs: int) -> list[tuple[int, ...]]:
    """The output shape of each of the trunk's and head's convolutions, in call order."""
    forward = networks.NETWORKS[model.kind](model, outputs)
    images = np.zeros((2, model.input_size, model.input_size), np.float32)
    calls = hk.experimental.eval_summary(lambda x: forward(x, True))(images)
    return [tuple(c.output_spec.shape) for c in calls
            if "conv2_d" in c.module_details.module.module_name]


def heatmap_shape(model: config_io.ModelConfig, outputs: int) -> tuple[int, ...]:
    """The shape of the logits the soft-argmax head reads: its last convolution's output."""
    return convolution_shapes(model, outputs)[-1]


@pytest.mark.parametrize("input_size, stride, grid", [(96, 8, 12), (96, 16, 6), (80, 8, 10),
                                                      (64, 4, 16)])
def test_head_stride_sets_the_heatmap_grid(input_size, stride, grid):
    model = config_io.ModelConfig(head="soft_argmax", input_size=input_size, head_stride=stride,
                                  head_width=8, stem_width=4, widths=(8, 8, 8))
    assert heatmap_shape(model, 38) == (2, grid, grid, 19)


@pytest.mark.slow
def test_default_preset_reads_19_maps_on_a_12_by_12_grid_and_starts_at_the_centre():
    model = config_io.preset("default").model
    assert heatmap_shape(model, 38) == (2, 12, 12, 19)
    net = networks.build(model, 38)
    images = np.random.default_rng(0).integers(0, 255, (2, 96, 96)).astype(np.float32) / 255
    params, state = net.init(jax.random.PRNGKey(0), images, True)
    output, _ = net.apply(params, state, None, images, False)
    # Near-zero logits at initialisation: every keypoint starts near the frame's centre.
    assert np.abs(np.asarray(networks.to_pixels(output)) - 47.5).max() < 2.0
    names = set(params)
    assert not any("linear" in name for name in names)  # no dense layer in this head


def test_deep_blocks_add_residual_blocks_to_the_deepest_stage_alone():
    model = config_io.ModelConfig(head="soft_argmax", input_size=64, head_stride=8,
                                  head_width=8, stem_width=4, widths=(8, 12, 16))
    plain = convolution_shapes(model, 38)
    deeper = convolution_shapes(config_io.override(
        config_io.Config(model=model), ["model.deep_blocks=2"]).model, 38)
    # Two blocks of two convolutions each, all at the deepest stage's 4x4 grid and width.
    assert len(deeper) == len(plain) + 4
    assert deeper.count((2, 4, 4, 16)) == plain.count((2, 4, 4, 16)) + 4


@pytest.mark.parametrize("field, value", [("kind", "vgg"), ("head", "heatmaps")])
def test_unknown_network_or_head_is_refused_as_the_config_is_built(field, value):
    with pytest.raises(KitError, match=f"model.{field}='{value}': expected one of"):
        config_io.override(config_io.preset("default"), [f"model.{field}={value}"])


def test_one_channel_convolution_and_its_gradients_equal_xlas():
    rng = np.random.default_rng(0)
    images = rng.random((3, 11, 9), np.float32)
    kernel = rng.normal(size=(3, 3, 1, 5)).astype(np.float32)
    output_gradient = rng.normal(size=(3, 11, 9, 5)).astype(np.float32)

    def reference(x, w):
        return jax.lax.conv_general_dilated(x[..., None], w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    expected, expected_vjp = jax.vjp(reference, images, kernel)
    output, vjp = jax.vjp(networks.conv3x3_one_channel, images, kernel)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(vjp(output_gradient), expected_vjp(output_gradient)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_one_channel_conv_module_is_hk_conv2d_with_the_same_parameters():
    def ours(x):
        return networks.OneChannelConv2D(7)(x)

    def haikus(x):
        return hk.Conv2D(7, 3)(x[..., None])

    images = np.random.default_rng(1).random((2, 12, 12), np.float32)
    key = jax.random.PRNGKey(3)
    params = hk.transform(ours).init(key, images)
    reference = hk.transform(haikus).init(key, images)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(reference)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)
    np.testing.assert_allclose(hk.transform(ours).apply(params, None, images),
                               hk.transform(haikus).apply(reference, None, images),
                               rtol=1e-5, atol=1e-5)
