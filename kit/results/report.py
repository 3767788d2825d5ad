"""The leaderboard-style report of a CV run, computed from oof.csv alone (plus the lookup table
for the leaderboard estimate), and the pictures that go with it.

Leaderboard estimate. Kaggle scores RMSE over the lookup rows. Test images asked for more than
the 8 core values ("full" images, answered by the 15-key model, and for the core keypoints by
whichever model the OOF evidence favours) come from the first annotation source; the others
("core" images, answered by the 4-key model) from the second. So

    LB^2 = sum over (block b, column c) of n(b, c) * MSE(b, c)  /  sum of n(b, c)

where n(b, c) counts lookup rows of block b asking column c, MSE(full, c) is the answering
model's OOF mean squared error on column c over the training rows with all 30 values, and
MSE(core, c) the 4-key model's OOF error on column c over the rows with only the core values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit import config as config_io
from kit.core import fileio
from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS, KEYPOINT_NAMES
from kit.data.lookup import core_choice, lookup_blocks
from kit.data.tables import LookupTable, TrainingSet, subset_indices
from kit.model import tasks
from kit.results import faces, intervals, label_noise, plots
from kit.runs import files, folds
from kit.training import runtime

PICTURES = ("curves.png", "keypoint-error.png", "errors-on-face.png", "worst.png")
LABEL_NOISE_CSV, LABEL_NOISE_PNG = "label-noise.csv", "label-noise.png"


def _rmse(frame: pd.DataFrame) -> float:
    if len(frame) == 0:
        return float("nan")
    return float(np.sqrt(np.mean((frame["prediction"] - frame["truth"]) ** 2)))


@dataclass(frozen=True)
class EstimateTerms:
    """The leaderboard estimate's terms over an OOF table, one per (block, column) the lookup
    table asks: its lookup rows (the weight), the model answering it, and the positions in
    the table of the OOF lines whose mean squared error it takes. `reason` instead where a
    term has no line."""

    terms: list[dict]
    weights: np.ndarray
    lines: list[np.ndarray]
    rows_by_block: dict
    reason: str | None = None


def leaderboard_terms(oof: pd.DataFrame, complete_rows: np.ndarray, lookup: LookupTable,
                      choice: dict[str, str]) -> EstimateTerms:
    blocks = lookup_blocks(lookup)
    in_complete = oof["row"].isin(complete_rows).to_numpy()
    subsets, columns = oof["subset"].to_numpy(), oof["column"].to_numpy()
    terms, weights, lines = [], [], []
    counts = pd.DataFrame({"block": blocks, "column": lookup.columns}).value_counts()
    for (block, column), n in counts.items():
        name = COLUMNS[column]
        if block == "full":
            subset = choice.get(name, "15")
            chosen = (subsets == subset) & (columns == column) & in_complete
        else:
            subset = "4"
            chosen = (subsets == "4") & (columns == column) & ~in_complete
            if not chosen.any():
                chosen = (subsets == "4") & (columns == column)
        if not chosen.any():
            return EstimateTerms([], np.zeros(0), [], {},
                                 f"no OOF predictions for {name} ({block} images)")
        terms.append({"block": block, "column": name, "rows": int(n), "model": subset})
        weights.append(int(n))
        lines.append(np.flatnonzero(chosen))
    rows_by_block = {b: int((blocks == b).sum()) for b in ("full", "core")}
    return EstimateTerms(terms, np.array(weights, np.float64), lines, rows_by_block)


def squared_errors(oof: pd.DataFrame) -> np.ndarray:
    return (oof["prediction"].to_numpy(np.float64) - oof["truth"].to_numpy(np.float64)) ** 2


def leaderboard_estimate(oof: pd.DataFrame, complete_rows: np.ndarray, lookup: LookupTable,
                         choice: dict[str, str]) -> dict:
    estimate = leaderboard_terms(oof, complete_rows, lookup, choice)
    if estimate.reason:
        return {"rmse": None, "reason": estimate.reason}
    squared = squared_errors(oof)
    mse = np.array([squared[lines].mean() for lines in estimate.lines])
    terms = [dict(term, rmse=float(np.sqrt(m))) for term, m in zip(estimate.terms, mse)]
    return {"rmse": float(np.sqrt(estimate.weights @ mse / estimate.weights.sum())),
            "lookup_rows": int(estimate.weights.sum()),
            "rows_by_block": estimate.rows_by_block, "terms": terms}


def estimate_interval(oof: pd.DataFrame, complete_rows: np.ndarray, lookup: LookupTable,
                      choice: dict[str, str], groups: np.ndarray,
                      resamples: int = intervals.RESAMPLES, seed: int = intervals.SEED) -> dict:
    """The leaderboard estimate's 95 % interval by a bootstrap over face groups (`groups`:
    each training row's group), or why there is none."""
    estimate = leaderboard_terms(oof, complete_rows, lookup, choice)
    if estimate.reason:
        return {"reason": estimate.reason}
    rows = oof["row"].to_numpy()
    if len(rows) and rows.max() >= len(groups):
        return {"reason": f"OOF row {rows.max()} has no face group ({len(groups)} training "
                          "rows); expected a run of this data"}
    index, n_groups = intervals.group_index(np.asarray(groups)[rows])
    try:
        bootstrap = intervals.GroupBootstrap(n_groups, resamples, seed)
    except KitError as error:
        return {"reason": str(error)}
    figure = intervals.totals(index, squared_errors(oof), estimate.lines, n_groups)
    return bootstrap.rmse(figure, estimate.weights).as_dict()


