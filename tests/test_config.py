"""Presets, command-line overrides and the saved config of a run."""
from __future__ import annotations

import pytest

from kit import config as config_io
from kit.core.errors import KitError


@pytest.mark.parametrize("name", sorted(config_io.PRESETS))
def test_every_preset_round_trips_through_its_saved_form(name, tmp_path):
    config = config_io.preset(name)
    assert config.preset == name
    path = tmp_path / "config.json"
    from kit.core import fileio

    fileio.write_json(path, config_io.to_dict(config))
    assert config_io.load(path) == config
    assert hash(config)  # hashable: compiled functions are cached by config
    # `cv --describe`'s lines are every setting: from the schema's defaults they rebuild it.
    assert config_io.override(config_io.Config(), config_io.settings_lines(config)) == config


def test_overrides_reach_nested_fields_with_their_types():
    config = config_io.override(config_io.preset("default"), [
        "train.epochs=3", "model.widths=8,16", "flip_tta=0", "train.learning_rate=0.5",
        "subsets=4",
    ])
    assert config.train.epochs == 3 and config.model.widths == (8, 16)
    assert config.flip_tta is False and config.train.learning_rate == 0.5
    assert config.subsets == ("4",)
    assert config_io.preset("default").train.epochs != 3  # presets are fresh every time


@pytest.mark.parametrize("bad, message", [
    ("train.epoch=3", "TrainConfig has no field 'epoch'"),
    ("epochs", "expected KEY=VALUE"),
    ("train.epochs=three", "train.epochs='three': expected an integer >= 1"),
    ("flip_tta=maybe", "flip_tta='maybe': expected true or false"),
])
def test_bad_overrides_are_one_clear_line(bad, message):
    with pytest.raises(KitError, match=message):
        config_io.override(config_io.preset("default"), [bad])


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KitError, match="expected one of seed, default.*a pipeline of several "
                       "runs: best"):
        config_io.preset("bets")


def test_seed_preset_keeps_the_reports_recipe():
    seed = config_io.preset("seed")
    assert seed.model.kind == "seed" and seed.model.widths == (32, 64)
    assert (seed.train.batch_size, seed.train.learning_rate) == (32, 0.01)
    assert (seed.train.optimizer, seed.train.loss, seed.train.schedule) == ("sgd", "mse",
                                                                            "constant")


def test_v1_is_b2cd740s_default_exactly():
    """v1 stays what `default` was at b2cd740 (its saved form, taken from that commit), so
    that commit's figures stay reproducible; fields added since keep their defaults."""
    import dataclasses
    import json
    from pathlib import Path

    then = json.loads((Path(__file__).parent / "data" / "b2cd740-default.json").read_text())
    then["preset"] = "v1"
    now = json.loads(json.dumps(config_io.to_dict(config_io.preset("v1"))))
    assert now["train"].pop("select") == "best"  # b2cd740 kept the best epoch
    assert now["train"].pop("ema") == 0.0  # and the last weights, not an average
    assert now["train"].pop("seed") == 0  # training drawn from the run's seed alone
    assert now["train"].pop("validate_every") == 1  # every epoch scored
    assert now["model"].pop("deep_blocks") == 0  # no block beyond blocks_per_stage
    early = (now["train"].pop("early_size"), now["train"].pop("early_share"))
    assert early == (0, 0)  # every epoch at the input size
    assert now["train"].pop("precision") == "fp32"  # computed in fp32 on every device
    assert now["train"].pop("heatmap_loss") == 0.0  # the coordinate loss alone
    now["train"].pop("heatmap_sigma")  # which then shapes nothing
    assert now["train"].pop("swa_epochs") == 0  # no weight averaging
    now["train"].pop("swa_rate")  # which then sets no rate
    assert now["augment"].pop("mirror_x") == 47.5  # x -> 95 - x, as v1 mirrored
    assert (now.pop("tta_zoom"), now.pop("tta_rotate")) == (0.0, 0.0)  # and shifted views
    occlusion = (now["augment"].pop("occlude_prob"), now["augment"].pop("occlude_size"))
    assert occlusion == (0.0, 0.4)  # and nothing covered
    assert now.pop("engine") == dataclasses.asdict(config_io.EngineConfig())
    taught = {name: now.pop(name)
              for name in ("teacher", "pseudo_labels", "flagged_labels", "fill_labels",
                           "soft_targets", "average_labels")}
    assert taught == {"teacher": "", "pseudo_labels": False, "flagged_labels": "keep",
                      "fill_labels": False, "soft_targets": 0.0, "average_labels": 0.0}
    assert now == then


