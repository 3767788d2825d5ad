"""Ensembles of CV runs: each keypoint column a weighted blend of the members' predictions,
the weights fitted to the members' out-of-fold (OOF) predictions.

An ensemble run lives beside the CV runs, in cv/ensemble-<date>-<hash of the members>/:
    ensemble.json    the members (run ids, paths relative to the cv root) and, per subset and
                     column, each member's weight, fitted on every OOF row: what the test uses
    folds.json       the members' shared row -> fold map, the data's fingerprint and row count,
                     so an ensemble can itself be a member of another
    config.json      the first member's config with preset "ensemble" and the ensemble's subsets
    oof.csv          the blended OOF, cross-fitted: fold k's rows are blended with weights
                     fitted on the other folds' rows only, so no row scores weights it chose
    report.json/.md  kit.results.report's, with a table of the members beside the ensemble

Weights are non-negative and sum to 1, chosen to minimise the column's OOF mean squared error.
Members must have finished (oof.csv), be made on the same data (fingerprint, training rows)
and share folds (every row two members both hold is in the same fold in each); a member
without OOF for a column has no weight there. Members that held out different rows (a
partial run of `bench fold --keep`, folds 0 and 1 only) are fitted and cross-fitted on the
rows they all predicted, by the folds those rows are in.

method "stack" (`--method stack`): for each subset and target column, a ridge regression over
every member's predictions of every column of the subset (the 30 values of a 15-key row, the
8 of a 4-key row), predicting the truth's difference from the members' mean; cross-fitted by
fold as the blend is, its penalty chosen by leave-one-fold-out on the fitting rows.
ensemble.json keeps the mean's weights as `weights` and the fitted ridges as `stack`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from kit.config import SUBSETS, Config
from kit.core.errors import KitError
from kit.core.keypoints import COLUMN_INDEX, COLUMNS, SUBSET_COLUMNS
from kit.data.tables import TrainingSet
from kit.runs import files
from kit.runs.folders import new_named_dir, point_latest
from kit.runs.folds import fingerprint, fold_of_row

PRESET = "ensemble"
NETWORK = "ensemble"  # the one "network" of an ensemble's folds.json: the members' fold map
# --method's choices and the fewest runs each combines.
METHOD_FEWEST = {"blend": 2, "stack": 1}
METHODS = tuple(METHOD_FEWEST)
# Ridge penalties per fitting row, so a penalty means the same shrinkage at any data size.
STACK_PENALTIES = np.logspace(-3, 3, 7)


@dataclass(frozen=True)
class Member:
    """A finished run as the ensemble sees it."""

    name: str
    path: Path
    config: Config
    fold_of_row: np.ndarray  # (training rows,), -1 where the run holds no row
    fingerprint: str
    training_rows: int
    oof: pd.DataFrame
    groups: list[int] | None  # the near-duplicate groups its folds kept together, if grouped


# ---------------------------------------------------------------- members


def load_member(run_dir: Path) -> Member:
    """A run's config, folds and OOF; refused in one line if it has not finished."""
    run_dir = Path(run_dir).resolve()
    if not files.is_finished(run_dir):
        raise KitError(f"{run_dir}: unfinished (no oof.csv); expected a finished run "
                       "(`make cv` finishes it)")
    assignment = files.read_folds(run_dir)
    if not assignment.get("fingerprint"):
        raise KitError(f"{run_dir / files.FOLDS}: no data fingerprint (a run from before runs "
                       "shared their folds); expected a run made by this version of the kit")
    return Member(
        name=run_dir.name, path=run_dir, config=files.read_config(run_dir),
        fold_of_row=fold_of_row(assignment, run_dir / files.FOLDS),
        fingerprint=assignment["fingerprint"], training_rows=int(assignment["training_rows"]),
        oof=files.read_oof(run_dir), groups=assignment.get("groups"),
    )