def face_groups(run_dir: Path, training: TrainingSet) -> tuple[np.ndarray, str]:
    """Each training row's face group, for the run's intervals (groups_of its folds.json)."""
    return groups_of(files.read_folds(run_dir), files.read_config(run_dir).group_similarity,
                     training)


def groups_of(assignment: dict, similarity: float,
              training: TrainingSet) -> tuple[np.ndarray, str]:
    """Each training row's face group: the near-duplicate groups the folds of `assignment`
    (folds.json's content) kept together, or, where they were not grouped, the same linking
    (kit.runs.folds) at `similarity`; and where they came from, in words."""
    stored = assignment.get("groups")
    if isinstance(stored, list) and len(stored) == len(training):
        return (np.asarray(stored, np.int64),
                f"the near-duplicate groups its folds kept together, similarity {similarity}")
    linked = folds.near_duplicate_groups(training.images, similarity)
    return linked, (f"near-duplicate frames linked at similarity {similarity}, as folds are "
                    "grouped (its folds were not)")


MEAN_BASELINE_RULE = ("each value predicted as its keypoint's mean over the subset's training "
                      "rows outside the row's fold")


def mean_baseline(oof: pd.DataFrame, training: TrainingSet) -> dict:
    """The RMSE of predicting each keypoint's mean (MEAN_BASELINE_RULE: out-of-fold, from the
    training labels) on the run's OOF lines, overall and per subset."""
    squared = np.full(len(oof), np.nan)
    rows, columns = oof["row"].to_numpy(), oof["column"].to_numpy()
    truth = oof["truth"].to_numpy(np.float64)
    for (subset, _), where in oof.groupby(["subset", "fold"], sort=False).indices.items():
        outside = np.setdiff1d(subset_indices(training.keypoints, str(subset)), rows[where])
        if len(outside) == 0:
            continue
        asked = np.unique(columns[where])  # the subset's columns: present in all its rows
        means = np.full(len(COLUMNS), np.nan)
        means[asked] = training.keypoints[np.ix_(outside, asked)].astype(np.float64).mean(axis=0)
        squared[where] = (means[columns[where]] - truth[where]) ** 2
    subsets = oof["subset"].to_numpy()
    return {"rule": MEAN_BASELINE_RULE, "overall_rmse": _root_mean(squared),
            "subsets": {str(s): _root_mean(squared[subsets == s])
                        for s in dict.fromkeys(subsets)}}


# A mean error (pixels) beyond this in x or y is worth a line of advice: a shift every face
# shares is error a model need not make.
OFFSET_WORTH_SAYING = 0.25


