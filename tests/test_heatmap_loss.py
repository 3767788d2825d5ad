"""DSNT's heatmap term (train.heatmap_loss): the Jensen-Shannon divergence between each
keypoint's soft-argmax heatmap and a Gaussian at its target, its mask, its gradient, the
config's refusal without heatmaps, and a training step that adds it only when asked."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kit import config as config_io
from kit.model import networks, tasks
from kit.training import train
from tests.conftest import refusal
from tests.helpers import NETWORK, batch_of, init_state, small_config, train_folds

SIGMA = 8.0
# The augmentation all off, so a step's images and targets are the batch's own and its loss
# can be recomputed outside it.
STILL = ["augment.flip_prob=0", "augment.affine_prob=0", "augment.brightness=0",
         "augment.contrast=0", "augment.noise_std=0"]


def target_logits(keypoints: np.ndarray, grid: int) -> jnp.ndarray:
    """(B, grid, grid, K) logits whose softmax is exactly the target Gaussians."""
    batch, points = keypoints.shape[0], keypoints.shape[1] // 2
    log_target = train.gaussian_log_heatmaps(jnp.asarray(keypoints), grid, grid, SIGMA)
    return log_target.reshape(batch, grid, grid, points)


KEYPOINTS = np.array([[30.0, 40.0, 60.5, 41.0, 47.0, 70.0],
                      [20.0, 20.0, 75.0, 25.0, 50.0, 80.0]], np.float32)


def test_the_divergence_is_zero_at_the_target_gaussian_and_positive_elsewhere():
    mask = np.ones_like(KEYPOINTS)
    logits = target_logits(KEYPOINTS, 12)
    assert float(train.heatmap_divergence(logits, KEYPOINTS, mask, SIGMA)) == pytest.approx(
        0.0, abs=1e-6)
    flat = jnp.zeros_like(logits)
    assert float(train.heatmap_divergence(flat, KEYPOINTS, mask, SIGMA)) > 0.05
    # A map peaked at another keypoint's place is far from this keypoint's Gaussian.
    swapped = logits[..., ::-1]
    assert float(train.heatmap_divergence(swapped, KEYPOINTS, mask, SIGMA)) > 0.1
    # Bounded by log 2 (disjoint distributions).
    assert float(train.heatmap_divergence(100 * swapped, KEYPOINTS, mask, SIGMA)) <= np.log(2)


def test_the_target_gaussian_sits_where_soft_argmax_reads_the_keypoint():
    """The same cell centres as soft_argmax: a Gaussian well inside the frame reads back as
    its centre."""
    centre = np.array([[44.0, 52.0]], np.float32)
    read = networks.to_pixels(networks.soft_argmax(target_logits(centre, 12)))
    np.testing.assert_allclose(np.asarray(read), centre, atol=1e-3)


def test_missing_keypoints_count_for_nothing():
    logits = np.asarray(target_logits(KEYPOINTS, 12)).copy()
    mask = np.ones_like(KEYPOINTS)
    mask[0, 2:4] = 0.0  # the first face's second keypoint is missing
    logits[0, ..., 1] = np.random.default_rng(0).normal(size=(12, 12)) * 5  # any map at all
    assert float(train.heatmap_divergence(logits, KEYPOINTS, mask, SIGMA)) == pytest.approx(
        0.0, abs=1e-6)
    mask[0, 2:4] = 1.0
    assert float(train.heatmap_divergence(logits, KEYPOINTS, mask, SIGMA)) > 0.01
    # With every keypoint missing the term is 0, not a division by 0.
    zero = float(train.heatmap_divergence(logits, KEYPOINTS, np.zeros_like(mask), SIGMA))
    assert zero == 0.0


def test_its_gradient_moves_a_heatmap_toward_the_target():
    mask = np.ones_like(KEYPOINTS)
    logits = jnp.zeros((2, 12, 12, 3))

    @jax.jit
    def divergence(logits):
        return train.heatmap_divergence(logits, KEYPOINTS, mask, SIGMA)

    gradient = jax.jit(jax.grad(divergence))
    before = networks.to_pixels(networks.soft_argmax(logits))
    for _ in range(50):
        logits = logits - 100.0 * gradient(logits)
    after = networks.to_pixels(networks.soft_argmax(logits))
    assert float(divergence(logits)) < 0.2 * float(divergence(jnp.zeros_like(logits)))
    distance_before = np.abs(np.asarray(before) - KEYPOINTS).max()
    assert np.abs(np.asarray(after) - KEYPOINTS).max() < 0.25 * distance_before


def test_a_head_without_heatmaps_is_refused_in_one_line(quick_config):
    message = refusal(lambda: config_io.override(
        quick_config, ["model.head=dense", "train.heatmap_loss=0.01"]))
    assert message.startswith("train.heatmap_loss=0.01: expected model.head=soft_argmax")
    config_io.override(quick_config, ["model.head=dense", "train.heatmap_loss=0"])  # off: fine


def test_the_network_hands_over_fp32_heatmap_logits_only_when_asked(quick_config):
    images = jnp.zeros((2, 96, 96), jnp.float32)
    for dtype in (None, jnp.bfloat16):
        net = networks.build(quick_config.model, 8, dtype)
        params, state = net.init(jax.random.PRNGKey(0), images, True)
        keypoints, _ = net.apply(params, state, None, images, False)
        (with_maps, logits), _ = net.apply(params, state, None, images, False, maps=True)
        assert logits.dtype == jnp.float32 and logits.shape == (2, 12, 12, 4)
        np.testing.assert_array_equal(np.asarray(with_maps), np.asarray(keypoints))
        np.testing.assert_array_equal(np.asarray(networks.soft_argmax(logits)),
                                      np.asarray(keypoints))
        # Progressive resizing's smaller input: a smaller grid over the same frame.
        (_, early), _ = net.apply(params, state, None, images, False, 32, maps=True)
        assert early.shape == (2, 8, 8, 4)


def step_and_batch(config, training):
    task = tasks.task_for(NETWORK)
    state = init_state(config, task, 0)
    targets = tasks.network_targets(NETWORK, training.keypoints)
    return task, state, batch_of(training.images, targets, np.arange(8))


@pytest.mark.slow
def test_the_step_adds_the_weighted_term_to_the_coordinate_loss(quick_config, training):
    still = config_io.override(small_config(quick_config), STILL)
    weight = 0.5
    on = config_io.override(still, [f"train.heatmap_loss={weight}"])
    task, state, batch = step_and_batch(on, training)
    net, _, step = train.build(on, task)
    _, metrics = jax.jit(step)(state, batch)
    _, metrics_off = jax.jit(train.build(still, task)[2])(state, batch)

    _, _, dropout_key = jax.random.split(state.key, 3)
    images = batch["images"].astype(np.float32) / 255.0
    (output, logits), _ = net.apply(state.params, state.net_state, dropout_key, images, True,
                                    maps=True)
    coordinates = train.masked_loss(output, networks.to_unit(batch["keypoints"]), batch["mask"],
                                    on.train.loss)
    term = train.heatmap_divergence(logits, batch["keypoints"], batch["mask"], SIGMA)
    assert float(term) > 0.01
    assert float(metrics_off["loss"]) == pytest.approx(float(coordinates), rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(float(coordinates + weight * term), rel=1e-5)


def test_off_the_step_never_traces_the_term(quick_config, training):
    """At heatmap_loss=0 the step's program is the one without the feature: its sigma
    changes nothing in it, while turning the term on does."""
    task, state, batch = step_and_batch(quick_config, training)

    def program(config):
        return str(jax.make_jaxpr(train.make_train_step(*train.build(config, task)[:2], config,
                                                        task))(state, batch))

    today = program(quick_config)
    assert program(config_io.override(quick_config, ["train.heatmap_sigma=3"])) == today
    assert program(config_io.override(quick_config, ["train.heatmap_loss=0.01"])) != today


@pytest.mark.slow
def test_a_short_training_with_the_term_runs_at_both_sizes(quick_config, training):
    config = config_io.override(small_config(quick_config), [
        "train.heatmap_loss=0.01", "train.early_size=32", "train.early_share=0.5"])
    result = train_folds(config, training, folds=(0,))[0]
    assert [epoch["epoch"] for epoch in result.history] == [1, 2]
    assert all(np.isfinite(epoch["train_rmse"]) for epoch in result.history)
    assert np.isfinite(result.best_val_rmse)
