"""Accuracy of one fold (or a few) on the practice competition: an override against the base
it changes, both trained on the same folds with the same seeds, the difference with a 95 %
interval from a paired bootstrap over face groups (kit/results/compare.py), in about a fifth
of `make cv`'s time per fold, seed and side.

    python -m bench fold [--preset P] [--set KEY=VALUE ...] [--fold K[,K...]] [--seeds N]
                         [--lever NAME=KEY=VALUE[,KEY=VALUE...] ...] [--keep DIR]
                         [--teacher RUN_DIR] [--data DIR] [--resamples B] [KEY=VALUE ...]

The base is the preset with every --set; the override is the base with the KEY=VALUEs (none:
the base alone, its estimate and interval). --seeds N trains every side N times, train.seed
the base's and the next N-1, on the same folds (the folds follow the run's seed): the
interval is over the pooled seeds, and the spread of the per-seed differences is printed
beside it.

--lever NAME=KEY=VALUE[,KEY=VALUE...] (repeatable): one more side, the base with those
settings, compared paired with the same base, so the base trains once for several levers:
    python -m bench fold --preset default --fold 0,1 \
        --lever heat=train.heatmap_loss=1.0 --lever noflip=flip_tta=0,tta_shift=0
NAME is everything before the first '=' (letters, digits, '-' and '_'; not base or
override); the settings split at each ',' that starts another KEY=, so a list value such as
subsets=15,4 stays whole. The positional KEY=VALUEs are the side named "override", whose
figures keep the plain keys (difference, verdict, seed_differences, seed_spread); a lever's
are prefixed with its name (heat_difference, heat_verdict, ...).

A side that differs from an earlier one of its seed only in prediction-only settings (the
test-time views: flip_tta, tta_shift, tta_zoom, tta_rotate) trains nothing: it predicts the
held-out rows again with that side's fold models, which is what training it would give
(figure trained_once names such sides).

--keep DIR (a new or empty folder): each side and seed's training stays as a partial run,
DIR/<side>-<seed>/ (config.json, folds.json, oof.csv of the folds trained, the fold
models), which `python -m kit compare` and `python -m kit ensemble` take like any finished
run, and each side's OOF pooled over seeds as DIR/<side>.csv (with a `repeat` column).

With --teacher (a finished run of the practice data, anywhere), both are second passes taught
by it: its folds and its fold-k model's lessons (add `pseudo_labels=1` and the like).
--data DIR: a prepared data folder instead of the practice zip (the tests' synthetic one).

Prints each side's held-out RMSE per subset and leaderboard-weighted estimate (report.md's
formula) with its interval, B - A with the paired interval and a verdict, and the wall time.
One fold moves by a few hundredths between seeds: read the interval, not the digits.
"""
from __future__ import annotations

import argparse
import functools
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import PRACTICE_ZIP
from kit import config as config_io
from kit.data import download, tables
from kit.model import tasks
from kit.results import compare, intervals, report, teacher
from kit.runs import cv, files, folds, predict
from kit.training import loop

