"""Decisions with error bars: the bootstrap over face groups (kit.results.intervals), `compare`
of two runs (kit.results.compare), the report's interval and mean baseline, and `bench fold`'s
paired comparison. Runs are copies of the session's `quick_run` with their oof.csv rewritten,
so nothing here trains but the bench and cv tests."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kit.cli import main as cli
from kit.data import tables
from kit.results import compare, ensemble, intervals, report
from kit.runs import files
from tests.conftest import QUICK, refusal
from tests.helpers import set_flags


@pytest.fixture(scope="module")
def lookup(synth_competition):
    _, data_dir = synth_competition
    return tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)


def copy_run(source: Path, target: Path, predictions=None, keep=None) -> Path:
    """A copy of a run (its fold models left behind), its OOF predictions replaced by
    predictions(oof) and its lines cut to keep(oof) where given."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("folds", "*.png"))
    oof = files.read_oof(target)
    if keep is not None:
        oof = oof[keep(oof)].reset_index(drop=True)
    if predictions is not None:
        oof["prediction"] = predictions(oof)
    files.write_oof(target, oof)
    return target


def exact(oof):
    return oof["truth"]


def off_by(pixels):
    return lambda oof: oof["truth"] + pixels


def compare_runs(a, b, training, lookup, **settings):
    return compare.compare_runs(a, b, training, lookup, **settings)


# ---------------------------------------------------------------- the bootstrap itself


def lines_in_groups(groups=40, lines=600, seed=0):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, lines)
    group[:groups] = np.arange(groups)  # every group holds a line
    return group, rng.gamma(2.0, 2.0, lines)


def test_identical_figures_differ_by_exactly_zero_with_a_zero_width_interval():
    group, squared = lines_in_groups()
    terms = [np.arange(len(group)), np.flatnonzero(group % 3 == 0)]
    figure = intervals.totals(group, squared, terms, 40)
    difference = intervals.GroupBootstrap(40).difference(figure, figure, np.array([3.0, 1.0]))
    assert difference.estimate == difference.low == difference.high == 0.0
    assert not difference.excludes_zero and difference.resamples == intervals.RESAMPLES


def test_a_run_off_by_d_in_every_value_against_an_exact_one_differs_by_d():
    group, _ = lines_in_groups()
    exact_run = intervals.totals(group, np.zeros(len(group)), [np.arange(len(group))], 40)
    shifted = intervals.totals(group, np.full(len(group), 0.7 ** 2), [np.arange(len(group))], 40)
    difference = intervals.GroupBootstrap(40).difference(exact_run, shifted, np.ones(1))
    assert difference.estimate == pytest.approx(0.7, abs=1e-12)
    assert difference.low == pytest.approx(0.7, abs=1e-12)
    assert difference.high == pytest.approx(0.7, abs=1e-12)
    assert difference.excludes_zero


def test_each_resample_is_what_a_loop_over_the_lines_of_the_drawn_groups_gives():
    group, squared = lines_in_groups(groups=12, lines=90)
    terms = [np.flatnonzero(group % 2 == 0), np.arange(len(group))]
    weights = np.array([2.0, 5.0])
    bootstrap = intervals.GroupBootstrap(12, resamples=20, seed=3)
    resampled = intervals.weighted_rmse(*bootstrap.resampled(
        intervals.totals(group, squared, terms, 12)), weights)
    for draw, figure in zip(bootstrap.counts, resampled):
        assert draw.sum() == 12  # 12 groups drawn with replacement
        mse = []
        for lines in terms:
            times = draw[group[lines]]  # each line counted once per draw of its group
            mse.append(np.sum(times * squared[lines]) / np.sum(times)
                       if times.sum() else np.nan)
        expected = np.sqrt(np.dot(weights, mse) / weights.sum())
        assert figure == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_the_same_seed_gives_the_same_interval_and_it_brackets_the_figure():
    group, squared = lines_in_groups()
    figure = intervals.totals(group, squared, [np.arange(len(group))], 40)
    first = intervals.GroupBootstrap(40, seed=7).rmse(figure, np.ones(1))
    assert intervals.GroupBootstrap(40, seed=7).rmse(figure, np.ones(1)) == first
    assert intervals.GroupBootstrap(40, seed=8).rmse(figure, np.ones(1)) != first
    assert first.low < first.estimate < first.high
    assert first.estimate == pytest.approx(np.sqrt(squared.mean()))
    assert first.as_dict()["seed"] == 7


@pytest.mark.parametrize("groups", [0, 1])
def test_a_bootstrap_of_fewer_than_two_groups_is_refused_in_one_line(groups):
    message = refusal(lambda: intervals.GroupBootstrap(groups))
    assert "at least 2 groups" in message and f"fall in {groups}" in message


# ---------------------------------------------------------------- compare