def check_members(members: Sequence[Member], training: TrainingSet | None = None,
                  fewest: int = 2) -> None:
    """Refuse members that cannot be combined: too few, repeated, other data, other folds.
    `fewest`: 2 for a blend (a blend of one run is that run); a stack of one run still
    corrects what its predictions get wrong the same way on every face."""
    if len(members) < fewest:
        raise KitError(f"an ensemble needs at least {fewest} run{'s' if fewest > 1 else ''}"
                       f"; got {len(members)}" + (f" ({members[0].name})" if members else ""))
    names = [m.name for m in members]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise KitError(f"run {repeated[0]} is named twice; expected each member once")
    first = members[0]
    for other in members[1:]:
        if (other.fingerprint, other.training_rows) != (first.fingerprint, first.training_rows):
            raise KitError(
                f"runs {first.name} and {other.name} were made on different data (fingerprint "
                f"{first.fingerprint} on {first.training_rows} rows against {other.fingerprint} "
                f"on {other.training_rows}); expected the same training data")
    if training is not None and first.fingerprint != fingerprint(training):
        raise KitError(f"run {first.name} was made on other data than the training set loaded "
                       f"now ({len(training)} rows); expected runs of this data folder")
    for a_index, a in enumerate(members):
        for b in members[a_index + 1:]:
            both = (a.fold_of_row >= 0) & (b.fold_of_row >= 0)
            differ = both & (a.fold_of_row != b.fold_of_row)
            if differ.any():
                row = int(np.flatnonzero(differ)[0])
                raise KitError(
                    f"runs {a.name} and {b.name} have different folds ({int(differ.sum())} of "
                    f"the {int(both.sum())} rows they share, row {row} in fold "
                    f"{a.fold_of_row[row]} against {b.fold_of_row[row]}; seeds {a.config.seed} "
                    f"and {b.config.seed}); expected runs of the same seed, folds and grouping")


# ---------------------------------------------------------------- weights


def simplex_weights(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's mean squared error.

    With R the members' errors (rows x members), non-negative least squares on [R; 1'] v = [0; 1]
    minimises ||R v||^2 + (sum v - 1)^2; writing v = s w with w on the simplex, the best s
    leaves q/(1 + q) for q = ||R w||^2, which rises with q: so w = v / sum v is the exact
    simplex optimum, and never worse than the best single member.
    """
    errors = (predictions - truth[:, None]) / np.sqrt(len(truth))
    system = np.vstack([errors, np.ones((1, errors.shape[1]))])
    target = np.zeros(len(system))
    target[-1] = 1.0
    solution, _ = nnls(system, target)
    return solution / solution.sum()


def blend_column(predictions: np.ndarray, truth: np.ndarray, folds: np.ndarray,
                 cross_fit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A column's blended OOF and the weights fitted on all its rows.

    Cross-fitted: fold k's rows take weights fitted on the other folds' rows, so the OOF
    estimate stays out-of-fold for the blend as well as for the members' networks.
    """
    weights = simplex_weights(predictions, truth)
    if not cross_fit:
        return predictions @ weights, weights
    check_folds(folds)
    blended = np.empty(len(truth))
    for fold in np.unique(folds):
        held = folds == fold
        blended[held] = predictions[held] @ simplex_weights(predictions[~held], truth[~held])
    return blended, weights


def check_folds(folds: np.ndarray) -> None:
    """Cross-fitting predicts each fold from the others: the rows must span two folds."""
    if len(np.unique(folds)) < 2:
        raise KitError(f"the members' common out-of-fold rows are all in fold {folds[0]}; "
                       "expected rows of at least 2 folds to cross-fit the ensemble by fold")


def column_evidence(members: Sequence[Member], subset: str, column: int):
    """The OOF lines of one (subset, column): rows, folds, truth and each member's predictions
    (rows x members with evidence), and which members those are."""
    parts = {}
    for index, member in enumerate(members):
        part = member.oof[(member.oof["subset"] == subset) & (member.oof["column"] == column)]
        if len(part):
            parts[index] = part.sort_values("row")
    if not parts:
        raise KitError(
            f"no member has out-of-fold predictions for {subset}-key {COLUMNS[column]}; "
            f"expected at least one run of {', '.join(m.name for m in members)} with "
            f"{subset}-key models")
    parts = common_rows(members, parts, f"{subset}-key {COLUMNS[column]}")
    first = next(iter(parts.values()))
    predictions = np.column_stack([part["prediction"].to_numpy(np.float64)
                                   for part in parts.values()])
    return (first["row"].to_numpy(), first["fold"].to_numpy(),
            first["truth"].to_numpy(np.float64), predictions, list(parts))