def systematic_offset(oof: pd.DataFrame) -> dict:
    """The predictions' mean error in x and in y (truth minus prediction, pixels, over every
    OOF value) and, where one is large, what removes it: an x offset alone is the mirror the
    flips assume (augment.mirror_x), any offset a stack (`ensemble RUN --method stack`)."""
    error = oof["truth"] - oof["prediction"]
    is_x = (oof["column"] % 2 == 0).to_numpy()
    x, y = float(error[is_x].mean()), float(error[~is_x].mean())
    advice = None
    if max(abs(x), abs(y)) > OFFSET_WORTH_SAYING:
        advice = "`python -m kit ensemble RUN --method stack` removes it from the predictions"
        if abs(x) > OFFSET_WORTH_SAYING >= abs(y):
            advice += (f"; in x alone it is the labels' mirror: move augment.mirror_x (the x "
                       f"a flip keeps in place; 47.5 in every preset) by {x:+.1f}")
    return {"x": x, "y": y, "advice": advice}


def _root_mean(squared: np.ndarray) -> float | None:
    squared = squared[np.isfinite(squared)]
    return float(np.sqrt(squared.mean())) if len(squared) else None


def worse_than_mean(report: dict) -> str | None:
    """One line where a subset's model scores worse than predicting each keypoint's mean,
    else None."""
    baseline = report["mean_baseline"]
    worse = [(subset, entry["rmse"], baseline["subsets"].get(subset))
             for subset, entry in report["subsets"].items()
             if baseline["subsets"].get(subset) is not None
             and entry["rmse"] > baseline["subsets"][subset]]
    if not worse:
        return None
    figures = "; ".join(f"the {subset}-key model's OOF RMSE {rmse:.2f} px against {mean:.2f} px"
                        for subset, rmse, mean in worse)
    return (f"this run scores worse than predicting each keypoint's mean ({figures}, the means "
            "of each fold's training rows): its models learnt less than the means, check "
            "train.learning_rate (a diverged run) and train.epochs")


def compute(oof: pd.DataFrame, training: TrainingSet, lookup: LookupTable | None,
            histories: dict[str, list[list[dict]]] | None = None,
            groups: np.ndarray | None = None) -> dict:
    """Every figure of the report, from the OOF table; with `groups` (each training row's
    face group), the leaderboard estimate's interval too."""
    complete_rows = subset_indices(training.keypoints, "15")
    report: dict = {"overall_rmse": _rmse(oof), "subsets": {}}
    for subset, part in oof.groupby("subset", sort=False):
        subset = str(subset)
        keypoint_names = np.array([COLUMNS[c][:-2] for c in part["column"]])
        per_keypoint = {
            name: _rmse(part[keypoint_names == name])
            for name in KEYPOINT_NAMES if (keypoint_names == name).any()
        }
        per_fold = {int(f): _rmse(p) for f, p in part.groupby("fold")}
        fold_values = np.array(list(per_fold.values()))
        entry = {
            "rmse": _rmse(part),
            "rows": int(part["row"].nunique()),
            "values": len(part),
            "per_keypoint": per_keypoint,
            "per_fold": per_fold,
            "fold_mean": float(fold_values.mean()),
            "fold_std": float(fold_values.std(ddof=1)) if len(fold_values) > 1 else 0.0,
        }
        if histories and subset in histories:
            entry["best_epochs"] = [files.best_epoch(fold) for fold in histories[subset]]
        report["subsets"][subset] = entry
    choice = core_choice(oof, complete_rows)
    report["core_choice"] = choice
    report["core_choice_rule"] = (
        "for each core keypoint value, the model (15-key or 4-key) with the lower OOF RMSE "
        "on the training rows that carry all 30 values answers the fully-asked test images"
    )
    if lookup is not None and {"15", "4"} <= set(report["subsets"]):
        report["leaderboard_estimate"] = leaderboard_estimate(oof, complete_rows, lookup, choice)
        if groups is not None and report["leaderboard_estimate"]["rmse"] is not None:
            report["leaderboard_estimate"]["interval"] = estimate_interval(
                oof, complete_rows, lookup, choice, groups)
    else:
        report["leaderboard_estimate"] = {
            "rmse": None, "reason": "needs both subsets and data/IdLookupTable.csv"
        }
    report["mean_baseline"] = mean_baseline(oof, training)
    report["systematic_offset"] = systematic_offset(oof)
    warning = worse_than_mean(report)
    if warning:
        report["warning"] = warning
    return report


