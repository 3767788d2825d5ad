"""kit.results.ensemble: two real quick runs of other architectures on the same folds (the separate
15-key and 4-key networks of `quick_run`, and a shared trunk), blended per keypoint value;
the refusals; the report's members table; the submission of an ensemble run."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit import config as config_io
from kit.cli import main as cli
from kit.core.keypoints import COLUMN_INDEX, SUBSET_COLUMNS
from kit.data import lookup as lookup_rules
from kit.data import tables
from kit.results import ensemble, report
from kit.runs import cv, files, predict
from kit.runs.folds import assign_folds
from kit.submit import submission, validate
from tests.conftest import refusal


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ensemble-cv")


@pytest.fixture(scope="module")
def shared_run(cv_root, training, quick_config):
    """A second member: other networks (one shared trunk), the same seed and so the same folds."""
    return cv.run_cv(config_io.override(quick_config, ["shared_trunk=1"]), training, cv_root)


@pytest.fixture(scope="module")
def lookup(synth_competition):
    _, data_dir = synth_competition
    return tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)


@pytest.fixture(scope="module")
def ensemble_run(cv_root, quick_run, shared_run, training, lookup):
    run_dir = ensemble.make_ensemble([quick_run, shared_run], cv_root, training)
    report.write(run_dir, training, lookup)
    return run_dir


def column_lines(oof: pd.DataFrame, subset: str, name: str) -> pd.DataFrame:
    part = oof[(oof["subset"] == subset) & (oof["column"] == COLUMN_INDEX[name])]
    return part.sort_values("row")


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("folds"))  # models not needed
    return target


def subset_rmse(oof: pd.DataFrame, subset: str) -> float:
    part = oof[oof["subset"] == subset]
    return float(np.sqrt(np.mean((part["prediction"] - part["truth"]) ** 2)))


# ---------------------------------------------------------------- the weights


def test_simplex_weights_are_the_constrained_optimum_not_the_free_one():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    noise = rng.normal(size=400)
    # Free least squares would take 2 of the first and -1 of the second (an exact fit).
    predictions = np.column_stack([truth + noise, truth + 2 * noise])
    np.testing.assert_allclose(ensemble.simplex_weights(predictions, truth), [1.0, 0.0],
                               atol=1e-9)
    # Independent errors of equal size: an even blend; a perfect member takes everything.
    independent = truth[:, None] + rng.normal(size=(400, 2)) * [[1.0, 1.0]]
    assert ensemble.simplex_weights(independent, truth) == pytest.approx([0.5, 0.5], abs=0.1)
    perfect = np.column_stack([truth + noise, truth])
    np.testing.assert_allclose(ensemble.simplex_weights(perfect, truth), [0.0, 1.0], atol=1e-9)


def test_saved_weights_are_non_negative_and_sum_to_one(ensemble_run, quick_run, shared_run):
    saved = json.loads((ensemble_run / "ensemble.json").read_text())
    assert [m["run"] for m in saved["members"]] == [quick_run.name, shared_run.name]
    assert set(saved["weights"]) == {"15", "4"}
    mixed = 0
    for subset, columns in saved["weights"].items():
        assert list(columns) == list(SUBSET_COLUMNS[subset])
        for weights in columns.values():
            values = np.array(list(weights.values()))
            assert set(weights) == {quick_run.name, shared_run.name}
            assert (values >= 0).all() and values.sum() == pytest.approx(1.0, abs=1e-9)
            mixed += bool(((values > 0.01) & (values < 0.99)).any())
    assert mixed, "no column blends both members: the submission test below would be weak"


def test_in_sample_blend_is_no_worse_than_the_better_member(quick_run, shared_run):
    members = [ensemble.load_member(quick_run), ensemble.load_member(shared_run)]
    blended, _ = ensemble.blend(members, cross_fit=False)
    for subset in ("15", "4"):
        best = min(subset_rmse(m.oof, subset) for m in members)
        assert subset_rmse(blended, subset) <= best + 1e-9
        # The same lines as a member's: rows, folds, columns and truth.
        ours = blended[blended["subset"] == subset].sort_values(["row", "column"])
        theirs = members[0].oof[members[0].oof["subset"] == subset].sort_values(["row", "column"])
        for column in ("row", "fold", "column", "truth"):
            np.testing.assert_array_equal(ours[column].to_numpy(), theirs[column].to_numpy())


def test_oof_csv_is_cross_fitted_by_fold(ensemble_run, quick_run, shared_run):
    oof = files.read_oof(ensemble_run)
    members = [files.read_oof(quick_run), files.read_oof(shared_run)]
    for subset, name in (("15", "left_eyebrow_outer_end_x"), ("4", "mouth_center_bottom_lip_y")):
        ours = column_lines(oof, subset, name)
        predictions = np.column_stack([column_lines(m, subset, name)["prediction"]
                                       for m in members])
        truth, folds = ours["truth"].to_numpy(), ours["fold"].to_numpy()
        for fold in np.unique(folds):
            held = folds == fold
            weights = ensemble.simplex_weights(predictions[~held], truth[~held])
            np.testing.assert_allclose(ours["prediction"].to_numpy()[held],
                                       predictions[held] @ weights, atol=2e-5)


# ---------------------------------------------------------------- refusals


def test_a_member_with_other_folds_is_refused(quick_run, quick_config, training, tmp_path):
    other = copy_run(quick_run, tmp_path / "other-seed")
    assignment = assign_folds(dataclasses.replace(quick_config, seed=1), training)
    assignment["training_rows"] = len(training)
    (other / "folds.json").write_text(json.dumps(assignment))
    message = refusal(
        lambda: ensemble.make_ensemble([quick_run, other], tmp_path, training))
    assert f"runs {quick_run.name} and other-seed have different folds" in message
    assert "seeds 0 and 0" in message  # the copy kept its config: the folds are what differ


def test_a_blend_of_grouped_runs_keeps_their_groups_for_its_interval(quick_run, shared_run,
                                                                    training, tmp_path):
    """Members whose folds kept near-duplicate groups together: the blend's folds.json holds
    those groups, and its report's interval resamples them, not a fresh linking."""
    groups = (np.arange(len(training)) // 3).tolist()
    copies = [copy_run(run, tmp_path / run.name) for run in (quick_run, shared_run)]
    for copy in copies:
        assignment = json.loads((copy / "folds.json").read_text())
        (copy / "folds.json").write_text(json.dumps({**assignment, "groups": groups}))
    blended = ensemble.make_ensemble(copies, tmp_path, training)
    kept, where = report.groups_of(files.read_folds(blended), 0.8, training)
    assert kept.tolist() == groups and where.startswith("the near-duplicate groups its folds")
    plain = ensemble.make_ensemble([quick_run, shared_run], tmp_path, training)
    assert files.read_folds(plain)["groups"] is None


def test_a_member_of_other_data_is_refused(quick_run, training, tmp_path):
    other = copy_run(quick_run, tmp_path / "other-data")
    assignment = json.loads((other / "folds.json").read_text())
    assignment["fingerprint"] = "0123456789abcdef"
    (other / "folds.json").write_text(json.dumps(assignment))
    message = refusal(
        lambda: ensemble.make_ensemble([quick_run, other], tmp_path, training))
    assert f"runs {quick_run.name} and other-data were made on different data" in message


def test_unfinished_members_and_a_lone_run_are_refused(quick_run, training, tmp_path):
    unfinished = copy_run(quick_run, tmp_path / "unfinished")
    (unfinished / "oof.csv").unlink()
    message = refusal(
        lambda: ensemble.make_ensemble([quick_run, unfinished], tmp_path, training))
    assert "unfinished (no oof.csv)" in message
    assert str(unfinished) in message
    message = refusal(lambda: ensemble.make_ensemble([quick_run], tmp_path, training))
    assert "at least 2 runs; got 1" in message
    assert list(tmp_path.glob("ensemble-*")) == [], "a refusal leaves no run behind"


def test_missing_evidence_names_the_subset_and_keypoint(quick_run, shared_run, training,
                                                        tmp_path):
    column = COLUMN_INDEX["left_eyebrow_outer_end_x"]
    copies = [copy_run(run, tmp_path / run.name) for run in (quick_run, shared_run)]
    for copy in copies:
        oof = files.read_oof(copy)
        oof = oof[~((oof["subset"] == "15") & (oof["column"] == column))]
        oof.to_csv(copy / "oof.csv", index=False)
    message = refusal(lambda: ensemble.make_ensemble(copies, tmp_path, training))
    assert message.startswith("no member has out-of-fold predictions for 15-key "
                              "left_eyebrow_outer_end_x;")
    # With one member's evidence left, that member alone answers the column.
    run_dir = ensemble.make_ensemble([quick_run, copies[1]], tmp_path, training)
    weights = files.read_weights(run_dir)["15"]["left_eyebrow_outer_end_x"]
    assert weights == {quick_run.name: 1.0, shared_run.name: 0.0}


def test_an_ensemble_can_be_a_member(ensemble_run, quick_run, training, cv_root):
    run_dir = ensemble.make_ensemble([ensemble_run, quick_run], cv_root, training)
    weights = files.read_weights(run_dir)
    assert set(weights["15"]["nose_tip_x"]) == {ensemble_run.name, quick_run.name}
    assert (cv_root / "latest").resolve() == run_dir
    images = training.images[:3]
    expected = sum(np.array([weights["4"][c][run.name] for c in SUBSET_COLUMNS["4"]])
                   * predict.predict_run(run, "4", images) for run in (ensemble_run, quick_run))
    np.testing.assert_allclose(predict.predict_run(run_dir, "4", images), expected, atol=1e-6)


# ---------------------------------------------------------------- report, show, submit


def test_report_puts_each_member_beside_the_ensemble(ensemble_run, quick_run, shared_run,
                                                     training, lookup):
    stored = json.loads((ensemble_run / "report.json").read_text())
    rows = {row["run"]: row for row in stored["members"]}
    assert [row["role"] for row in stored["members"]] == ["member", "member", "ensemble"]
    quick_report = json.loads((quick_run / "report.json").read_text())
    assert rows[quick_run.name]["subsets"] == {
        s: e["rmse"] for s, e in quick_report["subsets"].items()}
    assert rows[quick_run.name]["leaderboard_estimate"] == (
        quick_report["leaderboard_estimate"]["rmse"])
    shared_figures = report.compute(files.read_oof(shared_run), training, lookup)
    assert rows[shared_run.name]["leaderboard_estimate"] == (
        shared_figures["leaderboard_estimate"]["rmse"])
    own = rows[ensemble_run.name]
    assert own["subsets"] == {s: e["rmse"] for s, e in stored["subsets"].items()}
    assert own["leaderboard_estimate"] == stored["leaderboard_estimate"]["rmse"]
    assert own["leaderboard_estimate"] is not None
    weights = files.read_weights(ensemble_run)
    assert rows[quick_run.name]["mean_weight"]["4"] == pytest.approx(
        np.mean([w[quick_run.name] for w in weights["4"].values()]))
    markdown = (ensemble_run / "report.md").read_text()
    assert "## Members" in markdown and quick_run.name in markdown and "curves.png" not in markdown
    assert (ensemble_run / "worst.png").exists() and not (ensemble_run / "curves.png").exists()


def test_show_prints_the_members_table(ensemble_run, quick_run, shared_run, capsys):
    assert cli.main(["--runs", str(ensemble_run.parent), "show", ensemble_run.name]) == 0
    out = capsys.readouterr().out
    assert "Members" in out and quick_run.name in out and shared_run.name in out
    for row in json.loads((ensemble_run / "report.json").read_text())["members"]:
        assert f"{row['leaderboard_estimate']:.4f}" in out


def test_submission_of_an_ensemble_is_the_weighted_member_predictions(
        ensemble_run, quick_run, shared_run, synth_competition, lookup, tmp_path):
    made, data_dir = synth_competition
    written = submission.write_submission(ensemble_run, data_dir, tmp_path / "submissions")
    test = tables.load_test(data_dir)
    weights = files.read_weights(ensemble_run)
    full = np.isin(test.image_ids, lookup.image_ids[lookup_rules.lookup_blocks(lookup) == "full"])
    assert full.any() and not full.all()
    expected = {}
    for subset in ("15", "4"):
        columns = SUBSET_COLUMNS[subset]
        expected[subset] = sum(
            np.array([weights[subset][c][run.name] for c in columns])
            * predict.predict_run(run, subset, test.images, full=full)
            for run in (quick_run, shared_run))
    core_choice = json.loads((ensemble_run / "report.json").read_text())["core_choice"]
    locations = lookup_rules.fill_lookup(lookup, test.image_ids, expected, core_choice)
    values = pd.read_csv(written.csv_path)["Location"].to_numpy()
    np.testing.assert_allclose(values, locations, atol=2e-5)
    alone = lookup_rules.fill_lookup(
        lookup, test.image_ids,
        {s: predict.predict_run(quick_run, s, test.images, full=full) for s in ("15", "4")},
        core_choice)
    assert np.abs(values - alone).max() > 1e-3, "the blend differs from its first member"
    manifest = json.loads(written.manifest_path.read_text())
    assert manifest["members"] == [quick_run.name, shared_run.name]
    assert manifest["run"] == ensemble_run.name
    assert np.isfinite(validate.score(written.csv_path, made["solution"]))


def test_cli_makes_an_ensemble_and_dry_runs_its_submission(quick_run, shared_run,
                                                           synth_competition, tmp_path, capsys):
    made, data_dir = synth_competition
    root = tmp_path / "cv"
    assert cli.main(["--data", str(data_dir), "ensemble", str(quick_run), str(shared_run),
                     "--runs", str(root)]) == 0
    out = capsys.readouterr().out
    made_runs = list(root.glob("ensemble-*"))
    assert len(made_runs) == 1 and made_runs[0].name in out and "Members" in out
    assert cli.main(["--data", str(data_dir), "--runs", str(root), "submit", "--dry-run",
                     "--solution", str(made["solution"]), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"score against {made['solution']}" in out and "dry run: not uploaded" in out
    assert cli.main(["--data", str(data_dir), "--runs", str(root), "ensemble",
                     str(quick_run)]) == 1
    error = capsys.readouterr().err
    assert "at least 2 runs" in error and error.strip().count("\n") == 0


# ---------------------------------------------------------------- the stacker (--method stack)


def constructed_member(name: str, predictions: np.ndarray, truth: np.ndarray,
                       folds: np.ndarray, config, rows: np.ndarray | None = None
                       ) -> ensemble.Member:
    """A 15-key member from wide arrays (rows x 30): its OOF lines, on `rows` only if given."""
    n, columns = truth.shape
    keep = np.arange(n) if rows is None else rows
    oof = pd.DataFrame({"row": np.repeat(keep, columns), "subset": "15",
                        "fold": np.repeat(folds[keep], columns),
                        "column": np.tile(np.arange(columns), len(keep)),
                        "truth": truth[keep].ravel(), "prediction": predictions[keep].ravel()})
    fold_of_row = np.full(n, -1)
    fold_of_row[keep] = folds[keep]
    return ensemble.Member(name, Path(name), dataclasses.replace(config, subsets=("15",)),
                           fold_of_row, "constructed", n, oof, None)


@pytest.fixture
def crossed(quick_config):
    """Truth a fixed mix of A's column j and B's column j+1: no per-column blend sees it."""
    rng = np.random.default_rng(0)
    n = 200
    a, b = rng.normal(48, 6, (n, 30)), rng.normal(48, 6, (n, 30))
    truth = 0.5 * a + 0.5 * np.roll(b, -1, axis=1) + rng.normal(0, 0.2, (n, 30))
    folds = np.arange(n) % 5
    return a, b, truth, folds, quick_config


def stacked_rmse(oof: pd.DataFrame) -> float:
    return float(np.sqrt(np.mean((oof["prediction"] - oof["truth"]) ** 2)))


@pytest.mark.parametrize("fold_count", [1, 2, 4])
def test_a_columns_ridge_is_what_scikit_learns_ridgecv_chooses_and_fits(fold_count):
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import PredefinedSplit

    rng = np.random.default_rng(fold_count)
    for _ in range(20):
        rows, width = rng.integers(20, 120), rng.integers(2, 12)
        features = rng.normal(size=(rows, width)) * rng.uniform(0.1, 10) + rng.normal(size=width)
        residual = (features @ rng.normal(size=width) * rng.uniform(0, 1)
                    + rng.normal(size=rows) * rng.uniform(0.1, 5))
        folds = np.arange(rows) % fold_count
        intercept, coefficients, penalty = ensemble.ridge_column(features, residual, folds)
        inner = PredefinedSplit(folds) if fold_count > 1 else None  # one fold: leave-one-out
        model = RidgeCV(alphas=ensemble.STACK_PENALTIES * rows, cv=inner,
                        scoring="neg_mean_squared_error" if inner is not None else None)
        model.fit(features, residual)
        assert penalty == model.alpha_
        assert intercept == pytest.approx(model.intercept_, abs=1e-9)
        np.testing.assert_allclose(coefficients, model.coef_, atol=1e-9)


def test_stack_finds_a_mix_of_other_columns_the_blend_cannot(crossed):
    a, b, truth, folds, config = crossed
    members = [constructed_member("A", a, truth, folds, config),
               constructed_member("B", b, truth, folds, config)]
    blended, _ = ensemble.blend(members)
    stacked, weights, ridges = ensemble.stack(members)
    assert stacked_rmse(stacked) < 0.25 * stacked_rmse(blended)
    assert weights["15"]["nose_tip_x"] == {"A": 0.5, "B": 0.5}  # the residual's base: the mean
    assert len(ridges["15"]["features"]) == 60
    # The same lines as the blend's, in the same order.
    for column in ("row", "subset", "fold", "column", "truth"):
        assert blended[column].tolist() == stacked[column].tolist()


def test_stack_is_cross_fitted_fold_zero_never_sees_its_own_truth(crossed):
    a, b, truth, folds, config = crossed

    def fold_predictions(truth):
        members = [constructed_member("A", a, truth, folds, config),
                   constructed_member("B", b, truth, folds, config)]
        oof = ensemble.stack(members)[0]
        return oof[oof["fold"] == 0]["prediction"].to_numpy(), \
            oof[oof["fold"] == 1]["prediction"].to_numpy()

    before_0, before_1 = fold_predictions(truth)
    perturbed = truth.copy()
    perturbed[folds == 0] += np.random.default_rng(1).normal(0, 5, perturbed[folds == 0].shape)
    after_0, after_1 = fold_predictions(perturbed)
    np.testing.assert_allclose(after_0, before_0, atol=1e-9)
    assert np.abs(after_1 - before_1).max() > 1e-3, "fold 0's truth trains the other folds"


def test_the_test_path_applies_a_stacks_ridges_as_the_fit_did(crossed):
    a, b, truth, folds, config = crossed
    members = [constructed_member("A", a, truth, folds, config),
               constructed_member("B", b, truth, folds, config)]
    in_sample, weights, ridges = ensemble.stack(members, cross_fit=False)
    values = predict.ensemble_values(weights["15"], ridges["15"], {"A": a, "B": b},
                                     SUBSET_COLUMNS["15"])
    wide = in_sample.pivot(index="row", columns="column", values="prediction").to_numpy()
    np.testing.assert_allclose(values, wide, atol=1e-9)


def test_members_of_fewer_folds_stack_and_blend_on_the_rows_all_predicted(crossed):
    a, b, truth, folds, config = crossed
    partial = np.flatnonzero(folds < 2)
    members = [constructed_member("A", a, truth, folds, config),
               constructed_member("B", b, truth, folds, config, rows=partial)]
    for oof in (ensemble.stack(members)[0], ensemble.blend(members)[0]):
        assert set(oof["fold"]) == {0, 1} and set(oof["row"]) == set(partial)
    one_fold = [members[0], constructed_member("B", b, truth, folds, config,
                                               rows=np.flatnonzero(folds == 3))]
    message = refusal(lambda: ensemble.stack(one_fold))
    assert "all in fold 3" in message and "at least 2 folds" in message


def test_a_method_other_than_blend_or_stack_is_refused_in_one_line(quick_run, shared_run, synth_competition,
                                                  tmp_path, capsys):
    _, data_dir = synth_competition
    assert cli.main(["--data", str(data_dir), "ensemble", str(quick_run), str(shared_run),
                     "--runs", str(tmp_path), "--method", "vote"]) == 1
    error = capsys.readouterr().err.strip()
    assert "--method vote: unknown; expected one of blend, stack" in error
    assert error.count("\n") == 0 and not list(tmp_path.glob("ensemble-*"))


def test_cli_stack_run_is_reported_compared_and_submitted(quick_run, shared_run, ensemble_run,
                                                          synth_competition, training,
                                                          tmp_path, capsys):
    made, data_dir = synth_competition
    root = tmp_path / "cv"
    assert cli.main(["--data", str(data_dir), "ensemble", str(quick_run), str(shared_run),
                     "--runs", str(root), "--method", "stack"]) == 0
    (stacked,) = root.glob("ensemble-stack-*")
    record = files.read_ensemble(stacked)
    assert record["method"] == "stack" and set(record["stack"]) == {"15", "4"}
    assert files.has_report(stacked) and "Members" in capsys.readouterr().out
    assert cli.main(["--data", str(data_dir), "compare", str(ensemble_run), str(stacked)]) == 0
    assert "face groups" in capsys.readouterr().out
    # The test path: the members' predictions through the stored ridges.
    images = training.images[:4]
    members = {run.name: predict.predict_run(run, "4", images) for run in (quick_run, shared_run)}
    expected = predict.ensemble_values(record["weights"]["4"], record["stack"]["4"], members,
                                       SUBSET_COLUMNS["4"])
    np.testing.assert_allclose(predict.predict_run(stacked, "4", images), expected, atol=1e-5)
    assert np.abs(expected - predict.predict_run(ensemble_run, "4", images)).max() > 1e-3
    assert cli.main(["--data", str(data_dir), "--runs", str(root), "submit", str(stacked.name),
                     "--dry-run", "--solution", str(made["solution"]),
                     "--out", str(tmp_path / "out")]) == 0
    assert f"score against {made['solution']}" in capsys.readouterr().out