def common_rows(members: Sequence[Member], parts: dict[int, pd.DataFrame],
                what: str) -> dict[int, pd.DataFrame]:
    """Each member's lines (indexed by member, one line a row) cut to the rows all of them
    hold: members of fewer folds are blended where every member has a prediction."""
    rows = functools.reduce(np.intersect1d, [part["row"].to_numpy() for part in parts.values()])
    if len(rows) == 0:
        names = ", ".join(members[i].name for i in parts)
        raise KitError(f"runs {names} hold no out-of-fold row of {what} in common; expected "
                       "runs that held out some of the same rows")
    return {index: part[part["row"].isin(rows)] for index, part in parts.items()}


def ensemble_subsets(members: Sequence[Member]) -> tuple[str, ...]:
    """Every subset some member answers, in the usual order."""
    return tuple(s for s in SUBSETS if any(s in m.config.subsets for m in members))


def blend(members: Sequence[Member], cross_fit: bool = True) -> tuple[pd.DataFrame, dict]:
    """The blended OOF table and, per subset and column, each member's weight (by name)."""
    tables, weights = [], {}
    for subset in ensemble_subsets(members):
        weights[subset] = {}
        for name in SUBSET_COLUMNS[subset]:
            column = COLUMN_INDEX[name]
            rows, folds, truth, predictions, which = column_evidence(members, subset, column)
            blended, fitted = blend_column(predictions, truth, folds, cross_fit)
            column_weights = dict.fromkeys((m.name for m in members), 0.0)
            column_weights.update({members[i].name: float(w) for i, w in zip(which, fitted)})
            weights[subset][name] = column_weights
            tables.append(pd.DataFrame({"row": rows, "subset": subset, "fold": folds,
                                        "column": column, "truth": truth,
                                        "prediction": blended}))
    return _in_run_order(pd.concat(tables, ignore_index=True)), weights


def _in_run_order(oof: pd.DataFrame) -> pd.DataFrame:
    """The order the CV runs write: subset, fold, row, then the columns of a row."""
    oof = oof.sort_values(["subset", "fold", "row", "column"], kind="stable",
                          key=lambda c: c.map(SUBSETS.index) if c.name == "subset" else c)
    return oof.reset_index(drop=True)


# ---------------------------------------------------------------- the stacker


def subset_evidence(members: Sequence[Member], subset: str):
    """A subset's rows every member with OOF for it predicted, as wide arrays: rows, folds,
    truth (rows x the subset's columns), each such member's predictions of those columns
    (members x rows x columns), and which members those are."""
    columns = [COLUMN_INDEX[name] for name in SUBSET_COLUMNS[subset]]
    parts = {}
    for index, member in enumerate(members):
        part = member.oof[member.oof["subset"] == subset]
        if len(part):
            parts[index] = part.pivot(index="row", columns="column",
                                      values=["prediction", "truth", "fold"])
    if not parts:
        raise KitError(f"no member has out-of-fold predictions for the {subset}-key subset; "
                       f"expected at least one run of {', '.join(m.name for m in members)} with "
                       f"{subset}-key models")
    # A row is a stacking row where each member predicted every column of the subset.
    complete = {index: wide[wide["prediction"].reindex(columns=columns).notna().all(axis=1)]
                for index, wide in parts.items()}
    complete = common_rows(members, {i: w.reset_index() for i, w in complete.items()},
                           f"the {subset}-key subset with all its columns")
    first = next(iter(complete.values())).sort_values("row")
    predictions = np.stack([wide.sort_values("row")["prediction"][columns].to_numpy(np.float64)
                            for wide in complete.values()])
    return (first["row"].to_numpy(), first["fold"][columns].max(axis=1).to_numpy(np.int64),
            first["truth"][columns].to_numpy(np.float64), predictions, list(complete))


