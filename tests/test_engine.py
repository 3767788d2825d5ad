"""The training engine: folds trained together equal folds trained alone, an interrupted
group (Ctrl-C or SIGTERM) resumes to exactly the uninterrupted result, held-out rows never
choose the weights of `select=last`, memory splits folds into groups; the loop's rules
(chunk sizes, two chunks in flight, when a checkpoint is due, held signals) one by one."""
from __future__ import annotations

import os
import signal

import jax
import numpy as np
import optax
import pytest

from kit import config as config_io
from kit.config import schema
from kit.core.errors import KitError
from kit.model import tasks
from kit.runs import predict
from kit.runs.folds import assign_folds, fold_rows
from kit.training import checkpoints, interrupts, loop, programs, train
from tests.helpers import NETWORK, small_config, train_folds


@pytest.fixture(scope="module")
def small(quick_config):
    return small_config(quick_config)


class AtChunk(loop.Listener):
    """Does `action` when the group's `chunk`-th chunk of steps has finished."""

    def __init__(self, chunk: int, action):
        self.chunk, self.action, self.chunks = chunk, action, 0

    def progress(self, network, fold_steps):
        self.chunks += 1
        if self.chunks == self.chunk:
            self.action()


def assert_same(a, b, config=None, training=None, pixels=None):
    """Equal results: bit for bit (pixels None), or equal predictions within `pixels`.

    Weights themselves are no measure across programs: Adam scales a parameter's float-noise
    gradient (a bias before batch norm has none in exact arithmetic) up to a full step."""
    assert sorted(a) == sorted(b)
    for fold in a:
        if pixels is None:
            for x, y in zip(jax_leaves(a[fold].params), jax_leaves(b[fold].params)):
                np.testing.assert_array_equal(x, y)
            assert a[fold].history == [dict(h, seconds=a_h["seconds"]) for h, a_h in
                                       zip(b[fold].history, a[fold].history)]
            continue
        for key in ("train_rmse", "val_rmse"):
            assert [h[key] for h in a[fold].history] == pytest.approx(
                [h[key] for h in b[fold].history], rel=1e-4)
        task = tasks.task_for(NETWORK)
        predicted = [predict.predict_images(config, task, [predict.FoldModel(r.params, r.net_state)],
                                       training.images[:16]) for r in (a[fold], b[fold])]
        np.testing.assert_allclose(predicted[0], predicted[1], atol=pixels)


def jax_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def folds_alone(small, training):
    """Each fold trained in a group of its own."""
    return train_folds(config_io.override(small, ["engine.fold_group=1"]), training)


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_folds_trained_together_equal_each_fold_trained_alone(small, training, batching,
                                                             folds_alone):
    if batching == "vmap" and not programs.can_batch_folds():
        pytest.skip(f"jax {jax.__version__} cannot batch folds (see programs.can_batch_folds)")
    config = config_io.override(small, [f"engine.fold_batching={batching}"])
    together = train_folds(config, training)
    assert sorted(together) == [0, 1]
    assert_same(together, folds_alone, config, training, pixels=1e-3)
    # Different rows and keys: the folds really are different trainings.
    assert together[0].history[0]["val_rmse"] != together[1].history[0]["val_rmse"]


@pytest.mark.slow
def test_a_group_interrupted_mid_epoch_resumes_to_the_uninterrupted_result(small, training,
                                                                          tmp_path):
    uninterrupted = train_folds(small, training)

    def stop():
        raise KeyboardInterrupt

    # The fourth chunk: epoch 2, a step in (another chunk may be on its way).
    with pytest.raises(KeyboardInterrupt):
        train_folds(small, training, checkpoint_dir=tmp_path, listener=AtChunk(4, stop))
    saved = checkpoints.peek_progress(tmp_path / "fold-0.npz")
    assert saved.epoch == 1 and 1 <= saved.step < 3
    assert set(saved.sums) == {"loss", "squared_error", "count"}
    resumed = train_folds(small, training, checkpoint_dir=tmp_path)
    assert_same(resumed, uninterrupted)


