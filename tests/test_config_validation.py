"""Settings are checked when the config is built, before any data is read or anything compiles:
a field outside its rule is one line naming the field, the value and what is allowed."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from kit import config as config_io
from kit.config import AugmentConfig, Config, ModelConfig, TrainConfig
from kit.core.errors import KitError
from tests.conftest import refusal

ROOT = Path(__file__).resolve().parent.parent


# What a new user might type to `cv --set`: (the assignment, the field and value the message
# must start with). Floats show as Python prints them once parsed (2 -> 2.0).
NONSENSE = [
    ("train.epochs=0", "train.epochs=0"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.eval_batch_size=-8", "train.eval_batch_size=-8"),
    ("train.patience=0", "train.patience=0"),
    ("train.learning_rate=-5", "train.learning_rate=-5.0"),
    ("train.learning_rate=0", "train.learning_rate=0.0"),
    ("train.learning_rate=nan", "train.learning_rate=nan"),
    ("train.learning_rate=inf", "train.learning_rate=inf"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.optimizer=lion", "train.optimizer='lion'"),
    ("train.schedule=cosine", "train.schedule='cosine'"),
    ("train.loss=huber", "train.loss='huber'"),
    ("train.select=worst", "train.select='worst'"),
    ("augment.flip_prob=2", "augment.flip_prob=2.0"),
    ("augment.affine_prob=-0.5", "augment.affine_prob=-0.5"),
    ("augment.rotate_degrees=720", "augment.rotate_degrees=720.0"),
    ("augment.scale=1", "augment.scale=1.0"),
    ("augment.shift_pixels=60", "augment.shift_pixels=60.0"),
    ("augment.brightness=3", "augment.brightness=3.0"),
    ("augment.contrast=1", "augment.contrast=1.0"),
    ("augment.noise_std=-1", "augment.noise_std=-1.0"),
    ("augment.fill=255", "augment.fill=255.0"),
    ("augment.max_redraws=-1", "augment.max_redraws=-1"),
    ("model.dropout=1.5", "model.dropout=1.5"),
    ("model.dropout=1", "model.dropout=1.0"),
    ("model.kind=vgg", "model.kind='vgg'"),
    ("model.head=heatmaps", "model.head='heatmaps'"),
    ("model.widths=", "model.widths=()"),
    ("model.widths=32,0,128", "model.widths=(32, 0, 128)"),
    ("model.widths=8,8,8,8,8,8", "model.widths=(8, 8, 8, 8, 8, 8)"),
    ("model.stem_width=0", "model.stem_width=0"),
    ("model.blocks_per_stage=-1", "model.blocks_per_stage=-1"),
    ("model.deep_blocks=-1", "model.deep_blocks=-1"),
    ("model.dense=0", "model.dense=0"),
    ("model.head_width=0", "model.head_width=0"),
    ("model.input_size=8", "model.input_size=8"),
    ("model.input_size=512", "model.input_size=512"),
    ("model.input_size=50", "model.input_size=50"),  # the resnet halves it 4 times
    ("model.head_stride=3", "model.head_stride=3"),
    ("model.head_stride=2", "model.head_stride=2"),  # finer than any stage
    ("model.head_stride=32", "model.head_stride=32"),  # coarser than the deepest stage
    ("model.kind=seed", "model.head='soft_argmax'"),  # the seed net has no heatmaps
    ("folds=1", "folds=1"),
    ("folds=-5", "folds=-5"),
    ("seed=-3", "seed=-3"),
    ("seed=99999999999", "seed=99999999999"),  # scikit-learn's splitters take < 2**32
    ("group_similarity=0", "group_similarity=0.0"),
    ("group_similarity=1.5", "group_similarity=1.5"),
    ("subsets=7", "subsets=('7',)"),
    ("subsets=15,15", "subsets=('15', '15')"),
    ("subsets=", "subsets=()"),
    ("common_keypoints=chin", "common_keypoints=('chin',)"),
    ("common_keypoints=mouth_left_corner", "common_keypoints=('mouth_left_corner',)"),
    ("tta_shift=-1", "tta_shift=-1.0"),
    ("tta_shift=48", "tta_shift=48.0"),
    ("engine.fold_batching=pmap", "engine.fold_batching='pmap'"),
    ("engine.fold_group=-1", "engine.fold_group=-1"),
    ("engine.chunk_seconds=0", "engine.chunk_seconds=0.0"),
    ("engine.checkpoint_seconds=-1", "engine.checkpoint_seconds=-1.0"),
    ("engine.checkpoint_seconds=nan", "engine.checkpoint_seconds=nan"),
    ("preset=", "preset=''"),
    ("teacher=../elsewhere", "teacher='../elsewhere'"),  # a run id of the same runs folder
    ("flagged_labels=fix", "flagged_labels='fix'"),
    ("flagged_labels=drop", "flagged_labels='drop'"),  # without a teacher
    ("pseudo_labels=1", "pseudo_labels=True"),  # without a teacher
    ("pseudo_labels=maybe", "pseudo_labels='maybe'"),
    ("fill_labels=1", "fill_labels=True"),  # without a teacher
    ("preset=../../elsewhere", "preset='../../elsewhere'"),
    # Progressive resizing (default: 96-px input, 4 halvings, maps at stride 8, 48 epochs,
    # the first 0.625 of them at 80 pixels); each pair's other half set to nothing.
    ("train.early_share=0", "train.early_size=80 with train.early_share=0.0"),  # half a pair
    ("train.early_size=0", "train.early_size=0 with train.early_share=0.625"),
    ("train.early_size=-16", "train.early_size=-16"),
    ("train.early_share=1", "train.early_share=1.0"),  # no epoch left at the full size
    ("train.early_share=-0.5", "train.early_share=-0.5"),
    ("train.validate_every=0", "train.validate_every=0"),
    # default scores every 6th epoch, which only select=last allows.
    ("train.select=best", "train.validate_every=6 with train.select='best'"),
]

# Settings that are refused only together: (assignments, the message's start).
EARLY_SIZE_PAIRS = [
    (["train.early_size=96"], "train.early_size=96"),  # not smaller
    (["train.early_size=8"], "train.early_size=8"),  # below 16
    (["train.early_size=40"], "train.early_size=40"),  # not a multiple of 16
    (["model.head=dense"], "train.early_size=80"),  # a dense head fits one size
    # 16 pixels at stride 16 would leave one heatmap cell.
    (["model.head_stride=16", "train.early_size=16"], "model.head_stride=16"),
]


@pytest.mark.parametrize("assignment, shown", NONSENSE, ids=[case[0] for case in NONSENSE])
def test_nonsense_settings_are_refused_naming_field_value_and_what_is_allowed(assignment,
                                                                              shown):
    message = refusal(lambda: config_io.override(config_io.preset("default"), [assignment]))
    assert message.startswith(f"{shown}: expected ")


@pytest.mark.parametrize("assignments, shown", EARLY_SIZE_PAIRS,
                         ids=[" ".join(case[0]) for case in EARLY_SIZE_PAIRS])
def test_progressive_resizing_is_refused_where_the_network_cannot_take_the_size(assignments,
                                                                               shown):
    message = refusal(lambda: config_io.override(config_io.preset("default"), assignments))
    assert message.startswith(f"{shown}") and ": expected " in message


def test_progressive_resizing_keeps_its_share_of_any_epoch_count():
    """A share, not a count: `--epochs` shortens the early stretch with the rest, and at
    least the last epoch trains at the full size."""
    from kit.training import train

    default = config_io.preset("default")
    assert train.early_epochs(default.train) == 30
    for epochs, early in ((1, 0), (2, 1), (3, 1), (8, 5), (100, 62)):
        config = config_io.override(default, [f"train.epochs={epochs}"])
        assert train.early_epochs(config.train) == early
        assert [train.is_early(config.train, e) for e in range(epochs)] == \
            [True] * early + [False] * (epochs - early)
    none = config_io.override(default, ["train.early_size=0", "train.early_share=0"])
    assert train.early_epochs(none.train) == 0


def cli_args(**flags) -> argparse.Namespace:
    values = {"preset": "default", "set": None, "folds": None, "seed": None, "epochs": None}
    return argparse.Namespace(**{**values, **flags})


@pytest.mark.parametrize("flags, shown", [
    ({"epochs": 0}, "train.epochs=0: expected an integer >= 1"),
    ({"epochs": -2}, "train.epochs=-2: expected an integer >= 1"),
    ({"seed": -3}, "seed=-3: expected an integer in [0, 4294967295]"),
    ({"folds": 1}, "folds=1: expected an integer >= 2"),
    ({"folds": 0}, "folds=0: expected an integer >= 2"),
    ({"set": ["train.optimizer=lion"]}, "train.optimizer='lion': expected one of adamw, sgd"),
])
def test_command_line_flags_are_checked_like_set(flags, shown):
    from kit.cli import main as cli

    assert refusal(lambda: cli.make_config(cli_args(**flags))) == shown


def test_the_cli_refuses_before_reading_any_data():
    # The data folder does not exist: reaching it would be another error, not this one.
    command = [sys.executable, "-m", "kit", "--data", "/nonexistent", "cv", "--preset",
               "default", "--epochs", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "train.epochs=0" in lines[0] and "expected an integer >= 1" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("build, shown", [
    (lambda: TrainConfig(epochs=True), "train.epochs=True"),  # a bool is no count
    (lambda: TrainConfig(batch_size=32.0), "train.batch_size=32.0"),
    (lambda: TrainConfig(learning_rate="0.1"), "train.learning_rate='0.1'"),
    (lambda: TrainConfig(learning_rate=float("nan")), "train.learning_rate=nan"),
    (lambda: TrainConfig(weight_decay=float("inf")), "train.weight_decay=inf"),
    (lambda: AugmentConfig(flip_prob=None), "augment.flip_prob=None"),
    (lambda: ModelConfig(widths=(32, 64.0)), "model.widths=(32, 64.0)"),
    (lambda: ModelConfig(widths=[32, 64]), "model.widths=[32, 64]"),  # unhashable
    (lambda: ModelConfig(widths=()), "model.widths=()"),
    (lambda: Config(subsets="15"), "subsets='15'"),  # a string is no tuple of names
    (lambda: Config(grouped_folds=1), "grouped_folds=1"),
    (lambda: Config(seed=1.5), "seed=1.5"),
    (lambda: Config(preset=""), "preset=''"),
    (lambda: Config(model=TrainConfig()), "model=TrainConfig("),
])
def test_wrong_types_are_refused_when_built_directly(build, shown):
    assert refusal(build).startswith(shown)


def test_replace_is_checked_too():
    config = config_io.preset("default")
    message = refusal(lambda: dataclasses.replace(config.train, epochs=0))
    assert message == "train.epochs=0: expected an integer >= 1"
    message = refusal(lambda: dataclasses.replace(config, folds=1))
    assert message == "folds=1: expected an integer >= 2"


def test_whole_numbers_pass_for_float_fields():
    # JSON and Python both write 1 for 1.0; a learning rate of 1 is odd, not nonsense.
    assert TrainConfig(learning_rate=1).learning_rate == 1
    assert config_io.override(config_io.preset("default"), ["tta_shift=2"]).tta_shift == 2.0


@pytest.mark.parametrize("name", sorted(config_io.PRESETS))
def test_every_preset_is_valid(name):
    config = config_io.preset(name)
    for section in (config, config.model, config.train, config.augment, config.engine):
        config_io.check(section)


def test_every_number_field_states_its_range_beside_it():
    """A field's rule sits in its `setting`: a number field without a range would take any
    value by omission, not by choice."""
    unbounded = [f"{prefix}{name}" for cls, prefix in config_io.SECTIONS.items()
                 for name, rule in config_io.rules_of(cls).items()
                 if rule.kind in (int, float) and not rule.range]
    assert unbounded == []
    assert config_io.rules_of(TrainConfig)["epochs"].range == ">= 1"
    assert config_io.rules_of(ModelConfig)["widths"].many  # a tuple's items each follow it


def saved_default() -> dict:
    return json.loads(json.dumps(config_io.to_dict(config_io.preset("default"))))


def test_a_saved_config_with_a_bad_value_is_refused_naming_the_field(tmp_path):
    saved = saved_default()
    saved["train"]["batch_size"] = 0
    assert refusal(lambda: config_io.from_dict(saved)) == (
        "train.batch_size=0: expected an integer >= 1")
    saved = saved_default()
    saved["augment"]["flip_prob"] = float("nan")  # json writes NaN, and reads it back
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    message = refusal(lambda: config_io.load(path))
    assert message.startswith(f"{path}: augment.flip_prob=nan: expected a number in [0, 1]")


@pytest.mark.parametrize("section, value, shown", [
    ("train", 5, "train=5: expected a mapping of its fields"),
    ("subsets", "15", "subsets='15': expected a list"),  # a string, not ["15"]
    ("model", {"widths": []}, "model.widths=(): expected a list of one or more items"),
])
def test_saved_configs_of_the_wrong_shape_are_refused(section, value, shown):
    saved = saved_default()
    saved[section] = value
    assert refusal(lambda: config_io.from_dict(saved)).startswith(shown)


def test_dependent_settings_pass_in_either_order():
    default = config_io.preset("default")
    no_resizing = ["train.early_size=0", "train.early_share=0"]
    for order in (["model.kind=seed", "model.head=dense"],
                  ["model.head=dense", "model.kind=seed"]):
        model = config_io.override(default, order + no_resizing).model
        assert (model.kind, model.head) == ("seed", "dense")
    # Five stages halve the image 6 times: only 64 pixels divide evenly.
    five = ["model.widths=8,8,8,8,8", "model.input_size=64", "model.head_stride=16",
            "train.early_size=0", "train.early_share=0"]
    assert config_io.override(default, five).model.widths == (8,) * 5
    assert config_io.override(default, five[::-1]).model.input_size == 64
    taught = ["pseudo_labels=1", "flagged_labels=drop", "teacher=20250101-000000-default"]
    assert config_io.override(default, taught).pseudo_labels
    assert config_io.override(default, taught[::-1]).flagged_labels == "drop"


def test_sections_are_not_settings_and_settings_not_sections():
    default = config_io.preset("default")
    assert "a section, not a setting" in refusal(lambda: config_io.override(default,
                                                                            ["train=3"]))
    assert "a setting, not a section" in refusal(lambda: config_io.override(
        default, ["train.epochs.count=3"]))


def test_each_choice_the_schema_accepts_is_a_key_of_the_code_that_acts_on_it():
    """The schema lists a choice's names so a config is refused before training is imported;
    the modules that act on them key a dictionary by them: the two must be the same names."""
    from kit.model import networks
    from kit.training import precision, train

    assert config_io.NETWORK_KINDS == tuple(networks.NETWORKS)
    assert config_io.HEADS == tuple(networks.HEADS)
    assert config_io.OPTIMIZERS == tuple(train.OPTIMIZERS)
    assert config_io.SCHEDULES == tuple(train.SCHEDULES)
    assert config_io.LOSSES == tuple(train.LOSSES)
    assert config_io.PRECISIONS == tuple(precision.PRECISIONS)
    from kit.config import pipelines
    from kit.results import ensemble

    assert pipelines.ENSEMBLE_METHODS == ensemble.METHODS


@pytest.mark.parametrize("widths, input_size", [((8,), 32), ((8, 8), 48), ((8, 8, 8), 96),
                                                ((8, 8, 8), 32)])
def test_every_head_stride_accepted_is_the_grid_the_network_reads(widths, input_size):
    """The rule mirrors networks.soft_argmax_head: each accepted stride gives exactly its grid,
    at least 2x2; every other power of two is refused rather than silently moved."""
    import haiku as hk
    import numpy as np

    from kit.model import networks

    accepted = []
    for stride in (2**k for k in range(8)):
        try:
            model = ModelConfig(kind="resnet", head="soft_argmax", widths=widths, stem_width=4,
                                head_width=4, input_size=input_size, head_stride=stride)
        except KitError as error:
            assert f"model.head_stride={stride}: expected one of" in str(error)
            continue
        accepted.append(stride)
        forward = networks.resnet(model, 2)
        images = np.zeros((1, input_size, input_size), np.float32)
        calls = hk.experimental.eval_summary(partial(forward, is_training=True))(images)
        heatmaps = [c for c in calls if "conv2_d" in c.module_details.module.module_name][-1]
        grid = input_size // stride
        assert grid >= 2 and heatmaps.output_spec.shape == (1, grid, grid, 1)
    deepest = 2 ** (1 + len(widths))
    assert accepted == [s for s in (4, 8, 16, 32) if s <= deepest and input_size // s >= 2]
