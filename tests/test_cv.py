"""CV of the Haiku networks on tiny synthetic data: the run folder, OOF, report, reload."""
from __future__ import annotations

import json
from dataclasses import replace

import jax
import numpy as np
import pandas as pd
import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.core.keypoints import CORE_COLUMN_INDICES
from kit.data.tables import subset_indices
from kit.model import networks, tasks
from kit.results import report
from kit.runs import cv, files, predict
from kit.runs.folds import assign_folds, fingerprint
from kit.training import checkpoints, loop, train
from tests.helpers import batch_of, init_state, parameter_count


@pytest.fixture(scope="module")
def run_dir(quick_run):
    return quick_run


def test_run_folder_holds_config_models_histories_and_oof(run_dir, quick_config):
    assert config_io.load(run_dir / "config.json") == quick_config
    for subset in ("15", "4"):
        for fold in range(2):
            folder = files.fold_dir(run_dir, subset, fold)
            assert (folder / "model.npz").exists()
            history = json.loads((folder / "history.json").read_text())["history"]
            assert [h["epoch"] for h in history] == [1, 2]
            assert not (folder / checkpoints.CHECKPOINT).exists()
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()


def test_oof_has_one_prediction_per_row_and_value_of_each_subset(run_dir, training):
    oof = files.read_oof(run_dir)
    for subset, width in (("15", 30), ("4", 8)):
        part = oof[oof["subset"] == subset]
        rows = subset_indices(training.keypoints, subset)
        assert sorted(part["row"].unique()) == sorted(rows)
        assert len(part) == len(rows) * width
        assert not part.duplicated(["row", "column"]).any()
        assert set(part["fold"]) == {0, 1}
    truth = training.keypoints[oof["row"], oof["column"]]
    np.testing.assert_allclose(oof["truth"], truth, atol=1e-4)


