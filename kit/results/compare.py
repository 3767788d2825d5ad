"""Two runs compared on the out-of-fold (OOF) lines both predicted: each figure of A and B
(the leaderboard estimate, the OOF RMSE overall, per subset and per keypoint) and B - A with
a 95 % interval from a paired bootstrap over face groups (kit/results/intervals.py).

The runs must be of the same training data (folds.json's fingerprint and row count, and the
data loaded now) and the same subsets, and share OOF lines: a line is a (row, subset,
column) both hold. Runs of other seeds or folds compare on the rows both held out; the
leaderboard estimate is each run's own (report.py's terms, each run's core choice made on
the shared lines), weighted by the same lookup rows. The face groups are those the folds keep
together (kit/runs/folds.py, through report.face_groups).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit import config as config_io
from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS, KEYPOINT_NAMES
from kit.data.lookup import core_choice
from kit.data.tables import LookupTable, TrainingSet, subset_indices
from kit.results import ensemble, intervals, report
from kit.runs import files
from kit.runs.folds import fingerprint

KEYS = ("row", "subset", "column")
REPEAT = "repeat"  # an optional key: the same row held out again (bench fold's seeds)


def compare_runs(run_a: Path, run_b: Path, training: TrainingSet, lookup: LookupTable | None,
                 resamples: int = intervals.RESAMPLES, seed: int = intervals.SEED,
                 level: float = intervals.LEVEL) -> dict:
    """B against A (two run folders), each refusal one line."""
    a, b = (ensemble.load_member(Path(run)) for run in (run_a, run_b))
    check_comparable(a, b, training)
    groups, groups_from = run_groups([a.path, b.path], training)
    result = compare_oof(a.oof, b.oof, training, lookup, groups, names=(a.name, b.name),
                         resamples=resamples, seed=seed, level=level)
    result["groups_from"] = groups_from
    result["config_differences"] = config_differences(a.config, b.config)
    return result


def check_comparable(a: ensemble.Member, b: ensemble.Member, training: TrainingSet) -> None:
    if (a.fingerprint, a.training_rows) != (b.fingerprint, b.training_rows):
        raise KitError(
            f"runs {a.name} and {b.name} were made on different data (fingerprint "
            f"{a.fingerprint} on {a.training_rows} rows against {b.fingerprint} on "
            f"{b.training_rows}); expected runs of the same training data")
    if a.fingerprint != fingerprint(training):
        raise KitError(f"runs {a.name} and {b.name} were made on other data than the training "
                       f"set loaded now ({len(training)} rows); expected runs of this data "
                       "folder (--data)")
    if set(a.config.subsets) != set(b.config.subsets):
        raise KitError(
            f"runs {a.name} and {b.name} answer different subsets ({','.join(a.config.subsets)}"
            f" against {','.join(b.config.subsets)}); expected runs of the same subsets")


def run_groups(run_dirs: Sequence[Path], training: TrainingSet) -> tuple[np.ndarray, str]:
    """The face groups of the first run whose folds kept groups, else the first run's."""
    stored = [d for d in run_dirs if files.read_folds(d).get("groups") is not None]
    return report.face_groups((stored or list(run_dirs))[0], training)


def config_differences(a, b) -> list[str]:
    """'field: A's value -> B's' for each config field the runs differ in."""
    flat_a, flat_b = _flatten(config_io.to_dict(a)), _flatten(config_io.to_dict(b))
    return [f"{key}: {flat_a.get(key)} -> {flat_b.get(key)}"
            for key in sorted(set(flat_a) | set(flat_b)) if flat_a.get(key) != flat_b.get(key)]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------- the figures