def member_rows(run_dir: Path, training: TrainingSet, lookup: LookupTable | None,
                own: dict, groups: np.ndarray | None = None) -> list[dict]:
    """An ensemble run's members, each scored by compute() as a run of its own (over the same
    face `groups` for the intervals), then the ensemble (`own`, its figures): where the
    ensemble's score comes from."""
    weights = files.read_weights(run_dir)
    rows = []
    for member in files.ensemble_members(run_dir):
        row = _summary_row(member.name, "member",
                           compute(files.read_oof(member), training, lookup, groups=groups))
        row["mean_weight"] = {
            subset: float(np.mean([w.get(member.name, 0.0) for w in columns.values()]))
            for subset, columns in weights.items()
        }
        rows.append(row)
    return rows + [_summary_row(Path(run_dir).name, "ensemble", own)]


def _summary_row(run: str, role: str, figures: dict) -> dict:
    interval = figures["leaderboard_estimate"].get("interval") or {}
    return {"run": run, "role": role,
            "subsets": {s: e["rmse"] for s, e in figures["subsets"].items()},
            "leaderboard_estimate": figures["leaderboard_estimate"].get("rmse"),
            "leaderboard_interval": ([interval["low"], interval["high"]] if "low" in interval
                                     else None)}


def estimate_method(stage: dict, config: dict | None) -> str:
    """How a pipeline stage's leaderboard estimate was made, and what may flatter it."""
    if stage["kind"] == "blend":
        return ("its members' OOF blended cross-fitted: fold k's rows with weights fitted on "
                "the other folds' rows only")
    text = "its own folds' OOF, weighted by the lookup table's blocks"
    if config and config.get("teacher"):
        text = (f"the OOF of its teacher's ({config['teacher']}) folds, reused exactly; "
                "pseudo-labels from the same fold's teacher model only")
        if config.get("flagged_labels", "keep") != "keep":
            text += ("; labels flagged by teacher models that saw other folds left out of "
                     "training (a mild leak that may flatter it a little)")
    return text


def pipeline_rows(run_dir: Path, pipeline: dict, own: dict) -> list[dict]:
    """A pipeline's stages, each with its run's figures (the final run's are `own`) and how
    its estimate was made."""
    rows = []
    for stage in pipeline["stages"]:
        run = stage.get("run")
        if not run:
            continue
        figures = own if run == Path(run_dir).name else files.read_report(
            Path(run_dir).parent / run)
        row = _summary_row(run, stage["name"], figures)
        row.update(seconds=stage.get("seconds"),
                   estimate_method=estimate_method(stage, figures.get("config")))
        rows.append(row)
    return rows


def subset_histories(config, histories: dict[str, list[list[dict]]]) -> dict:
    """Each subset's fold histories: those of the network that answers it (a shared trunk's
    for both subsets)."""
    return {subset: histories[tasks.network_for(config, subset)] for subset in config.subsets
            if tasks.network_for(config, subset) in histories}


def write(run_dir: Path, training: TrainingSet, lookup: LookupTable | None,
          seconds: float | None = None) -> dict:
    """report.json, report.md and the pictures, from the run's files."""
    run_dir = Path(run_dir)
    oof = files.read_oof(run_dir)
    config = files.read_config(run_dir)
    is_ensemble = files.is_ensemble(run_dir)
    # Keyed by network, as the folds were trained; an ensemble trains nothing.
    histories = {} if is_ensemble else files.read_histories(run_dir, tasks.network_names(config),
                                                            config.folds)
    groups, groups_from = face_groups(run_dir, training)
    report = compute(oof, training, lookup, subset_histories(config, histories), groups)
    if "interval" in report["leaderboard_estimate"]:
        report["leaderboard_estimate"]["interval"]["groups_from"] = groups_from
    if is_ensemble:
        report["members"] = member_rows(run_dir, training, lookup, report, groups)
    report["run"] = run_dir.name
    report["config"] = config_io.to_dict(config)
    if seconds is not None:
        report["train_seconds"] = seconds
    engine = files.read_last_engine_call(run_dir)
    if engine is not None:
        report["engine"] = engine
    draw_pictures(run_dir, oof, training, histories, report)
    report["label_noise"] = write_label_noise(run_dir, oof, training)
    teacher = files.read_teacher(run_dir)
    if teacher is not None:
        report["teacher"] = teacher
    pipeline = files.run_pipeline_record(run_dir)
    if pipeline is not None:
        report["pipeline"] = pipeline_rows(run_dir, pipeline, report)
    files.write_report(run_dir, report, markdown(report))
    return report