BASE, OVERRIDE = "base", "override"
LEVER_NAME = re.compile(r"[A-Za-z0-9_-]+")
# A ',' splits a lever's settings only where another KEY= follows: list values keep theirs.
SETTING_START = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_.]*=)")


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench fold")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the base (and so of the override too)")
    parser.add_argument("--fold", type=_folds, default=(0,), metavar="K[,K...]")
    parser.add_argument("--seeds", type=int, default=1, help="train.seeds per side")
    parser.add_argument("--teacher", type=Path, default=None, metavar="RUN_DIR")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="a prepared data folder (default: the practice zip)")
    parser.add_argument("--resamples", type=int, default=intervals.RESAMPLES)
    parser.add_argument("--bootstrap-seed", type=int, default=intervals.SEED)
    parser.add_argument("--lever", type=parse_lever, action="append", default=[],
                        metavar="NAME=KEY=VALUE[,KEY=VALUE...]",
                        help="one more side against the same base (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep each side and seed's training as a partial run in DIR")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv or [])
    if args.data is None and not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    if args.seeds < 1:
        raise SystemExit(f"--seeds {args.seeds}: expected at least 1")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: not empty; expected a new or empty folder")
    teacher_setting = [f"teacher={args.teacher.name}"] if args.teacher else []
    base = config_io.override(config_io.preset(args.preset), args.set + teacher_setting)
    sides = side_configs(base, args.overrides, args.lever)
    folder = Path(tempfile.mkdtemp(prefix="kit-bench-fold-"))
    runs_dir = args.keep if args.keep is not None else folder
    try:
        data_dir = args.data
        if data_dir is None:
            data_dir = folder / "data"
            download.download(data_dir, archive=PRACTICE_ZIP)
        training = tables.load_training(data_dir)
        lookup = tables.load_lookup(data_dir)
        # Each side's folds (the same unless the override changes the split) and teaching.
        teachings = {name: teacher.prepare_from(config, args.teacher.parent, training,
                                                data_dir, lookup) if args.teacher else None
                     for name, config in sides.items()}
        assignments = {name: teachings[name].assignment if args.teacher
                       else folds.assign_folds(config, training) for name, config in sides.items()}
        started = time.perf_counter()
        oof = {name: [] for name in sides}
        reused = {}  # side -> the side whose trained networks it predicts with
        for repeat in range(args.seeds):
            trained = {}  # this seed's sides that trained: name -> (config, run folder)
            for name, config in sides.items():
                config = config_io.override(config, [f"train.seed={base.train.seed + repeat}"])
                run_dir = runs_dir / f"{name}-{repeat}"
                twin = next((other for other, (other_config, _) in trained.items()
                             if config_io.trains_alike(other_config, config)), None)
                if twin is None:
                    part = _train_folds(config, training, assignments[name], teachings[name],
                                        args.fold, run_dir)
                    trained[name] = (config, run_dir)
                else:
                    part = _predict_again(config, training, assignments[name], args.fold,
                                          trained[twin][1], run_dir)
                    reused[name] = twin
                if args.keep is not None:
                    keep_run(run_dir, config, assignments[name], part)
                oof[name].append(part.assign(**{compare.REPEAT: repeat}))
        minutes = (time.perf_counter() - started) / 60
        if args.keep is not None:
            for name, parts in oof.items():
                pd.concat(parts, ignore_index=True).to_csv(args.keep / f"{name}.csv",
                                                           index=False, float_format="%.5f")
        groups, groups_from = report.groups_of(assignments["base"], base.group_similarity,
                                               training)
        figures = _figures(args, sides, oof, training, lookup, groups, groups_from, minutes)
        figures["trained_once"] = " ".join(f"{name} on {twin}'s networks"
                                           for name, twin in reused.items()) or "none"
        return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse_lever(text: str) -> tuple[str, list[str]]:
    """'NAME=KEY=VALUE[,KEY=VALUE...]' -> (NAME, ['KEY=VALUE', ...])."""
    name, _, settings = text.partition("=")
    if not LEVER_NAME.fullmatch(name) or name in (BASE, OVERRIDE) or "=" not in settings:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] with a NAME of letters, digits, "
            f"'-' or '_' other than {BASE} and {OVERRIDE}, e.g. heat=train.heatmap_loss=1.0")
    return name, SETTING_START.split(settings)


def side_configs(base, overrides: list[str], levers: list[tuple[str, list[str]]]) -> dict:
    """Each side's config by name: the base, the positional override, then the levers."""
    sides = {BASE: base}
    if overrides:
        sides[OVERRIDE] = config_io.override(base, overrides)
    for name, settings in levers:
        if name in sides:
            raise SystemExit(f"--lever {name}: named twice; expected each lever's name once")
        sides[name] = config_io.override(base, settings)
    return sides


def keep_run(run_dir: Path, config, assignment: dict, oof: pd.DataFrame) -> None:
    """Make a side's trained folds a run the kit's tools read (config.json last, as cv
    does): its folds.json, the OOF of the folds it trained, its config with this seed."""
    files.write_folds(run_dir, assignment)
    files.write_oof(run_dir, oof[list(files.OOF_COLUMNS)])
    files.write_config(run_dir, config)


def _folds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fold numbers such as 0 or 0,1")


def _train_folds(config, training, assignment: dict, teaching, fold_numbers: tuple[int, ...],
                 run_dir: Path) -> pd.DataFrame:
    """The OOF lines of the folds `fold_numbers` trained by `config` (each network's folds
    together)."""
    parts = []
    for network in tasks.network_names(config):
        lesson = (functools.partial(teaching.lesson, config, network, training, assignment)
                  if teaching else None)
        cv.train_network(config, training, run_dir, network, assignment, loop.Listener(),
                         loop.Stats(), only=fold_numbers, lesson=lesson)
        parts += [table for fold in fold_numbers
                  for table in cv.fold_oof(config, training, run_dir, network, fold)]
    return pd.concat(parts, ignore_index=True)


