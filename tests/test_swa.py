"""Stochastic weight averaging (train.swa_epochs): the rate holds at SWA's over the window, the
kept weights are the plain mean of the window's weights with batch-norm statistics of their
own, an interrupted SWA run resumes exactly, and the settings it cannot take are refused."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.model import tasks
from kit.training import train
from tests.helpers import NETWORK, Chunks, batch_of, init_state, small_config, train_folds

SWA = ["train.epochs=4", "train.swa_epochs=2", "train.swa_rate=0.1"]


@pytest.fixture(scope="module")
def swa_config(quick_config):
    return config_io.override(small_config(quick_config), SWA)


def test_the_rate_follows_the_schedule_before_the_window_and_holds_in_it(swa_config):
    """100 steps, the last 2 of 4 epochs averaged: the schedule runs over steps 0-49."""
    plain = config_io.override(swa_config, ["train.swa_epochs=0"])
    peak = swa_config.train.learning_rate
    total = jnp.int32(100)
    assert int(train.swa_start(swa_config.train, total)) == 50
    rates = np.array([train.learning_rate(swa_config.train, jnp.int32(s), total)
                      for s in range(100)])
    scheduled = np.array([train.learning_rate(plain.train, jnp.int32(s), jnp.int32(50))
                          for s in range(50)])
    np.testing.assert_allclose(rates[:50], np.maximum(scheduled, 0.1 * peak), rtol=1e-6)
    np.testing.assert_allclose(rates[50:], 0.1 * peak, rtol=1e-6)
    assert rates[:50].max() == pytest.approx(peak, rel=1e-3)
    moves = [float(train.average_rate(swa_config.train, jnp.int32(s), total))
             for s in (0, 49, 50, 51, 52, 99)]
    assert moves == pytest.approx([1.0, 1.0, 1.0, 1 / 2, 1 / 3, 1 / 50])


@pytest.mark.slow
def test_the_kept_weights_are_the_windows_mean_with_statistics_of_their_own(swa_config,
                                                                           training):
    """Four steps by hand, the window their last three: the kept params are the mean of the
    params after those three, and their batch-norm statistics are not the network's."""
    task = tasks.task_for(NETWORK)
    _, _, step = train.build(swa_config, task)
    state = init_state(swa_config, task, 0)
    targets = tasks.network_targets(NETWORK, training.keypoints)
    step = jax.jit(step)
    after = []
    for n, rate in enumerate([1.0, 1.0, 1 / 2, 1 / 3]):
        batch = batch_of(training.images, targets, np.arange(8 * n, 8 * n + 8), rate=1e-2)
        state, _ = step(state, dict(batch, average_rate=np.float32(rate)))
        after.append(state.params)
    params, statistics = train.kept_weights(state)
    mean = jax.tree_util.tree_map(lambda *p: sum(p) / 3, *after[1:])
    for kept, expected in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mean)):
        np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-7)
    own = jax.tree_util.tree_leaves(statistics)
    network = jax.tree_util.tree_leaves(state.net_state)
    assert any(not np.allclose(a, b) for a, b in zip(own, network))


@pytest.mark.slow
def test_an_interrupted_swa_run_resumes_to_the_uninterrupted_result(swa_config, training,
                                                                    tmp_path):
    counted = Chunks()
    uninterrupted = train_folds(swa_config, training, listener=counted)
    plain = train_folds(config_io.override(swa_config, ["train.swa_epochs=0"]), training)
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(uninterrupted[0].params),
        jax.tree_util.tree_leaves(plain[0].params)))
    stop = Chunks(counted.count * 7 // 8)  # in the last epoch, inside the window
    with pytest.raises(KeyboardInterrupt):
        train_folds(swa_config, training, checkpoint_dir=tmp_path, listener=stop)
    resumed = train_folds(swa_config, training, checkpoint_dir=tmp_path)
    for fold in (0, 1):
        for a, b in zip(jax.tree_util.tree_leaves(resumed[fold].params),
                        jax.tree_util.tree_leaves(uninterrupted[fold].params)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(resumed[fold].net_state),
                        jax.tree_util.tree_leaves(uninterrupted[fold].net_state)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sets, says", [
    (["train.swa_epochs=4"], r"train.swa_epochs=4: expected fewer than train.epochs \(4\)"),
    (["train.epochs=8", "train.early_size=32", "train.early_share=0.75", "train.swa_epochs=3"],
     r"at most the 2 epochs after progressive resizing's early ones"),
    (["train.ema=0.99"], r"train.swa_epochs=2 with train.ema=0.99: expected one average"),
])
def test_settings_swa_cannot_take_are_refused_in_one_line(swa_config, sets, says):
    with pytest.raises(KitError, match=says) as refused:
        config_io.override(swa_config, sets)
    assert "\n" not in str(refused.value)