def test_report_rmse_equals_a_direct_computation_from_oof_csv(run_dir, training):
    written = json.loads((run_dir / "report.json").read_text())
    raw = pd.read_csv(run_dir / "oof.csv")
    error = raw["prediction"] - raw["truth"]
    assert written["overall_rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-9)
    for subset in (15, 4):
        part = raw[raw["subset"] == subset]
        direct = np.sqrt(np.mean((part["prediction"] - part["truth"]) ** 2))
        assert written["subsets"][str(subset)]["rmse"] == pytest.approx(direct, rel=1e-9)
        fold0 = part[part["fold"] == 0]
        assert written["subsets"][str(subset)]["per_fold"]["0"] == pytest.approx(
            np.sqrt(np.mean((fold0["prediction"] - fold0["truth"]) ** 2)), rel=1e-9)
    assert written["leaderboard_estimate"]["rmse"] > 0
    assert f"{written['overall_rmse']:.4f}" in (run_dir / "report.md").read_text()
    is_x = raw["column"] % 2 == 0
    assert written["systematic_offset"]["x"] == pytest.approx(-error[is_x].mean(), rel=1e-9)
    assert f"{written['systematic_offset']['y']:+.2f} px in y" in (
        run_dir / "report.md").read_text()


def test_saved_fold_model_reloads_and_predicts_its_oof_values(run_dir, training, quick_config):
    oof = files.read_oof(run_dir)
    part = oof[(oof["subset"] == "4") & (oof["fold"] == 1)]
    rows = np.sort(part["row"].unique())
    model = predict.load_fold_models(run_dir, "4")[1]
    predicted = predict.predict_images(quick_config, tasks.task_for("4"), [model], training.images[rows])
    expected = np.full((len(rows), 8), np.nan)
    position = {c: i for i, c in enumerate(CORE_COLUMN_INDICES)}
    for _, line in part.iterrows():
        expected[np.searchsorted(rows, line["row"]), position[line["column"]]] = line["prediction"]
    np.testing.assert_allclose(predicted, expected, atol=2e-4)


def test_ensemble_is_the_mean_of_the_fold_models(run_dir, training, quick_config):
    images = training.images[:5]
    fold_models = predict.load_fold_models(run_dir, "15")
    each = [predict.predict_images(quick_config, tasks.task_for("15"), [m], images) for m in fold_models]
    ensemble = predict.predict_run(run_dir, "15", images)
    np.testing.assert_allclose(ensemble, np.mean(each, axis=0), atol=1e-5)
    assert ensemble.shape == (5, 30)


def test_same_config_same_numbers(tmp_path, training, quick_config, run_dir):
    again = cv.run_cv(quick_config, training, tmp_path)
    pd.testing.assert_frame_equal(files.read_oof(again), files.read_oof(run_dir))


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, training, quick_config, run_dir):
    class StopAfterTheFirstEpochOfTheSecondNetwork(loop.Listener):
        def epoch(self, network, reports):
            if (network, reports[0].epoch) == ("4", 1):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cv.run_cv(quick_config, training, tmp_path,
                  listener=StopAfterTheFirstEpochOfTheSecondNetwork())
    run = next(tmp_path.glob("*-quick"))
    assert (files.fold_dir(run, "15", 1) / "oof.npz").exists()
    for fold in (0, 1):
        saved = checkpoints.peek_progress(files.fold_dir(run, "4", fold) / checkpoints.CHECKPOINT)
        assert saved is not None and saved.position == (1, 0) and len(saved.history) == 1
    assert not (run / ".lock").exists(), "an interrupted run must release its lock"
    resumed = cv.run_cv(quick_config, training, tmp_path)
    assert resumed.parent == tmp_path and len(list(tmp_path.glob("*-quick"))) == 1
    pd.testing.assert_frame_equal(files.read_oof(resumed), files.read_oof(run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("head", config_io.HEADS)
def test_the_loss_falls_when_training_on_a_batch(training, quick_config, head):
    config = config_io.override(quick_config, ["augment.affine_prob=0", "augment.flip_prob=0",
                                               "augment.noise_std=0", "augment.brightness=0",
                                               "augment.contrast=0", f"model.head={head}"])
    task = tasks.task_for("15")
    _, _, train_step = train.build(config, task)
    train_step = jax.jit(train_step)
    state = init_state(config, task, 0)
    rows = subset_indices(training.keypoints, "15")[:32]
    batch = batch_of(training.images, training.keypoints, rows, config.train.learning_rate)
    losses = []
    for _ in range(40):
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.slow
def test_seed_preset_is_the_reports_network_and_takes_a_step(training):
    config = config_io.preset("seed")
    assert (config.train.batch_size, config.train.learning_rate) == (32, 0.01)
    net = networks.build(config.model, 30)
    params, _ = net.init(jax.random.PRNGKey(0), np.zeros((1, 96, 96), np.float32), True)
    names = sorted(params)
    assert [n.split("/")[-1] for n in names] == ["conv2_d", "conv2_d_1", "linear", "linear_1"]
    # conv 3x3 1->32, conv 3x3 32->64, dense 24*24*64 -> 500, dense 500 -> 30 (with biases).
    expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (24 * 24 * 64 * 500 + 500) + (500 * 30 + 30)
    assert parameter_count(params) == expected
    task = tasks.task_for("15")
    _, _, train_step = train.build(config, task)
    state = init_state(config, task, 0)
    batch = batch_of(training.images, training.keypoints, np.arange(32), 0.01)
    new_state, metrics = jax.jit(train_step)(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), state.params,
                                     new_state.params)
    assert all(jax.tree_util.tree_leaves(changed))


def test_predicting_a_subset_the_run_lacks_is_a_clear_error(run_dir, training):
    from kit.core.errors import KitError

    config = json.loads((run_dir / "config.json").read_text())
    config["subsets"] = ["4"]
    (run_dir / "config.json").write_text(json.dumps(config))
    try:
        with pytest.raises(KitError, match="no 15-key models"):
            predict.predict_run(run_dir, "15", training.images[:2])
    finally:
        config["subsets"] = ["15", "4"]
        (run_dir / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_shared_trunk_run_gives_both_subsets_oof_and_predictions(tmp_path, training,
                                                                quick_config):
    config = config_io.override(quick_config, ["shared_trunk=1"])
    run_dir = cv.run_cv(config, training, tmp_path)
    assert sorted(p.name for p in (run_dir / "folds").iterdir()) == ["shared-0", "shared-1"]
    oof = files.read_oof(run_dir)
    for subset, width in (("15", 30), ("4", 8)):
        part = oof[oof["subset"] == subset]
        assert len(part) == len(subset_indices(training.keypoints, subset)) * width
    images = training.images[:3]
    both = predict.predict_images(config, tasks.task_for(tasks.SHARED), predict.load_fold_models(run_dir, "shared"),
                             images)
    assert both.shape == (3, 38)
    np.testing.assert_allclose(predict.predict_run(run_dir, "15", images), both[:, :30], atol=1e-5)
    np.testing.assert_allclose(predict.predict_run(run_dir, "4", images), both[:, 30:], atol=1e-5)
    # Faces of the full annotation source get their 4-key values from the 15-key head, as
    # the OOF made them: a choice or blend fitted on that OOF meets the same on the test set.
    full = np.array([True, False, True])
    four = predict.predict_run(run_dir, "4", images, full=full)
    np.testing.assert_allclose(four[full], both[full][:, CORE_COLUMN_INDICES], atol=1e-5)
    np.testing.assert_allclose(four[~full], both[~full, 30:], atol=1e-5)
    oof = oof[oof["subset"] == "4"]
    on_full = oof[oof["row"].isin(subset_indices(training.keypoints, "15"))]
    assert len(on_full) and np.array_equal(
        on_full.sort_values(["row", "column"])["prediction"].to_numpy(),
        files.read_oof(run_dir).query("subset == '15'").merge(
            on_full[["row", "column"]], on=["row", "column"]).sort_values(
            ["row", "column"])["prediction"].to_numpy())
    # The report finds each subset's epochs in the network that answers it: the shared one.
    figures = report.write(run_dir, training, None)
    for subset in ("15", "4"):
        histories = [files.read_history(files.fold_dir(run_dir, "shared", fold))["history"]
                     for fold in range(config.folds)]
        assert figures["subsets"][subset]["best_epochs"] == [
            int(np.argmin([epoch["val_rmse"] for epoch in fold]) + 1) for fold in histories]


def test_a_folds_best_epoch_is_the_lowest_of_its_scored_epochs():
    history = [{"epoch": 1, "val_rmse": None}, {"epoch": 2, "val_rmse": 3.0},
               {"epoch": 3, "val_rmse": float("nan")}, {"epoch": 4, "val_rmse": 2.5},
               {"epoch": 5, "val_rmse": None}, {"epoch": 6, "val_rmse": 2.5}]
    assert files.best_epoch(history) == 4
    assert files.best_epoch([{"epoch": 1, "val_rmse": None}]) is None


def test_shared_targets_keep_each_sources_labels_on_its_own_head(training):
    targets = tasks.network_targets(tasks.SHARED, training.keypoints)
    full = tasks.full_source(training.keypoints)
    assert full.any() and (~full).any()
    np.testing.assert_array_equal(targets[full, :30], training.keypoints[full])
    assert np.isnan(targets[full, 30:]).all()
    assert np.isnan(targets[~full, :30]).all()
    np.testing.assert_array_equal(targets[~full, 30:],
                                  training.keypoints[~full][:, CORE_COLUMN_INDICES])


def test_common_keypoints_teach_both_heads_from_every_row(training):
    common = ("left_eye_center", "nose_tip")
    targets = tasks.network_targets(tasks.SHARED, training.keypoints, common)
    full = tasks.full_source(training.keypoints)
    # Both heads learn the common keypoints from every row...
    np.testing.assert_array_equal(targets[~full][:, [0, 1, 20, 21]],
                                  training.keypoints[~full][:, [0, 1, 20, 21]])
    np.testing.assert_array_equal(targets[full][:, [30, 31, 34, 35]],
                                  training.keypoints[full][:, [0, 1, 20, 21]])
    # ...and the bottom lip, marked differently by each source, stays with its own head.
    assert np.isnan(targets[~full][:, [28, 29]]).all()
    assert np.isnan(targets[full][:, [36, 37]]).all()
    assert np.isnan(targets[~full][:, [2, 3]]).all()  # right eye is not common here


def test_flip_relabels_the_shared_heads_separately():
    task = tasks.task_for(tasks.SHARED)
    flip = np.array(task.flip)
    assert sorted(flip) == list(range(38))
    assert task.columns[flip[0]] == "right_eye_center_x" and flip[30] == 32
    assert (flip[30:] >= 30).all() and (flip[:30] < 30).all()


@pytest.mark.parametrize("views", [train.tta_views(shift=3.0), train.tta_views(zoom=0.06),
                                   train.tta_views(rotate=6.0)])
def test_test_time_views_and_flips_are_mapped_back(views):
    """A network that reports the centroid of a bright blob sees the blob move under every
    TTA view; mapped back, every view must land on the blob's centre."""
    import haiku as hk
    import jax.numpy as jnp

    def centroid(images, is_training):
        weights = images / jnp.maximum(images.sum(axis=(1, 2), keepdims=True), 1e-6)
        grid = jnp.arange(96.0)
        x = (weights * grid[None, None, :]).sum((1, 2))
        y = (weights * grid[None, :, None]).sum((1, 2))
        return networks.to_unit(jnp.tile(jnp.stack([x, y], axis=1), (1, 15)))

    net = hk.transform_with_state(centroid)
    params, state = net.init(jax.random.PRNGKey(0), np.zeros((1, 96, 96), np.float32), False)
    centres = np.array([[30.0, 40.0], [61.0, 70.0]])
    ys, xs = np.mgrid[0:96, 0:96]
    images = np.stack([255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.5**2))
                       for x, y in centres]).round().astype(np.uint8)
    task = tasks.task_for("15")
    expected = np.tile(centres, (1, 15))
    predict = train.make_predict(net, task, flip_tta=True, views=views)
    np.testing.assert_allclose(predict(params, state, images), expected, atol=0.05)
    # Each view alone, mapped back, lands on the centre too: the mean cannot hide two errors
    # that cancel (a view mapped back through its warp instead of the inverse would not).
    for view in views[1:]:
        alone = train.make_predict(net, task, flip_tta=False, views=(view,))
        np.testing.assert_allclose(alone(params, state, images), expected, atol=0.05)
    # A mirror about 48.5 maps the flipped copy's x to x + 2: the mean moves by 1 in x alone.
    shifted = train.make_predict(net, task, flip_tta=True, views=views, mirror_x=48.5)
    np.testing.assert_allclose(shifted(params, state, images),
                               expected + np.tile([1.0, 0.0], 15), atol=0.05)