@pytest.mark.slow
def test_ctrl_c_is_held_until_a_checkpoint_then_stops_and_resumes_exactly(small, training,
                                                                         tmp_path):
    import os
    import signal

    uninterrupted = train_folds(small, training)
    press_ctrl_c = AtChunk(4, lambda: os.kill(os.getpid(), signal.SIGINT))  # mid-epoch
    # A shell's background job (`make test &`, nohup) starts with SIGINT ignored; the
    # terminal's handler is what a user pressing Ctrl-C has, so the test installs it.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_folds(small, training, checkpoint_dir=tmp_path, listener=press_ctrl_c)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler restored"
    finally:
        signal.signal(signal.SIGINT, inherited)
    saved = checkpoints.peek_progress(tmp_path / "fold-1.npz")
    assert saved.epoch == 1 and 1 <= saved.step < 3, "stopped mid-epoch, at a checkpoint"
    assert_same(train_folds(small, training, checkpoint_dir=tmp_path), uninterrupted)


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_said_and_its_fold_starts_again(small, training, tmp_path):
    uninterrupted = train_folds(small, training)

    class StopAfterTheFirstEpoch(loop.Listener):
        def epoch(self, network, reports):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_folds(small, training, checkpoint_dir=tmp_path, listener=StopAfterTheFirstEpoch())
    (tmp_path / "fold-1.npz").write_bytes(b"PK\x03\x04 not a zip any more")

    class Notes(loop.Listener):
        def __init__(self):
            self.said = []

        def note(self, text):
            self.said.append(text)

    listener = Notes()
    resumed = train_folds(small, training, checkpoint_dir=tmp_path, listener=listener)
    assert len(listener.said) == 1 and "fold-1.npz: corrupt checkpoint" in listener.said[0]
    assert_same(resumed, uninterrupted)


@pytest.mark.slow
def test_select_last_never_lets_held_out_rows_choose_or_stop(small, training):
    config = config_io.override(small, ["train.select=last", "train.patience=1",
                                        "train.epochs=3"])
    honest = train_folds(config, training, folds=(0,))
    assignment = assign_folds(config, training)
    _, val_rows = fold_rows(assignment, NETWORK, 0)
    targets = tasks.network_targets(NETWORK, training.keypoints)
    scrambled = targets.copy()
    scrambled[val_rows] = np.random.default_rng(1).uniform(0, 95, scrambled[val_rows].shape)
    blind = train_folds(config, training, folds=(0,), targets=scrambled)
    for x, y in zip(jax_leaves(honest[0].params), jax_leaves(blind[0].params)):
        np.testing.assert_array_equal(x, y)
    assert len(blind[0].history) == 3 and blind[0].best_epoch == 3
    # The same change does move what `select=best` keeps: the test above can fail.
    best = config_io.override(config, ["train.select=best"])
    chosen = train_folds(best, training, folds=(0,))
    fooled = train_folds(best, training, folds=(0,), targets=scrambled)
    assert [h["val_rmse"] for h in chosen[0].history] != [h["val_rmse"]
                                                         for h in fooled[0].history]


@pytest.mark.slow
def test_validate_every_scores_only_its_epochs_and_changes_no_weight(small, training,
                                                                      tmp_path):
    """Every 2nd epoch of 3 and the last are scored, with the values that scoring every
    epoch gives; the weights are the same; a run stopped after an unscored epoch resumes to
    the uninterrupted result."""
    every = config_io.override(small, ["train.select=last", "train.epochs=3"])
    sparse = config_io.override(every, ["train.validate_every=2"])
    assert [train.is_validated(sparse.train, epoch) for epoch in range(3)] == [False, True,
                                                                                True]
    full = train_folds(every, training, folds=(0,))
    few = train_folds(sparse, training, folds=(0,))
    for x, y in zip(jax_leaves(full[0].params), jax_leaves(few[0].params)):
        np.testing.assert_array_equal(x, y)
    assert full[0].history[0]["val_rmse"] is not None
    assert [h["val_rmse"] for h in few[0].history] == [None] + [
        h["val_rmse"] for h in full[0].history[1:]]
    assert (few[0].best_epoch, few[0].best_val_rmse) == (3, full[0].best_val_rmse)

    class StopAfterTheFirstEpoch(loop.Listener):
        def epoch(self, network, reports):
            assert [r.val_rmse for r in reports] == [None]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_folds(sparse, training, folds=(0,), checkpoint_dir=tmp_path,
                    listener=StopAfterTheFirstEpoch())
    assert checkpoints.peek_progress(tmp_path / "fold-0.npz").epoch == 1
    assert_same(train_folds(sparse, training, folds=(0,), checkpoint_dir=tmp_path), few)


