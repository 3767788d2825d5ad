"""Mixed precision: auto's rule by device, the network computing in bf16 or fp16 with fp32
weights, batch norm and softmax, fp16's loss scale (a non-finite step skipped, the scale
halved, grown after finite ones, kept in the checkpoint so a resumed run is exact), and
reduced-precision runs training about as well as fp32 on a small case."""
from __future__ import annotations

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kit import config as config_io
from kit.model import networks, tasks
from kit.training import checkpoints, hardware, precision, train
from tests.conftest import refusal
from tests.helpers import NETWORK, Chunks, batch_of, small_config, train_folds

WIDE = {np.dtype(np.float32), np.dtype(np.int32)}  # weights, statistics, their counters


@pytest.fixture(scope="module")
def small(quick_config):
    return small_config(quick_config)


def train_one_fold(config, training, **options):
    return train_folds(config, training, folds=(0,), **options)


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


# ---------------------------------------------------------------- which precision


@pytest.mark.parametrize(("platform", "capability", "expected"), [
    ("cpu", None, "fp32"), ("gpu", "7.5", "fp16"), ("gpu", "8.9", "bf16"),
    ("gpu", "6.1", "fp32"), ("tpu", None, "bf16"),
])
def test_auto_follows_the_device(platform, capability, expected):
    assert precision.resolve("auto", platform, capability) == expected
    assert precision.resolve("fp16", platform, capability) == "fp16"  # asked for: kept


def test_bf16_on_a_gpu_without_bf16_is_refused_in_one_line():
    line = refusal(lambda: precision.resolve("bf16", "gpu", "7.5"))
    assert "train.precision=bf16" in line and "compute capability 7.5" in line
    assert precision.resolve("bf16", "gpu", "8.0") == "bf16"


def test_the_survey_reports_the_precision_training_uses(quick_config):
    devices = jax.local_devices()
    assert train.resolved_precision(quick_config) == "fp32"  # auto, on these CPUs
    planned = hardware.plan(quick_config, "cpu", devices)
    assert (planned["precision"], planned["precision_rule"]) == ("fp32", "fp32 on CPUs")
    asked = hardware.plan(config_io.override(quick_config, ["train.precision=fp16"]), "cpu",
                          devices)
    assert (asked["precision"], asked["precision_rule"]) == (
        "fp16", "train.precision=fp16 asks for it")


# ---------------------------------------------------------------- the network


def traced(net, params, state, images):
    return str(jax.make_jaxpr(lambda p, s: net.apply(p, s, None, images, True))(params, state))


@pytest.mark.slow
def test_the_network_computes_reduced_and_keeps_fp32_weights_statistics_and_softmax(
        quick_config):
    images = jnp.zeros((2, 96, 96), jnp.float32)
    for dtype, name in ((jnp.bfloat16, "bf16"), (jnp.float16, "f16"), (None, "f32")):
        net = networks.build(quick_config.model, 8, dtype)
        params, state = net.init(jax.random.PRNGKey(0), images, True)
        assert {leaf.dtype for leaf in leaves((params, state))} <= WIDE
        program = traced(net, params, state, images)
        assert set(re.findall(r"(\w+)\[[^\]]*\] = conv_general_dilated", program)) == {name}
        assert set(re.findall(r"(\w+)\[[^\]]*\] = exp ", program)) == {"f32"}  # softmax
        output, new_state = net.apply(params, state, None, images, True)
        assert output.dtype == jnp.float32
        assert {leaf.dtype for leaf in leaves(new_state)} <= WIDE
    # The policies held only while the network was traced: none is left for the next build.
    assert hk.mixed_precision.get_policy(hk.Conv2D) is None
    assert hk.mixed_precision.get_policy(hk.BatchNorm) is None


# ---------------------------------------------------------------- fp16's loss scale


def fp16_step(small, training):
    config = config_io.override(small, ["train.precision=fp16", "train.ema=0.5"])
    task = tasks.task_for(NETWORK)
    net, optimizer, step = train.build(config, task)
    state = jax.jit(train.make_init(net, optimizer, config.train.ema, "fp16"))(
        train.fold_key(config, task, 0))
    targets = tasks.network_targets(NETWORK, training.keypoints)
    batch = batch_of(training.images, targets, np.arange(8), rate=1e-3)
    return jax.jit(step), state, batch