def test_a_run_compared_with_its_copy_differs_by_exactly_zero(quick_run, tmp_path, training,
                                                              lookup):
    copy = copy_run(quick_run, tmp_path / "copy")
    result = compare_runs(quick_run, copy, training, lookup)
    kinds = {row["kind"] for row in result["figures"]}
    assert kinds == {"estimate", "overall", "subset", "keypoint"}
    for row in result["figures"]:
        assert row["difference"] == row["low"] == row["high"] == 0.0, row["measure"]
        assert row["a"] == row["b"] and row["verdict"] == "identical"
    assert result["lines"] == result["lines_a"] == len(files.read_oof(quick_run))
    assert result["config_differences"] == []
    assert "identically" in compare.headline(result)


def test_a_figure_of_compare_is_the_reports_figure(quick_run, training, lookup):
    stored = files.read_report(quick_run)
    result = compare_runs(quick_run, quick_run, training, lookup)
    figures = {row["measure"]: row["a"] for row in result["figures"]}
    assert figures["leaderboard estimate"] == pytest.approx(
        stored["leaderboard_estimate"]["rmse"], rel=1e-9)
    assert figures["OOF, all values"] == pytest.approx(stored["overall_rmse"], rel=1e-9)
    for subset, entry in stored["subsets"].items():
        assert figures[f"OOF, {subset}-key model"] == pytest.approx(entry["rmse"], rel=1e-9)
        for name, value in entry["per_keypoint"].items():
            assert figures[f"{subset}-key {name}"] == pytest.approx(value, rel=1e-9)


def test_a_constant_shift_gives_that_shift_in_every_figure(quick_run, tmp_path, training,
                                                           lookup):
    a = copy_run(quick_run, tmp_path / "exact", exact)
    b = copy_run(quick_run, tmp_path / "shifted", off_by(0.5))
    result = compare_runs(a, b, training, lookup)
    assert result["figures"][0]["measure"] == "leaderboard estimate"
    for row in result["figures"]:
        assert row["a"] == 0.0
        for key in ("b", "difference", "low", "high"):
            assert row[key] == pytest.approx(0.5, abs=1e-5), (row["measure"], key)
        assert row["verdict"] == "B worse"
    assert "exact is better than shifted" in compare.headline(result)
    # and the other way round: B better, by the same amount
    back = compare_runs(b, a, training, lookup)
    assert back["figures"][0]["difference"] == pytest.approx(-0.5, abs=1e-5)
    assert back["figures"][0]["verdict"] == "B better"


def test_runs_that_held_out_other_rows_compare_on_the_rows_both_predicted(quick_run, tmp_path,
                                                                          training, lookup):
    a = copy_run(quick_run, tmp_path / "a", keep=lambda oof: oof["row"] % 3 != 0)
    b = copy_run(quick_run, tmp_path / "b", keep=lambda oof: oof["row"] % 3 != 1)
    result = compare_runs(a, b, training, lookup)
    both = files.read_oof(quick_run)
    assert result["lines"] == int((both["row"] % 3 == 2).sum())
    assert result["lines"] < result["lines_a"] and result["lines"] < result["lines_b"]