@pytest.mark.slow
def test_folds_that_do_not_fit_in_memory_train_in_groups(small, training, monkeypatch):
    together = train_folds(small, training)
    monkeypatch.setenv("KIT_DEVICE_MEMORY", "1000")

    class Notes(loop.Listener):
        def __init__(self):
            self.said, self.groups = [], []

        def note(self, text):
            self.said.append(text)

        def group_started(self, network, folds, epoch, epochs):
            self.groups.append(folds)

    listener = Notes()
    grouped = train_folds(small, training, listener=listener)
    assert listener.groups == [[0], [1]]
    assert "training them in groups of 1" in listener.said[0]
    assert_same(grouped, together, small, training, pixels=1e-3)


@pytest.mark.parametrize("total", [1, 7, 100, 1013])
def test_the_schedule_is_optaxs_one_cycle_for_any_fold_length(total):
    config = config_io.preset("default").train
    reference = optax.cosine_onecycle_schedule(
        transition_steps=total, peak_value=config.learning_rate, pct_start=0.25,
        div_factor=20.0, final_div_factor=200.0)
    for step in range(total + 3):
        assert float(train.learning_rate(config, step, total)) == pytest.approx(
            float(reference(step)), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_update_is_optaxs(optimizer):
    """make_optimizer's direction, descended at the schedule's rate: optax.adamw, or sgd with
    decayed weights, for the same gradients."""
    config = config_io.override(config_io.preset("default"),
                                [f"train.optimizer={optimizer}"]).train
    rate = 0.003
    reference = (optax.adamw(rate, weight_decay=config.weight_decay) if optimizer == "adamw"
                 else optax.chain(optax.add_decayed_weights(config.weight_decay),
                                  optax.sgd(rate)))
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    mine, theirs = params, params
    direction = train.make_optimizer(config)
    mine_state, theirs_state = direction.init(mine), reference.init(theirs)
    for _ in range(3):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        step, mine_state = direction.update(grads, mine_state, mine)
        mine = train.apply_update(mine, step, rate)
        updates, theirs_state = reference.update(grads, theirs_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
    for key in params:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-6, atol=1e-7)


def test_batches_split_over_the_devices_that_divide_them():
    import jax

    devices = jax.local_devices()
    assert programs.Placement.for_batch(64).devices == len(devices)
    assert programs.Placement.for_batch(7, devices * 2).devices in (1, 7)
    assert programs.Placement.for_batch(6, devices[:1] * 4).devices == 3


def test_simulated_cpu_devices_run_one_program_at_a_time():
    """Queued all-reduce programs on XLA:CPU's simulated devices can deadlock (XLA then ends
    the process): with more than one CPU device each dispatch is awaited."""
    import jax

    placement = programs.Placement.for_batch(8)
    assert placement.blocking == (placement.devices > 1 and jax.default_backend() == "cpu")
    single = programs.Placement.for_batch(8, jax.local_devices()[:1])
    assert not single.blocking


@pytest.mark.slow
def test_with_ema_a_fold_keeps_the_moving_average_and_resumes_to_it_exactly(small, training,
                                                                           tmp_path):
    config = config_io.override(small, ["train.ema=0.9", "train.select=last"])
    averaged = train_folds(config, training)
    last = train_folds(config_io.override(config, ["train.ema=0"]), training)
    # Same steps, same last weights: only keeping the average tells the two apart.
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax_leaves(averaged[0].params), jax_leaves(last[0].params)))
    with pytest.raises(KeyboardInterrupt):
        train_folds(config, training, checkpoint_dir=tmp_path,
                    listener=AtChunk(4, lambda: (_ for _ in ()).throw(KeyboardInterrupt)))
    assert_same(train_folds(config, training, checkpoint_dir=tmp_path), averaged)