def write_label_noise(run_dir: Path, oof: pd.DataFrame, training: TrainingSet) -> dict:
    """label-noise.csv and .png: the training labels the OOF residuals flag (kit.results.label_noise)."""
    flagged = label_noise.flag(oof)
    with fileio.atomic_path(Path(run_dir) / LABEL_NOISE_CSV) as temporary:
        flagged.to_csv(temporary, index=False, float_format="%.3f")
    faces.label_noise(training.images, flagged, Path(run_dir) / LABEL_NOISE_PNG)
    return label_noise.summary(flagged, oof)


def wide_predictions(oof: pd.DataFrame, rows: int) -> dict[str, np.ndarray]:
    """oof.csv's long table as (rows, 30) truth and prediction arrays per subset (NaN elsewhere)."""
    out = {}
    for subset, part in oof.groupby("subset", sort=False):
        truth = np.full((rows, len(COLUMNS)), np.nan, np.float32)
        prediction = np.full((rows, len(COLUMNS)), np.nan, np.float32)
        truth[part["row"], part["column"]] = part["truth"]
        prediction[part["row"], part["column"]] = part["prediction"]
        out[str(subset)] = (truth, prediction)
    return out


def draw_pictures(run_dir: Path, oof: pd.DataFrame, training: TrainingSet,
                  histories: dict, report: dict) -> None:
    report["pictures"] = list(PICTURES if histories else PICTURES[1:])
    if histories:
        plots.learning_curves(histories, run_dir / "curves.png")
    per_keypoint = {s: e["per_keypoint"] for s, e in report["subsets"].items()}
    plots.keypoint_error_bars(per_keypoint, run_dir / "keypoint-error.png")
    wide = wide_predictions(oof, len(training))
    # The face picture and the worst cases pool both models: each row's values from the
    # model that predicted most of them (the 15-key model where it has the row).
    truth = np.full((len(training), len(COLUMNS)), np.nan, np.float32)
    prediction = truth.copy()
    labels = np.array([""] * len(training), dtype=object)
    for subset in ("4", "15"):
        if subset not in wide:
            continue
        t, p = wide[subset]
        has = ~np.isnan(t).all(axis=1)
        truth[has], prediction[has] = t[has], p[has]
        labels[has] = [f"row {r}, {subset}-key model" for r in np.flatnonzero(has)]
    used = ~np.isnan(truth).all(axis=1)
    mean_image = training.images.mean(axis=0)
    plots.errors_on_face(mean_image, truth[used], prediction[used], run_dir / "errors-on-face.png")
    chosen = faces.worst_cases(training.images[used], truth[used], prediction[used],
                               list(labels[used]), run_dir / "worst.png")
    report["worst_rows"] = [int(r) for r in np.flatnonzero(used)[chosen]]


def teacher_line(teacher: dict) -> str:
    """What the teacher run gave this one, and how far the estimate can still be trusted."""
    parts = [f"Taught by run `{teacher['teacher']}` (its folds reused exactly)"]
    if teacher["pseudo_labels"]:
        counts = ", ".join(f"{network}: {'/'.join(map(str, per_fold))}"
                           for network, per_fold in teacher["pseudo_images_per_fold"].items())
        parts.append(f"test images pseudo-labelled by the teacher's model of the same fold "
                     f"({counts} per fold), so no fold's held-out faces reach its training "
                     "through them")
    if teacher["flagged_labels"] != "keep":
        verb = "dropped from" if teacher["flagged_labels"] == "drop" else "down-weighted in"
        parts.append(f"{teacher['labels_changed']} labels the teacher flagged {verb} "
                     "training only (held-out scoring keeps every label); the flags came from "
                     "teacher models that saw other folds' rows, a mild second-order leak that "
                     "may flatter the estimate a little")
    return "; ".join(parts) + "."


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def _with_interval(value, interval) -> str:
    """A figure and, where there is one, its interval ([low, high] or an interval's dict)."""
    if isinstance(interval, dict):
        interval = [interval["low"], interval["high"]] if "low" in interval else None
    return _fmt(value) + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def interval_line(estimate: dict) -> str | None:
    """How the estimate's interval was made, in words (None where there is no estimate)."""
    interval = estimate.get("interval")
    if estimate.get("rmse") is None or interval is None:
        return None
    if "low" not in interval:
        return f"No interval for the leaderboard estimate: {interval['reason']}."
    return (f"The leaderboard estimate's {interval['level']:.0%} interval "
            f"[{interval['low']:.4f}, {interval['high']:.4f}]: a {interval['method']} "
            f"({interval['groups']} groups: {interval.get('groups_from', 'the run')}), "
            f"{interval['resamples']} resamples, seed {interval['seed']}; how it is made: the "
            "kit's docs/method.md, Intervals.")