def _predict_again(config, training, assignment: dict, fold_numbers: tuple[int, ...],
                   trained_dir: Path, run_dir: Path) -> pd.DataFrame:
    """The OOF lines of a side that trains as the one in `trained_dir` does (config.trains_alike):
    its fold folders copied, each fold's held-out rows predicted again under `config`'s
    views, as training would have predicted them."""
    parts = []
    for network in tasks.network_names(config):
        task = tasks.task_for(network)
        for fold in fold_numbers:
            folder = files.fold_dir(run_dir, network, fold)
            shutil.copytree(files.fold_dir(trained_dir, network, fold), folder)
            rows = folds.fold_rows(assignment, network, fold)[1]
            model = predict.load_fold_model(config, network, folder)
            outputs = predict.predict_images(config, task, [model], training.images[rows])
            files.write_fold_oof(folder, rows, outputs)  # the copied folder's, replaced
            parts += cv.oof_tables(config, training, network, fold, rows, outputs)
    return pd.concat(parts, ignore_index=True)


def _figures(args, sides: dict, oof: dict[str, list[pd.DataFrame]], training, lookup,
             groups: np.ndarray, groups_from: str, minutes: float) -> dict:
    """What the bench prints: each side's figures (pooled over seeds) and, for the override
    and each lever, B - A and its interval, the per-seed differences and their spread."""
    pooled = {name: pd.concat(parts, ignore_index=True) for name, parts in oof.items()}
    figures = {name: report.compute(table, training, lookup, groups=groups)
               for name, table in pooled.items()}
    last = OVERRIDE if OVERRIDE in sides else BASE
    out = {"preset": args.preset, "set": " ".join(args.set) or "none",
           "overrides": " ".join(args.overrides) or "none",
           "levers": " ".join(f"{name}={','.join(settings)}" for name, settings in args.lever)
                     or "none",
           "teacher": str(args.teacher or "none"),
           "fold": ",".join(map(str, args.fold)), "seeds": args.seeds}
    for name, result in figures.items():
        estimate = result["leaderboard_estimate"]
        interval = estimate.get("interval") or {}
        out[name] = (f"15-key {_round(result['subsets']['15']['rmse'])}, 4-key "
                          f"{_round(result['subsets']['4']['rmse'])}, LB estimate "
                          f"{_round(estimate['rmse'])}"
                          + (f" [{interval['low']:.4f}, {interval['high']:.4f}]"
                             if "low" in interval else ""))
    # The figures of the override (or of the base alone), as the bench printed them before.
    out["rmse_15"] = _round(figures[last]["subsets"]["15"]["rmse"])
    out["rmse_4"] = _round(figures[last]["subsets"]["4"]["rmse"])
    out["leaderboard_estimate"] = _round(figures[last]["leaderboard_estimate"]["rmse"])
    for name in sides:
        if name != BASE:
            paired, face_groups = _against_base(args, oof, pooled, name, training, lookup,
                                                groups)
            out["bootstrap"] = (f"paired over {face_groups} face groups ({groups_from}), "
                                f"{args.resamples} resamples, seed {args.bootstrap_seed}")
            # The override keeps the plain keys the bench always printed; a lever's carry its name.
            prefix = "" if name == OVERRIDE else f"{name}_"
            out.update({prefix + key: value for key, value in paired.items()})
    out["minutes"] = round(minutes, 2)
    return out


def _against_base(args, oof: dict[str, list[pd.DataFrame]], pooled: dict[str, pd.DataFrame],
                  name: str, training, lookup, groups: np.ndarray) -> tuple[dict, int]:
    """One side against the base, paired: the difference line, the per-seed differences and
    their spread, the verdict; and how many face groups the bootstrap resampled."""
    result = compare.compare_oof(pooled[BASE], pooled[name], training, lookup, groups,
                                 names=(BASE, name), resamples=args.resamples,
                                 seed=args.bootstrap_seed)
    main = result["figures"][0]
    out = {"difference": f"{main['measure']} B - A {main['difference']:+.4f} "
                         f"[{main['low']:+.4f}, {main['high']:+.4f}] {main['verdict']}"}
    if args.seeds > 1:
        per_seed = [_estimate(side, training, lookup) - _estimate(base, training, lookup)
                    for base, side in zip(oof[BASE], oof[name])]
        out["seed_differences"] = " ".join(f"{d:+.4f}" for d in per_seed)
        out["seed_spread"] = round(float(np.std(per_seed, ddof=1)), 4)
    out["verdict"] = compare.headline(result)
    return out, result["groups"]


def _estimate(oof: pd.DataFrame, training, lookup) -> float:
    estimate = report.compute(oof, training, lookup)["leaderboard_estimate"]["rmse"]
    return float("nan") if estimate is None else estimate


def _round(value) -> float | None:
    return None if value is None else round(value, 4)