def test_the_step_moves_the_average_toward_the_new_weights():
    import jax

    state = {"w": np.zeros(3, np.float32)}
    params = {"w": np.ones(3, np.float32)}
    # The ramp: the first step keeps 1/10 of the old average whatever the decay.
    first = train.update_average(state, params, 0.999, np.int32(0))
    np.testing.assert_allclose(first["w"], 0.9, rtol=1e-6)
    # Later the decay rules: 1 - 0.99 of the way.
    late = train.update_average(state, params, 0.99, np.int32(10_000))
    np.testing.assert_allclose(late["w"], 0.01, rtol=1e-4)
    assert jax.tree_util.tree_structure(late) == jax.tree_util.tree_structure(state)


def test_train_seed_draws_another_training_on_the_same_folds(small, training, folds_alone):
    other = config_io.override(small, ["train.seed=7"])
    assert assign_folds(other, training) == assign_folds(small, training)
    b = train_folds(other, training, folds=(0,))
    assert folds_alone[0].history[0]["train_rmse"] != b[0].history[0]["train_rmse"]
    assert train.epoch_order(train.training_seeds(small), 0, 0, 40, 8).tolist() != \
        train.epoch_order(train.training_seeds(other), 0, 0, 40, 8).tolist()


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_that_chunk_and_resumes_exactly(small, training, tmp_path):
    """No checkpoint falls due (an hour apart): the one on disk is the one SIGTERM made."""
    config = config_io.override(small, ["engine.checkpoint_seconds=3600"])
    uninterrupted = train_folds(config, training)
    terminate = AtChunk(4, lambda: os.kill(os.getpid(), signal.SIGTERM))  # epoch 2, mid-way
    with pytest.raises(interrupts.Terminated):
        train_folds(config, training, checkpoint_dir=tmp_path, listener=terminate)
    saved = checkpoints.peek_progress(tmp_path / "fold-0.npz")
    assert saved.epoch == 1 and 1 <= saved.step < 3, "stopped mid-epoch, at a checkpoint"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert_same(train_folds(config, training, checkpoint_dir=tmp_path), uninterrupted)


@pytest.mark.slow
def test_a_finished_group_is_checkpointed_so_a_stop_before_its_models_are_written_retrains_nothing(
        small, training, tmp_path):
    """A SIGTERM (or kill -9) after the last epoch, while the run writes the folds' models:
    the checkpoints stand finished, so the rerun writes the same models and trains no step."""
    config = config_io.override(small, ["engine.checkpoint_seconds=3600"])
    first = train_folds(config, training, checkpoint_dir=tmp_path)
    for fold in (0, 1):
        saved = checkpoints.peek_progress(tmp_path / f"fold-{fold}.npz")
        assert saved.epoch == config.train.epochs and saved.step == 0

    class Steps(loop.Listener):
        steps = 0

        def progress(self, network, fold_steps):
            Steps.steps += fold_steps

    assert_same(train_folds(config, training, checkpoint_dir=tmp_path, listener=Steps()), first)
    assert Steps.steps == 0


# ---------------------------------------------------------------- the loop's rules


def test_a_chunk_is_sized_to_take_chunk_seconds_within_one_step_and_an_epoch():
    assert loop.chunk_size(4, 0.5, 1.0, 100) == 8  # 8 steps a second
    assert loop.chunk_size(4, 0.5, 0.01, 100) == 1  # never less than a step
    assert loop.chunk_size(4, 0.5, 60.0, 100) == 100  # never more than an epoch
    assert loop.chunk_size(3, 0.0, 1.0, 50) == 50  # an instant chunk: no division by 0