@pytest.mark.slow
def test_a_non_finite_step_changes_nothing_but_halves_the_scale(small, training):
    step, state, batch = fp16_step(small, training)
    # 2^60 is finite in fp32, but the gradient it scales overflows fp16's range (65504).
    huge = state._replace(loss_scale=precision.LossScale(jnp.float32(2.0**60), jnp.int32(5)))
    after, metrics = step(huge, batch)
    assert float(after.loss_scale.scale) == 2.0**59 and int(after.loss_scale.counter) == 0
    for name in ("params", "net_state", "opt_state", "average"):
        for x, y in zip(leaves(getattr(after, name)), leaves(getattr(huge, name))):
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert int(after.step) == int(huge.step) + 1  # the schedule moves on
    assert all(float(value) == 0.0 for value in metrics.values())
    # The starting scale is finite here: the step is taken and counted.
    taken, metrics = step(state, batch)
    assert float(taken.loss_scale.scale) == precision.INITIAL_LOSS_SCALE
    assert int(taken.loss_scale.counter) == 1 and float(metrics["count"]) > 0
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(taken.params),
                                                          leaves(state.params)))


def test_the_scale_doubles_after_a_period_of_finite_steps_and_never_falls_below_one():
    scale = precision.LossScale(jnp.float32(8.0), jnp.int32(0))
    for _ in range(2):
        scale = precision.adjust(scale, jnp.bool_(True), period=3)
        assert float(scale.scale) == 8.0
    scale = precision.adjust(scale, jnp.bool_(True), period=3)
    assert (float(scale.scale), int(scale.counter)) == (16.0, 0)
    floor = precision.LossScale(jnp.float32(1.0), jnp.int32(2))
    assert float(precision.adjust(floor, jnp.bool_(False)).scale) == 1.0


def test_fp32_states_carry_no_loss_scale(small):
    task = tasks.task_for(NETWORK)
    net, optimizer, _ = train.build(small, task)
    assert train.make_init(net, optimizer)(jax.random.PRNGKey(0)).loss_scale == ()


@pytest.mark.slow
def test_an_interrupted_fp16_run_resumes_exactly_with_its_loss_scale(small, training,
                                                                      tmp_path):
    config = config_io.override(small, ["train.precision=fp16"])
    uninterrupted = train_one_fold(config, training)
    with pytest.raises(KeyboardInterrupt):
        train_one_fold(config, training, checkpoint_dir=tmp_path, listener=Chunks(4))
    path = tmp_path / "fold-0.npz"
    task = tasks.task_for(NETWORK)
    net, optimizer, _ = train.build(config, task)
    like = train.make_init(net, optimizer, 0.0, "fp16")(jax.random.PRNGKey(0))
    saved, _, progress = checkpoints.load_fold(path, like, train.kept_weights(like))
    steps = progress.epoch * train.steps_per_epoch(30, 8) + progress.step
    assert progress.epoch == 1 and steps > 3
    # The scale's count of finite steps stands where the run stopped: it was saved.
    assert int(saved.loss_scale.counter) == steps
    assert float(saved.loss_scale.scale) == precision.INITIAL_LOSS_SCALE
    resumed = train_one_fold(config, training, checkpoint_dir=tmp_path)
    for x, y in zip(leaves(resumed[0].params), leaves(uninterrupted[0].params)):
        np.testing.assert_array_equal(x, y)
    assert [dict(h, seconds=0) for h in resumed[0].history] == [
        dict(h, seconds=0) for h in uninterrupted[0].history]


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def four_epochs(learning_config):
    return config_io.override(small_config(learning_config), ["train.epochs=4"])


@pytest.fixture(scope="module")
def fp32_result(four_epochs, training):
    return train_one_fold(config_io.override(four_epochs, ["train.precision=fp32"]), training)[0]


@pytest.mark.slow
@pytest.mark.parametrize("reduced", ["bf16", "fp16"])
def test_reduced_precision_trains_as_well_as_fp32(four_epochs, training, fp32_result,
                                                  reduced):
    result = train_one_fold(config_io.override(four_epochs, [f"train.precision={reduced}"]),
                         training)[0]
    history = [h["train_rmse"] for h in result.history]
    assert history[-1] < history[0]  # it learns
    # Same data, seed and steps: the held-out RMSE within 2 % of fp32's (pixels).
    assert result.best_val_rmse == pytest.approx(fp32_result.best_val_rmse, rel=0.02)
    assert result.best_val_rmse != fp32_result.best_val_rmse  # really another precision