def test_v1_is_written_out_in_full_so_no_default_can_move_it():
    """kit/config/v1.py names every field the schema has (bar the engine's, which changes no
    result), and v1 is exactly it: values and their types."""
    import dataclasses

    from kit.config.v1 import V1

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    assert set(V1) == names(config_io.Config) - {"engine"}
    for section, cls in (("model", config_io.ModelConfig), ("train", config_io.TrainConfig),
                         ("augment", config_io.AugmentConfig)):
        assert set(V1[section]) == names(cls), section

    def typed(value):
        if isinstance(value, dict):
            return {key: typed(item) for key, item in value.items()}
        if isinstance(value, tuple):
            return tuple(typed(item) for item in value)
        return type(value).__name__, value

    saved = config_io.to_dict(config_io.preset("v1"))
    assert saved.pop("engine") == dataclasses.asdict(config_io.EngineConfig())
    assert typed(saved) == typed(V1)


@pytest.mark.parametrize("platform, expected", [("cpu", "default"), ("gpu", "gpu"),
                                                ("cuda", "gpu"), ("tpu", "gpu")])
def test_without_a_preset_the_hardware_picks_one(platform, expected):
    name, why = config_io.preset_for(platform)
    assert name == expected and name in config_io.PRESETS and why


def test_the_cli_says_which_preset_the_hardware_picked_and_an_explicit_one_wins(capsys):
    import argparse

    from kit.cli import main as cli

    picked = cli.make_config(argparse.Namespace(preset=None, set=None))
    assert picked.preset == "default"  # these tests run on CPUs
    assert "preset default (no accelerator here" in capsys.readouterr().out
    chosen = cli.make_config(argparse.Namespace(preset="seed", set=None))
    assert chosen.preset == "seed" and capsys.readouterr().out == ""


def test_cv_describe_prints_the_resolved_settings_and_trains_nothing(capsys, tmp_path):
    from kit.cli import main as cli

    runs = tmp_path / "cv"
    argv = ["--data", str(tmp_path / "no-data"), "--runs", str(runs), "cv", "--preset",
            "default", "--describe", "--set", "train.epochs=3"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.epochs=3" in lines and "model.head=soft_argmax" in lines
    expected = config_io.override(config_io.preset("default"), ["train.epochs=3"])
    assert config_io.override(config_io.Config(), lines) == expected
    assert not runs.exists()


def test_the_gpu_preset_never_lets_held_out_rows_choose_its_weights():
    assert config_io.preset("gpu").train.select == "last"


def test_a_network_widened_scales_every_convolution_and_keeps_the_dense_layer():
    base = config_io.preset("default").model
    wider = base.widened(1.5)
    assert (wider.stem_width, wider.widths, wider.head_width) == (24, (48, 96, 192), 144)
    assert wider.dense == base.dense and wider.kind == base.kind
    assert base.widened(0.3).widths == (10, 19, 38)  # rounded, never below one channel
    gpu = config_io.preset("gpu").model
    assert (gpu.stem_width, gpu.widths, gpu.head_width) == (32, (64, 128, 256), 192)


def test_the_schemas_fold_placements_are_the_engines():
    from kit.training import programs

    assert ("auto", *programs.FOLD_PLACEMENTS) == config_io.FOLD_PLACEMENTS
    assert config_io.EngineConfig().fold_placement == "auto"


def test_configs_that_differ_only_in_test_time_views_train_alike():
    assert config_io.prediction_only_fields() == ("flip_tta", "tta_shift", "tta_zoom",
                                                  "tta_rotate")
    base = config_io.preset("default")
    views = config_io.override(base, ["flip_tta=0", "tta_shift=1.5", "tta_zoom=0.1"])
    assert config_io.trains_alike(base, views) and config_io.trains_alike(views, base)
    for other in ("train.epochs=3", "train.seed=1", "augment.mirror_x=48.5", "folds=4"):
        assert not config_io.trains_alike(base, config_io.override(views, [other]))