def test_chunks_cover_every_fold_step_once_and_checkpoints_stand_between_them(small,
                                                                             training,
                                                                             tmp_path):
    """Chunks of one step (chunk_seconds tiny), a checkpoint after each: every step of every
    fold is trained once, and each checkpoint stands at a step of the epoch in hand."""
    stats = loop.Stats()
    seen = []

    class Steps(loop.Listener):
        def progress(self, network, fold_steps):
            seen.append(fold_steps)

    train_folds(small, training, checkpoint_dir=tmp_path, listener=Steps(), stats=stats)
    assignment = assign_folds(small, training)
    steps = [train.steps_per_epoch(len(fold_rows(assignment, NETWORK, fold)[0]), 8)
             for fold in (0, 1)]
    assert sum(seen) == sum(steps) * small.train.epochs
    assert stats.images == sum(seen) * small.train.batch_size
    assert set(seen) <= {1, 2}, "a chunk of one step: one step of each fold that has it"


def test_fold_step_calls_leave_out_the_steps_that_do_not_count():
    valid = np.array([[True, True, False], [True, False, False]])
    assert programs.fold_step_calls(0, 3, valid) == [(0, 0), (1, 0), (0, 1)]
    assert programs.fold_step_calls(1, 2, valid) == [(0, 1)]
    assert programs.FOLD_BATCHINGS["vmap"].calls(1, 3, valid) == [(1, 3)]


def test_the_fold_batchings_are_the_names_the_config_allows():
    assert ("auto", *programs.FOLD_BATCHINGS) == schema.FOLD_BATCHINGS


def test_a_checkpoint_is_due_after_checkpoint_seconds_or_when_a_signal_waits():
    assert not loop.checkpoint_due(59.9, 60.0, interrupted=False)
    assert loop.checkpoint_due(60.0, 60.0, interrupted=False)
    assert loop.checkpoint_due(0.0, 60.0, interrupted=True)
    assert loop.checkpoint_due(0.0, 0.0, interrupted=False)  # 0: after every chunk


def test_an_xla_runtime_error_in_training_is_one_line_and_keeps_the_checkpoint(small, training,
                                                                              tmp_path):
    """A genuine XLA runtime error (a host callback failing inside a compiled program) while
    the second epoch trains: one line naming the folds, the epoch and the devices; the
    checkpoint taken before it stays."""
    def fail(x):
        raise RuntimeError("the device is gone")

    failing = jax.jit(lambda x: jax.pure_callback(
        fail, jax.ShapeDtypeStruct((), np.float32), x))
    with pytest.raises(KitError) as raised:
        train_folds(small, training, checkpoint_dir=tmp_path,
                    listener=AtChunk(4, lambda: failing(np.float32(1)).block_until_ready()))
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(f"{NETWORK} network, folds 1, 2, epoch 2, on ")
    assert "INTERNAL" in line and "JAX_PLATFORMS=cpu" in line
    assert "the last checkpoint is kept" in line
    assert checkpoints.peek_progress(tmp_path / "fold-0.npz").epoch == 1


@pytest.mark.parametrize("said, remedy", [
    ("INTERNAL: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR", "a cuDNN this machine lacks"),
    ("INTERNAL: CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the driver and the installed jax's CUDA"),
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB",
     "lower --set engine.fold_group (now auto) or train.batch_size (now 8)"),
    ("INVALID_ARGUMENT: Executable expected shape", "--debug"),
])
def test_a_runtime_error_line_names_where_the_devices_and_what_to_try(small, said, remedy):
    placement = programs.Placement.for_batch(small.train.batch_size)
    error = jax.errors.JaxRuntimeError(f"{said}\n\tat some/xla/file.cc:12")
    line = loop.failure_line(error, "15 network, fold 3, compiling", placement, small)
    device = jax.local_devices()[0]
    assert line.startswith(f"15 network, fold 3, compiling, on {placement.devices} "
                           f"{device.platform} device")
    assert said in line and remedy in line and "\n" not in line and "file.cc" not in line