def paired_lines(oof_a: pd.DataFrame, oof_b: pd.DataFrame,
                 names: tuple[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lines both tables hold, in one order: A's and B's, each in oof.csv's columns."""
    keys = list(KEYS) + ([REPEAT] if REPEAT in oof_a and REPEAT in oof_b else [])
    for name, oof in zip(names, (oof_a, oof_b)):
        twice = oof.duplicated(keys)
        if twice.any():
            line = oof[twice].iloc[0]
            raise KitError(f"run {name}'s OOF holds row {line['row']}, subset {line['subset']}, "
                           f"column {line['column']} twice; expected each once")
    kept = keys + ["fold", "truth", "prediction"]
    both = oof_a[kept].merge(oof_b[kept], on=keys, suffixes=("_a", "_b"))
    if len(both) == 0:
        raise KitError(
            f"runs {names[0]} and {names[1]} have no out-of-fold rows in common ({len(oof_a)} "
            f"and {len(oof_b)} lines); expected runs that held out some of the same rows")
    differ = np.abs(both["truth_a"].to_numpy(float) - both["truth_b"].to_numpy(float)) > 1e-3
    if differ.any():
        line = both[differ].iloc[0]
        raise KitError(
            f"runs {names[0]} and {names[1]} label row {line['row']} differently "
            f"({COLUMNS[int(line['column'])]} {line['truth_a']} against {line['truth_b']}); "
            "expected runs of the same training data")
    tables = []
    for side in ("a", "b"):
        table = both[keys].copy()
        for column in ("fold", "truth", "prediction"):
            table[column] = both[f"{column}_{side}"].to_numpy()
        tables.append(table)
    return tables[0], tables[1]


@dataclass(frozen=True)
class Measure:
    """A figure compare reports: its name, its kind (estimate, overall, subset, keypoint), the
    lines of each of its terms in A's and in B's table, and the terms' weights."""

    name: str
    kind: str
    lines: tuple[list[np.ndarray], list[np.ndarray]]
    weights: np.ndarray


def compare_oof(oof_a: pd.DataFrame, oof_b: pd.DataFrame, training: TrainingSet,
                lookup: LookupTable | None, groups: np.ndarray,
                names: tuple[str, str] = ("A", "B"), resamples: int = intervals.RESAMPLES,
                seed: int = intervals.SEED, level: float = intervals.LEVEL) -> dict:
    """B - A of every figure on the lines both OOF tables hold, each with its paired interval.
    `groups`: each training row's face group. Tables with a `repeat` column (the same rows
    held out by several seeds) pair lines of the same repeat."""
    a, b = paired_lines(oof_a, oof_b, names)
    index, n_groups = intervals.group_index(np.asarray(groups)[a["row"].to_numpy()])
    bootstrap = intervals.GroupBootstrap(n_groups, resamples, seed, level)
    subsets = a["subset"].to_numpy()
    keypoints = np.array([COLUMNS[c][:-2] for c in a["column"]])
    measures: list[Measure] = []
    complete_rows = subset_indices(training.keypoints, "15")
    estimate_reason = None
    if lookup is None:
        estimate_reason = "no lookup table (data/IdLookupTable.csv)"
    elif not {"15", "4"} <= set(subsets):
        estimate_reason = "needs both subsets"
    else:
        terms = [report.leaderboard_terms(t, complete_rows, lookup, core_choice(t, complete_rows))
                 for t in (a, b)]
        estimate_reason = terms[0].reason or terms[1].reason
        if estimate_reason is None:
            measures.append(Measure("leaderboard estimate", "estimate",
                                    (terms[0].lines, terms[1].lines), terms[0].weights))

    def plain(name: str, kind: str, lines: np.ndarray) -> None:
        measures.append(Measure(name, kind, ([lines], [lines]), np.ones(1)))

    plain("OOF, all values", "overall", np.arange(len(a)))
    for subset in dict.fromkeys(subsets):
        plain(f"OOF, {subset}-key model", "subset", np.flatnonzero(subsets == subset))
    for subset in dict.fromkeys(subsets):
        for name in KEYPOINT_NAMES:
            lines = np.flatnonzero((subsets == subset) & (keypoints == name))
            if len(lines):
                plain(f"{subset}-key {name}", "keypoint", lines)
    # Every measure's terms side by side, so one resampling serves them all.
    totals = [intervals.totals(index, report.squared_errors(table),
                               [lines for measure in measures for lines in measure.lines[side]],
                               n_groups)
              for side, table in enumerate((a, b))]
    ends = np.cumsum([len(measure.weights) for measure in measures])
    positions = [(np.arange(end - len(m.weights), end), m.weights)
                 for m, end in zip(measures, ends)]
    rows = []
    for measure, (terms, weights), difference in zip(
            measures, positions, bootstrap.differences(totals[0], totals[1], positions)):
        rows.append({"measure": measure.name, "kind": measure.kind,
                     "a": intervals.point(totals[0].select(terms), weights),
                     "b": intervals.point(totals[1].select(terms), weights),
                     "difference": difference.estimate, "low": difference.low,
                     "high": difference.high, "resamples": difference.resamples,
                     "verdict": verdict(difference)})
    return {
        "runs": list(names), "lines": len(a), "rows": int(a["row"].nunique()),
        "lines_a": len(oof_a), "lines_b": len(oof_b), "groups": n_groups,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": level,
                      "method": f"paired {intervals.METHOD}"},
        "figures": rows, "estimate_reason": estimate_reason,
    }


def verdict(difference: intervals.Interval) -> str:
    """B against A in a few words: better or worse (the interval excludes zero), within noise
    (it includes zero: not distinguishable from zero), or identical."""
    if difference.low == difference.high == difference.estimate == 0.0:
        return "identical"
    if not difference.excludes_zero:
        return "within noise"
    return "B better" if difference.high < 0 else "B worse"


def headline(result: dict) -> str:
    """The sentence a reader wants: the main figure's difference, its interval, the verdict."""
    figure = result["figures"][0]
    a, b = result["runs"]
    level = f"{result['bootstrap']['level']:.0%}"
    text = (f"{figure['measure']}: B - A = {figure['difference']:+.4f} px, {level} interval "
            f"[{figure['low']:+.4f}, {figure['high']:+.4f}]")
    if figure["verdict"] == "identical":
        return f"{text}: the runs predict these rows identically."
    if figure["verdict"] == "within noise":
        return (f"{text}: the interval includes zero, so the difference between {a} and {b} "
                "is not distinguishable from zero on these rows.")
    better, worse = (b, a) if figure["verdict"] == "B better" else (a, b)
    return (f"{text}: the interval excludes zero, so {better} is better than {worse}: "
            "distinguishable from zero.")