def test_compare_prints_the_difference_its_interval_verdict_and_seed(quick_run, tmp_path,
                                                                     synth_competition, capsys):
    _, data_dir = synth_competition
    copy_run(quick_run, tmp_path / "exact", exact)
    copy_run(quick_run, tmp_path / "shifted", off_by(0.25))
    argv = ["--data", str(data_dir), "--runs", str(tmp_path), "compare", "exact", "shifted"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "seed 0" in out and "2000 resamples" in out and "face groups" in out
    assert "+0.2500" in out and "B worse" in out and "distinguishable from zero" in out
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == out  # deterministic
    assert cli.main(argv + ["--seed", "5", "--resamples", "300"]) == 0
    assert "seed 5" in capsys.readouterr().out


def changed_config(run_dir: Path, change) -> None:
    path = run_dir / files.CONFIG
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def changed_folds(run_dir: Path, change) -> None:
    path = run_dir / files.FOLDS
    assignment = json.loads(path.read_text())
    change(assignment)
    path.write_text(json.dumps(assignment))


def test_compare_refuses_runs_of_other_data_in_one_line(quick_run, tmp_path, training, lookup):
    other = copy_run(quick_run, tmp_path / "other")
    changed_folds(other, lambda folds: folds.update(fingerprint="0123456789abcdef"))
    message = refusal(lambda: compare_runs(quick_run, other, training, lookup))
    assert "different data" in message and "0123456789abcdef" in message


def test_compare_refuses_runs_of_other_subsets_in_one_line(quick_run, tmp_path, training,
                                                           lookup):
    fifteen = copy_run(quick_run, tmp_path / "fifteen", keep=lambda oof: oof["subset"] == "15")
    changed_config(fifteen, lambda config: config.update(subsets=["15"]))
    message = refusal(lambda: compare_runs(quick_run, fifteen, training, lookup))
    assert "different subsets" in message and "15,4 against 15" in message


def test_compare_refuses_runs_without_oof_rows_in_common_in_one_line(quick_run, tmp_path,
                                                                     training, lookup):
    first = copy_run(quick_run, tmp_path / "first", keep=lambda oof: oof["fold"] == 0)
    second = copy_run(quick_run, tmp_path / "second", keep=lambda oof: oof["fold"] == 1)
    message = refusal(lambda: compare_runs(first, second, training, lookup))
    assert "no out-of-fold rows in common" in message


def test_compare_of_rows_of_one_face_group_is_refused_in_one_line(quick_run, tmp_path,
                                                                  training, lookup):
    row = int(files.read_oof(quick_run)["row"].iloc[0])
    one = copy_run(quick_run, tmp_path / "one", keep=lambda oof: oof["row"] == row)
    message = refusal(lambda: compare_runs(one, one, training, lookup))
    assert "at least 2 groups" in message


def test_a_refused_compare_is_one_line_from_the_cli(quick_run, tmp_path, synth_competition,
                                                     capsys):
    _, data_dir = synth_competition
    other = copy_run(quick_run, tmp_path / "other")
    changed_folds(other, lambda folds: folds.update(fingerprint="0123456789abcdef"))
    assert cli.main(["--data", str(data_dir), "compare", str(quick_run), str(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different data" in err


# ---------------------------------------------------------------- the report


def test_the_reports_estimate_has_its_interval(quick_run):
    stored = files.read_report(quick_run)
    estimate = stored["leaderboard_estimate"]
    interval = estimate["interval"]
    assert interval["low"] <= estimate["rmse"] <= interval["high"]
    assert interval["estimate"] == pytest.approx(estimate["rmse"], rel=1e-9)
    assert (interval["seed"], interval["resamples"], interval["level"]) == (0, 2000, 0.95)
    assert interval["groups"] >= 2 and "similarity" in interval["groups_from"]
    markdown = (quick_run / files.REPORT_MD).read_text()
    assert f"[{interval['low']:.4f}, {interval['high']:.4f}]" in markdown
    assert "seed 0" in markdown


def test_the_mean_baseline_is_each_keypoints_mean_over_the_folds_training_rows(quick_run,
                                                                               training):
    oof = files.read_oof(quick_run)
    baseline = report.mean_baseline(oof, training)
    errors = []
    for fold in (0, 1):
        part = oof[(oof["subset"] == "15") & (oof["fold"] == fold)]
        outside = np.setdiff1d(tables.subset_indices(training.keypoints, "15"), part["row"])
        means = training.keypoints[outside].astype(np.float64).mean(axis=0)
        errors.append((means[part["column"]] - part["truth"].to_numpy()) ** 2)
    assert baseline["subsets"]["15"] == pytest.approx(np.sqrt(np.concatenate(errors).mean()))
    assert "outside the row's fold" in baseline["rule"]
    assert "mean_baseline" in files.read_report(quick_run)


def test_a_run_worse_than_the_means_says_so_in_its_report(quick_run, tmp_path, training,
                                                          lookup):
    good = copy_run(quick_run, tmp_path / "good", exact)
    assert "warning" not in report.write(good, training, lookup)
    bad = copy_run(quick_run, tmp_path / "bad", off_by(30.0))
    result = report.write(bad, training, lookup)
    assert "worse than predicting each keypoint's mean" in result["warning"]
    assert "\n" not in result["warning"]
    for subset, mean in result["mean_baseline"]["subsets"].items():
        assert f"{subset}-key model's OOF RMSE 30.00 px against {mean:.2f} px" in result["warning"]
    assert "**Warning:** this run scores worse" in (bad / files.REPORT_MD).read_text()


@pytest.mark.slow
def test_cv_ends_with_the_warning_of_a_run_worse_than_the_means(tmp_path, synth_competition,
                                                               capsys):
    """Trained for real at a rate too small to move the network from its first guess (the
    image's centre): every keypoint's mean is nearer."""
    _, data_dir = synth_competition
    settings = set_flags(QUICK)
    assert cli.main(["--data", str(data_dir), "--runs", str(tmp_path / "cv"), "cv",
                     "--preset", "quick", *settings, "--set", "train.learning_rate=1e-9"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("warning: this run scores worse than predicting each keypoint")


def test_a_blends_report_gives_each_member_and_itself_an_interval(quick_run, tmp_path,
                                                                  training, lookup):
    rng = np.random.default_rng(0)
    noisy = copy_run(quick_run, tmp_path / "noisy",
                     lambda oof: oof["truth"] + rng.normal(0, 2, len(oof)))
    blend = ensemble.make_ensemble([quick_run, noisy], tmp_path, training)
    result = report.write(blend, training, lookup)
    assert "low" in result["leaderboard_estimate"]["interval"]
    for row in result["members"]:
        low, high = row["leaderboard_interval"]
        assert low <= row["leaderboard_estimate"] <= high
    markdown = (blend / files.REPORT_MD).read_text()
    assert "leaderboard estimate [95 %]" in markdown


