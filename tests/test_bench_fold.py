"""`bench fold`'s levers: several sides against one base trained once, each compared paired
with it, and --keep's folders, which the kit's own compare reads as runs."""
from __future__ import annotations

import argparse
import re

import pytest

from kit.cli import main as cli
from kit.data import tables
from kit.results import compare
from kit.runs import files
from tests.conftest import QUICK


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


@pytest.mark.slow
def test_two_levers_share_one_base_and_keep_runs_compare_reads(synth_competition, tmp_path,
                                                               capsys):
    """Trained for real (quick, one epoch, fold 0): the base once, each lever once."""
    from bench import bench_fold

    _, data_dir = synth_competition
    keep = tmp_path / "keep"
    settings = [item for setting in [*QUICK, "train.epochs=1"] for item in ("--set", setting)]
    figures = bench_fold.run(["--preset", "quick", "--data", str(data_dir), *settings,
                              "--resamples", "200", "--keep", str(keep),
                              "--lever", "noflip=flip_tta=0",
                              "--lever", "shift=tta_shift=1.0,flip_tta=0"])
    assert figures["levers"] == "noflip=flip_tta=0 shift=tta_shift=1.0,flip_tta=0"
    assert "difference" not in figures and "verdict" not in figures
    for lever in ("noflip", "shift"):
        assert re.fullmatch(r"leaderboard estimate B - A [-+.0-9]+ \[[-+.0-9]+, [-+.0-9]+\] .+",
                            figures[f"{lever}_difference"])
        assert "LB estimate" in figures[lever] and figures[f"{lever}_verdict"]
    # One run folder per side and seed, each with fold 0 of each network trained once.
    assert sorted(p.name for p in keep.iterdir()) == [
        "base-0", "base.csv", "noflip-0", "noflip.csv", "shift-0", "shift.csv"]
    for side in ("base-0", "noflip-0", "shift-0"):
        assert sorted(p.name for p in (keep / side / "folds").iterdir()) == ["15-0", "4-0"]
        assert set(files.read_oof(keep / side)["fold"]) == {0}
        assert files.read_config(keep / side).flip_tta == (side == "base-0")
    # The kit's compare takes kept runs: the same lines, so the bench's difference.
    training = tables.load_training(data_dir)
    lookup = tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)
    result = compare.compare_runs(keep / "base-0", keep / "noflip-0", training, lookup,
                                  resamples=200)
    bench_difference = float(figures["noflip_difference"].split()[5])
    assert result["figures"][0]["difference"] == pytest.approx(bench_difference, abs=2e-4)
    assert cli.main(["--data", str(data_dir), "compare", str(keep / "base-0"),
                     str(keep / "shift-0")]) == 0
    assert "face groups" in capsys.readouterr().out