def test_out_of_memory_is_told_from_other_runtime_errors():
    error = jax.errors.JaxRuntimeError
    assert loop.is_out_of_memory(error("RESOURCE_EXHAUSTED: while allocating 2.0GiB"))
    assert loop.is_out_of_memory(error("INTERNAL: Out of memory allocating 123 bytes"))
    assert not loop.is_out_of_memory(error("INVALID_ARGUMENT: shapes differ"))


@pytest.mark.parametrize("signum, stop", [(signal.SIGINT, KeyboardInterrupt),
                                          (signal.SIGTERM, interrupts.Terminated)])
def test_a_signal_is_held_until_checked_and_a_second_stops_at_once(signum, stop):
    before = signal.getsignal(signum)
    with interrupts.Deferred() as held:
        held.check()  # nothing yet
        os.kill(os.getpid(), signum)  # a real signal: its handler runs before the next line
        assert held.requested and not held.forced
        with pytest.raises(stop) as raised:
            held.check()
        with pytest.raises(stop):
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler raises at the next bytecode
                pass
        assert held.forced
    assert isinstance(raised.value, KeyboardInterrupt)
    assert interrupts.exit_status(raised.value) == 128 + signum
    assert signal.getsignal(signum) is before


def test_sigterm_raises_as_ctrl_c_does_while_asked_to():
    with pytest.raises(interrupts.Terminated), interrupts.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_folds_are_batched_only_where_jax_can_batch_them():
    # jax 0.7.2 (Kaggle's image) cannot vmap a convolution's weight gradient over placed
    # arrays: there "auto" trains folds one at a time and "vmap" is refused in one line.
    if programs.can_batch_folds():
        assert programs.resolve_batching("auto", "gpu") == "vmap"
        assert programs.resolve_batching("vmap", "cpu") == "vmap"
    else:
        assert programs.resolve_batching("auto", "gpu") == "map"
        with pytest.raises(KitError, match=r"engine.fold_batching=vmap: jax .* expected auto"):
            programs.resolve_batching("vmap", "gpu")
    assert programs.resolve_batching("auto", "cpu") == "map"


@pytest.mark.slow
def test_progressive_resizing_steps_at_the_early_size_and_resumes_exactly(small, training,
                                                                          tmp_path):
    """The early epochs' step is the step of the same network at the smaller input size; a
    run stopped in an early epoch resumes to the uninterrupted result, which differs from
    training every epoch at the full size."""
    from tests.helpers import batch_of, init_state

    early = config_io.override(small, ["train.early_size=32", "train.early_share=0.5"])
    at_32 = config_io.override(small, ["model.input_size=32"])
    task = tasks.task_for(NETWORK)
    state = init_state(early, task, 0)
    targets = tasks.network_targets(NETWORK, training.keypoints)
    batch = batch_of(training.images, targets, np.arange(8), 0.01)
    stepped_early = jax.jit(train.early_step(early, task))(state, batch)[0]
    stepped_32 = jax.jit(train.build(at_32, task)[2])(state, batch)[0]
    stepped_48 = jax.jit(train.build(early, task)[2])(state, batch)[0]
    for a, b in zip(jax_leaves(stepped_early.params), jax_leaves(stepped_32.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in
               zip(jax_leaves(stepped_early.params), jax_leaves(stepped_48.params)))
    assert [train.is_early(early.train, epoch) for epoch in range(2)] == [True, False]

    uninterrupted = train_folds(early, training)

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the second chunk: the early epoch, a step in
        train_folds(early, training, checkpoint_dir=tmp_path, listener=AtChunk(2, stop))
    assert checkpoints.peek_progress(tmp_path / "fold-0.npz").epoch == 0
    assert_same(train_folds(early, training, checkpoint_dir=tmp_path), uninterrupted)
    full_size = train_folds(small, training, folds=(0,))
    assert (uninterrupted[0].history[0]["train_rmse"]
            != full_size[0].history[0]["train_rmse"])
