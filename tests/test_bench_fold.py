"""`bench fold`'s levers: several sides against one base trained once, each compared paired
with it, and --keep's folders, which the kit's own compare reads as runs."""
from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd
import pytest

from kit.cli import main as cli
from kit.data import tables
from kit.results import compare
from kit.runs import files
from tests.conftest import QUICK
from tests.helpers import set_flags


def test_a_levers_settings_split_only_where_another_setting_starts():
    from bench import bench_fold

    assert bench_fold.parse_lever("heat=train.heatmap_loss=1.0") == (
        "heat", ["train.heatmap_loss=1.0"])
    assert bench_fold.parse_lever("two=subsets=15,4,train.epochs=3") == (
        "two", ["subsets=15,4", "train.epochs=3"])
    for bad in ("heat", "heat=", "base=flip_tta=0", "a b=flip_tta=0"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=KEY=VALUE"):
            bench_fold.parse_lever(bad)


def test_a_lever_named_twice_is_refused(synth_competition, tmp_path):
    from bench import bench_fold

    _, data_dir = synth_competition
    with pytest.raises(SystemExit, match="--lever a: named twice"):
        bench_fold.run(["--preset", "quick", "--data", str(data_dir), "--keep", str(tmp_path),
                        "--lever", "a=flip_tta=0", "--lever", "a=tta_shift=1"])


@pytest.fixture(scope="module")
def two_levers(synth_competition, tmp_path_factory):
    """Trained for real (quick, one epoch, fold 0, two seeds): the base once a seed, each
    lever once a seed, every side kept."""
    from bench import bench_fold

    _, data_dir = synth_competition
    keep = tmp_path_factory.mktemp("bench-fold") / "keep"
    settings = set_flags([*QUICK, "train.epochs=1"])
    figures = bench_fold.run(["--preset", "quick", "--data", str(data_dir), *settings,
                              "--resamples", "200", "--seeds", "2", "--keep", str(keep),
                              "--lever", "noflip=flip_tta=0",
                              "--lever", "shift=tta_shift=1.0,flip_tta=0"])
    return figures, keep


@pytest.mark.slow
def test_two_levers_share_one_base_each_paired_over_the_seeds(two_levers):
    figures, _ = two_levers
    assert figures["levers"] == "noflip=flip_tta=0 shift=tta_shift=1.0,flip_tta=0"
    assert figures["seeds"] == 2 and "200 resamples, seed 0" in figures["bootstrap"]
    assert "difference" not in figures and "verdict" not in figures
    for lever in ("noflip", "shift"):
        assert "LB estimate" in figures[lever]
        pooled, low, high, verdict = re.fullmatch(
            r"leaderboard estimate B - A ([-+.0-9]+) \[([-+.0-9]+), ([-+.0-9]+)\] (.+)",
            figures[f"{lever}_difference"]).groups()
        assert float(low) <= float(pooled) <= float(high)
        assert verdict == ("within noise" if float(low) <= 0 <= float(high)
                           else "B better" if float(high) < 0 else "B worse")
        assert figures[f"{lever}_verdict"]
        per_seed = [float(word) for word in figures[f"{lever}_seed_differences"].split()]
        assert len(per_seed) == 2
        assert figures[f"{lever}_seed_spread"] == pytest.approx(np.std(per_seed, ddof=1),
                                                                abs=2e-4)
    low, high = re.search(r"LB estimate [.0-9]+ \[([.0-9]+), ([.0-9]+)\]$",
                          figures["base"]).groups()
    assert float(low) < float(high)


@pytest.mark.slow
def test_a_side_that_differs_only_in_test_time_views_is_the_training_it_skips(
        two_levers, synth_competition, tmp_path):
    """Both levers change only prediction settings: the base trained alone, and each lever's
    OOF is what training that side would have given, line for line."""
    from bench import bench_fold

    figures, keep = two_levers
    assert figures["trained_once"] == "noflip on base's networks shift on base's networks"
    _, data_dir = synth_competition
    alone = bench_fold.run(["--preset", "quick", "--data", str(data_dir),
                            *set_flags([*QUICK, "train.epochs=1", "flip_tta=0"]),
                            "--resamples", "20", "--keep", str(tmp_path)])
    assert alone["trained_once"] == "none"
    trained = files.read_oof(tmp_path / "base-0")
    pd.testing.assert_frame_equal(files.read_oof(keep / "noflip-0"), trained)
    assert not files.read_oof(keep / "base-0")["prediction"].equals(trained["prediction"])


@pytest.mark.slow
def test_kept_sides_are_runs_the_kits_compare_reads(two_levers, synth_competition, capsys):
    figures, keep = two_levers
    _, data_dir = synth_competition
    # One run folder per side and seed, each with fold 0 of each network trained once.
    assert sorted(p.name for p in keep.iterdir()) == [
        "base-0", "base-1", "base.csv", "noflip-0", "noflip-1", "noflip.csv", "shift-0",
        "shift-1", "shift.csv"]
    for side in ("base-0", "noflip-1", "shift-0"):
        assert sorted(p.name for p in (keep / side / "folds").iterdir()) == ["15-0", "4-0"]
        assert set(files.read_oof(keep / side)["fold"]) == {0}
        assert files.read_config(keep / side).flip_tta == side.startswith("base")
    assert files.read_config(keep / "base-1").train.seed == files.read_config(
        keep / "base-0").train.seed + 1
    # The kit's compare takes kept runs: the same lines, so seed 0's difference.
    training = tables.load_training(data_dir)
    lookup = tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)
    result = compare.compare_runs(keep / "base-0", keep / "noflip-0", training, lookup,
                                  resamples=200)
    seed_0 = float(figures["noflip_seed_differences"].split()[0])
    assert result["figures"][0]["difference"] == pytest.approx(seed_0, abs=2e-4)
    assert cli.main(["--data", str(data_dir), "compare", str(keep / "base-0"),
                     str(keep / "shift-0")]) == 0
    assert "face groups" in capsys.readouterr().out