def markdown(report: dict) -> str:
    lines = [f"# CV run {report['run']}", ""]
    config = report["config"]
    split = "grouped by near-duplicate faces" if config["grouped_folds"] else "plain K-fold"
    members = [row for row in report.get("members", []) if row["role"] == "member"]
    if members:
        lines += [(f"Ensemble of {len(members)} runs on {config['folds']} shared folds ({split}), "
                   f"seed {config['seed']}: each keypoint value a weighted blend of the "
                   "members' predictions, weights (non-negative, summing to 1) fitted per "
                   "subset and keypoint value to the members' OOF predictions; fold k's OOF "
                   "below uses weights fitted on the other folds only."), ""]
    else:
        lines += [(f"Preset `{config['preset']}`, {config['folds']} folds ({split}), "
                   f"seed {config['seed']}, flip TTA {'on' if config['flip_tta'] else 'off'}."),
                  ""]
    lines += [
        "| measure | RMSE (pixels) |",
        "|---|---|",
        f"| OOF, all values | {_fmt(report['overall_rmse'])} |",
    ]
    for subset, entry in report["subsets"].items():
        lines.append(f"| OOF, {subset}-key model ({entry['rows']} rows) | {_fmt(entry['rmse'])} |")
    baseline = report.get("mean_baseline")
    if baseline:
        lines.append(f"| each keypoint's mean as the prediction, out of fold | "
                     f"{_fmt(baseline['overall_rmse'])} |")
    estimate = report["leaderboard_estimate"]
    lines.append(f"| **leaderboard estimate** [95 % interval] | "
                 f"**{_with_interval(estimate.get('rmse'), estimate.get('interval'))}** |")
    if report.get("warning"):
        lines += ["", f"**Warning:** {report['warning']}."]
    if baseline:
        lines += ["", (f"The mean baseline: {baseline['rule']} (a model that learnt anything "
                       "scores below it).")]
    if interval_line(estimate):
        lines += ["", interval_line(estimate)]
    offset = report.get("systematic_offset")
    if offset:
        lines += ["", (f"Systematic offset: the predictions' mean error (truth minus prediction) "
                       f"is {offset['x']:+.2f} px in x and {offset['y']:+.2f} px in y"
                       + (f"; {offset['advice']}." if offset["advice"] else ", too small to "
                          "correct.")).replace("..", ".")]
    if "train_seconds" in report:
        lines += ["", f"Training took {report['train_seconds'] / 60:.1f} minutes."]
    if "engine" in report:
        engine = report["engine"]
        lines += ["", (f"The last `make cv` call trained {engine['images']:,} images in "
                       f"{engine['train_seconds']:.0f} s ({engine['images_per_second']:,.0f} "
                       f"images/s on {engine['devices']} {engine['backend']} device(s)) and "
                       f"spent {engine['compile_seconds']:.1f} s compiling.")]
        lines += ["", runtime.describe(engine["versions"])] if "versions" in engine else []
    if members:
        lines += ["", "## Members", "",
                  ("| run | 15-key OOF | 4-key OOF | leaderboard estimate [95 %] | mean weight, 15-key "
                   "| mean weight, 4-key |"), "|---|---|---|---|---|---|"]
        for row in report["members"]:
            weight = row.get("mean_weight", {})
            name = f"**{row['run']}** (ensemble)" if row["role"] == "ensemble" else row["run"]
            estimate_text = _with_interval(row["leaderboard_estimate"],
                                           row.get("leaderboard_interval"))
            lines.append(f"| {name} | {_fmt(row['subsets'].get('15'))} | "
                         f"{_fmt(row['subsets'].get('4'))} | {estimate_text} "
                         f"| {_fmt(weight.get('15'))} | {_fmt(weight.get('4'))} |")
    if report.get("pipeline"):
        lines += ["", "## Pipeline", "",
                  ("| stage | run | 15-key OOF | 4-key OOF | leaderboard estimate [95 %] | minutes | "
                  "how the estimate was made |"), "|---|---|---|---|---|---|---|"]
        for row in report["pipeline"]:
            minutes = "–" if row.get("seconds") is None else f"{row['seconds'] / 60:.1f}"
            estimate_text = _with_interval(row["leaderboard_estimate"],
                                           row.get("leaderboard_interval"))
            lines.append(f"| {row['role']} | {row['run']} | {_fmt(row['subsets'].get('15'))} | "
                         f"{_fmt(row['subsets'].get('4'))} | {estimate_text} | {minutes} | "
                         f"{row['estimate_method']} |")
    select = config.get("train", {}).get("select", "best")
    ema = config.get("train", {}).get("ema", 0.0)
    average = f" (as the moving average of its weights, decay {ema})" if ema else ""
    lines += [] if members else ["", "Weights kept: " + (
        f"each fold's last epoch{average}. Held-out rows score the folds but choose nothing, "
        "so the estimate below is not flattered by selection." if select == "last" else
        f"each fold's epoch with the lowest validation RMSE{average}, found on the same "
        "held-out rows that then give the out-of-fold predictions: that choice flatters the "
        "estimate a little (more for bigger models); `train.select=last` avoids it.")]
    noise = report.get("label_noise")
    if noise:
        lines += ["", (f"Label noise: {noise['flagged']} of {noise['labels']:,} training labels "
                       f"(on {noise['rows']} faces) flagged by their OOF residuals "
                       f"({noise['rule']}); listed in `{LABEL_NOISE_CSV}`, the worst faces in "
                       f"[{LABEL_NOISE_PNG}]({LABEL_NOISE_PNG}).")]
    if report.get("teacher"):
        lines += ["", teacher_line(report["teacher"])]
    lines += ["", "## Per fold", "", "| subset | " + " | ".join(
        f"fold {f}" for f in range(config["folds"])) + " | mean ± spread |",
        "|---|" + "---|" * (config["folds"] + 1)]
    for subset, entry in report["subsets"].items():
        folds_text = " | ".join(_fmt(entry["per_fold"].get(f, entry["per_fold"].get(str(f))))
                                for f in range(config["folds"]))
        lines.append(f"| {subset} | {folds_text} | {entry['fold_mean']:.4f} ± "
                     f"{entry['fold_std']:.4f} |")
    lines += ["", "## Per keypoint", "", "| keypoint | 15-key model | 4-key model |",
              "|---|---|---|"]
    for name in KEYPOINT_NAMES:
        values = [report["subsets"].get(s, {}).get("per_keypoint", {}).get(name)
                  for s in ("15", "4")]
        lines.append(f"| {name} | {_fmt(values[0])} | {_fmt(values[1])} |")
    lines += ["", "## Which model answers the core keypoints of fully-asked images", "",
              report["core_choice_rule"] + ":", ""]
    for column, subset in report["core_choice"].items():
        lines.append(f"- `{column}`: {subset}-key model")
    lines += ["", "## Leaderboard estimate", "", __doc__.split("Leaderboard estimate.")[1].strip()]
    if estimate.get("rmse") is not None:
        blocks = estimate["rows_by_block"]
        lines += ["", (f"Lookup rows: {estimate['lookup_rows']} ({blocks['full']} of "
                       f"fully-asked images, {blocks['core']} of core-only images).")]
    else:
        lines += ["", f"Not computed: {estimate.get('reason')}."]
    lines += ["", "## Pictures", ""]
    captions = {
        "curves.png": "Learning curves: train (dashed) and validation RMSE per epoch, each fold",
        "keypoint-error.png": "OOF RMSE per keypoint, both models",
        "errors-on-face.png": "Mean truth of each keypoint and the spread of its OOF error",
        "worst.png": "The 16 worst out-of-fold images: truth (green) and prediction (red)",
    }
    for name in report.get("pictures", PICTURES):
        lines += [f"### {captions[name]}", "", f"![{name}]({name})", ""]
    return "\n".join(lines) + "\n"