def centred_spectrum(features: np.ndarray, target: np.ndarray):
    """Features and target less their means, and the eigenvalues and eigenvectors of the
    centred features' Gram matrix: what every penalty's ridge is solved from."""
    centred, deviation = features - features.mean(axis=0), target - target.mean()
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    return centred, deviation, eigenvalues, vectors


def ridge_fits(features: np.ndarray, target: np.ndarray,
               penalties: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regressions of target on features with an unpenalised intercept, one for each
    penalty (the squared error plus penalty x the coefficients' squared norm, as
    scikit-learn's Ridge): (intercepts (penalties,), coefficients (penalties, features))."""
    centred, deviation, eigenvalues, vectors = centred_spectrum(features, target)
    projected = vectors.T @ (centred.T @ deviation)
    coefficients = (projected / (eigenvalues + penalties[:, None])) @ vectors.T
    return target.mean() - coefficients @ features.mean(axis=0), coefficients


def leave_one_out_errors(features: np.ndarray, target: np.ndarray,
                         penalties: np.ndarray) -> np.ndarray:
    """Each penalty's mean squared leave-one-row-out error of ridge_fits, in closed form
    (each row's residual over one minus its leverage)."""
    centred, deviation, eigenvalues, vectors = centred_spectrum(features, target)
    rotated = centred @ vectors
    shrink = 1.0 / (eigenvalues[:, None] + penalties[None, :])  # (features, penalties)
    fitted = rotated @ (shrink * (rotated.T @ deviation)[:, None])
    leverage = 1.0 / len(target) + rotated**2 @ shrink
    return (((deviation[:, None] - fitted) / (1.0 - leverage)) ** 2).mean(axis=0)


def ridge_column(features: np.ndarray, residual: np.ndarray,
                 folds: np.ndarray) -> tuple[float, np.ndarray, float]:
    """A ridge of the residual on the features: (intercept, coefficients, penalty), the penalty
    the first with the least mean squared error, leave-one-fold-out over the fitting rows'
    folds (each fold's error weighing alike), leave-one-row-out with one fold: what
    scikit-learn's RidgeCV chooses, without its per-fit overhead."""
    penalties = STACK_PENALTIES * len(residual)
    inner = np.unique(folds)
    if len(inner) > 1:
        errors = []
        for fold in inner:
            held = folds == fold
            intercepts, coefficients = ridge_fits(features[~held], residual[~held], penalties)
            predicted = features[held] @ coefficients.T + intercepts
            errors.append(((predicted - residual[held, None]) ** 2).mean(axis=0))
        error = np.mean(errors, axis=0)
    else:
        error = leave_one_out_errors(features, residual, penalties)
    best = int(np.argmin(error))
    intercepts, coefficients = ridge_fits(features, residual, penalties[best:best + 1])
    return float(intercepts[0]), coefficients[0], float(penalties[best])


def stack_subset(predictions: np.ndarray, truth: np.ndarray, folds: np.ndarray,
                 cross_fit: bool = True) -> tuple[np.ndarray, list[tuple[float, np.ndarray, float]]]:
    """A subset's stacked OOF (rows x columns) and each column's ridge fitted on all its rows.

    Residual form around the members' mean: a strong penalty falls back to the mean, never to
    the column's average face. Cross-fitted as blend_column: fold k's rows are predicted by
    ridges fitted on the other folds' rows only.
    """
    members, rows, columns = predictions.shape
    features = predictions.transpose(1, 0, 2).reshape(rows, members * columns)
    mean = predictions.mean(axis=0)
    residual = truth - mean
    fitted = [ridge_column(features, residual[:, j], folds) for j in range(columns)]
    if not cross_fit:
        return mean + np.column_stack([b + features @ w for b, w, _ in fitted]), fitted
    check_folds(folds)
    stacked = np.empty_like(truth)
    for fold in np.unique(folds):
        held = folds == fold
        for j in range(columns):
            intercept, weights, _ = ridge_column(features[~held], residual[~held, j],
                                                 folds[~held])
            stacked[held, j] = mean[held, j] + intercept + features[held] @ weights
    return stacked, fitted


def stack(members: Sequence[Member], cross_fit: bool = True) -> tuple[pd.DataFrame, dict, dict]:
    """The stacked OOF table, the members' mean weights per subset and column (the residual's
    base), and per subset the ridges: features (member, column) and each column's fit."""
    tables, weights, ridges = [], {}, {}
    for subset in ensemble_subsets(members):
        names = SUBSET_COLUMNS[subset]
        rows, folds, truth, predictions, which = subset_evidence(members, subset)
        stacked, fitted = stack_subset(predictions, truth, folds, cross_fit)
        share = dict.fromkeys((m.name for m in members), 0.0)
        share.update({members[i].name: 1.0 / len(which) for i in which})
        weights[subset] = {name: dict(share) for name in names}
        ridges[subset] = {
            "features": [[members[i].name, name] for i in which for name in names],
            "columns": {name: {"intercept": b, "coefficients": w.tolist(), "penalty": a}
                        for name, (b, w, a) in zip(names, fitted)},
        }
        for j, name in enumerate(names):
            tables.append(pd.DataFrame({"row": rows, "subset": subset, "fold": folds,
                                        "column": COLUMN_INDEX[name], "truth": truth[:, j],
                                        "prediction": stacked[:, j]}))
    return _in_run_order(pd.concat(tables, ignore_index=True)), weights, ridges


# ---------------------------------------------------------------- the ensemble run


def run_name(members: Sequence[Member], now: time.struct_time | None = None,
             method: str = "blend") -> str:
    """ensemble-<UTC date>-<short hash of the member ids> (ensemble-stack-... for a stack):
    the same members, the same hash."""
    digest = hashlib.sha256("\n".join(sorted(m.name for m in members)).encode()).hexdigest()
    kind = "" if method == "blend" else f"{method}-"
    return f"ensemble-{kind}{time.strftime('%Y%m%d', now or time.gmtime())}-{digest[:8]}"


def make_ensemble(run_dirs: Sequence[Path], root: Path,
                  training: TrainingSet | None = None, method: str = "blend") -> Path:
    """Check the members, blend (or stack) their OOF, write the ensemble run (all but its
    report)."""
    if method not in METHODS:
        raise KitError(f"--method {method}: unknown; expected one of {', '.join(METHODS)}")
    members = [load_member(Path(d)) for d in run_dirs]
    check_members(members, training, fewest=METHOD_FEWEST[method])
    ridges = None
    if method == "stack":
        oof, weights, ridges = stack(members)
    else:
        oof, weights = blend(members)
    first = members[0]
    union = np.flatnonzero(np.any([m.fold_of_row >= 0 for m in members], axis=0))
    fold_of_row = np.max([m.fold_of_row for m in members], axis=0)  # shared: any holder's
    run_dir = new_named_dir(root, run_name(members, method=method))
    files.write_ensemble(run_dir, {
        "members": [{"run": m.name, "path": os.path.relpath(m.path, Path(root).resolve())}
                    for m in members],
        "method": method,
        "weights": weights,
        **({"stack": ridges} if ridges is not None else {}),
        "fitted_on": "every OOF row all the members predicted; oof.csv's fold k uses "
                     + ("ridges" if ridges is not None else "weights")
                     + " fitted on the other folds",
    })
    # The members share their folds, so the groups one of them kept together are the blend's.
    groups = next((m.groups for m in members if m.groups is not None), None)
    files.write_folds(run_dir, {
        "groups": groups, "fingerprint": first.fingerprint, "training_rows": first.training_rows,
        "networks": {NETWORK: {"rows": union.tolist(), "fold": fold_of_row[union].tolist()}},
    })
    files.write_oof(run_dir, oof)
    config = dataclasses.replace(first.config, preset=PRESET, subsets=ensemble_subsets(members))
    # config.json last, as for a CV run: a folder with it is a complete run.
    files.write_config(run_dir, config)
    point_latest(root, run_dir)
    return run_dir