def test_reshape_max_pool_equals_haikus_max_pool():
    import haiku as hk

    x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype(np.float32)
    expected = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    np.testing.assert_array_equal(networks.max_pool_2x2(x), expected)


def test_a_row_has_one_fold_whatever_the_network(training, quick_config):
    # Runs of one seed must share folds for their OOF predictions to be blended: the 15-key
    # and 4-key networks of `separate`, and a shared trunk, all put a row in the same fold.
    separate = assign_folds(quick_config, training)
    shared = assign_folds(config_io.override(quick_config, ["shared_trunk=1"]), training)
    fold = {}
    for assignment in (separate, shared):
        for entry in assignment["networks"].values():
            for row, k in zip(entry["rows"], entry["fold"]):
                assert fold.setdefault(row, k) == k
    assert set(fold.values()) == {0, 1}
    assert separate["fingerprint"] == shared["fingerprint"]


def test_the_fingerprint_changes_with_the_data(training):
    moved = training.keypoints.copy()
    moved[0, 0] += 1.0
    assert fingerprint(replace(training, keypoints=moved)) != fingerprint(training)


@pytest.mark.parametrize("train_settings, said", [
    ({"select": "last"}, "each fold's last epoch. Held-out rows score the folds but choose"),
    ({"select": "last", "ema": 0.99},
     "each fold's last epoch (as the moving average of its weights, decay 0.99)."),
    ({"select": "best"}, "each fold's epoch with the lowest validation RMSE, found on the same"),
])
def test_the_report_says_how_each_folds_weights_were_kept(run_dir, train_settings, said):
    figures = json.loads((run_dir / "report.json").read_text())
    figures["config"]["train"].update(train_settings)
    assert said in report.markdown(figures)


@pytest.mark.slow
def test_a_run_that_diverges_stops_in_one_line_instead_of_writing_nan(tmp_path, training,
                                                                       learning_config):
    config = config_io.override(learning_config, ["train.learning_rate=1000"])
    with pytest.raises(KitError) as caught:
        cv.run_cv(config, training, tmp_path / "cv")
    message = str(caught.value)
    assert "\n" not in message and "training diverged at epoch 1" in message
    assert "not finite); lower train.learning_rate (now 1000.0)" in message
    assert not list((tmp_path / "cv").glob("*/oof.csv"))
