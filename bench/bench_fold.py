"""Accuracy of one fold (or a few) on the practice competition: an override against the base
it changes, both trained on the same folds with the same seeds, the difference with a 95 %
interval from a paired bootstrap over face groups (kit/results/compare.py), in about a fifth
of `make cv`'s time per fold, seed and side.

    python -m bench fold [--preset P] [--set KEY=VALUE ...] [--fold K[,K...]] [--seeds N]
                         [--teacher RUN_DIR] [--data DIR] [--resamples B] [KEY=VALUE ...]

The base is the preset with every --set; the override is the base with the KEY=VALUEs (none:
the base alone, its estimate and interval). --seeds N trains both N times, train.seed the
base's and the next N-1, on the same folds (the folds follow the run's seed): the interval is
over the pooled seeds, and the spread of the per-seed differences is printed beside it.

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
from kit.runs import cv, folds
from kit.training import loop


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
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv or [])
    if args.data is None and not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    if args.seeds < 1:
        raise SystemExit(f"--seeds {args.seeds}: expected at least 1")
    teacher_setting = [f"teacher={args.teacher.name}"] if args.teacher else []
    base = config_io.override(config_io.preset(args.preset), args.set + teacher_setting)
    sides = {"base": base}
    if args.overrides:
        sides["override"] = config_io.override(base, args.overrides)
    folder = Path(tempfile.mkdtemp(prefix="kit-bench-fold-"))
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
        for repeat in range(args.seeds):
            for name, config in sides.items():
                config = config_io.override(config, [f"train.seed={base.train.seed + repeat}"])
                part = _train_folds(config, training, assignments[name], teachings[name],
                                    args.fold, folder / f"{name}-{repeat}")
                oof[name].append(part.assign(**{compare.REPEAT: repeat}))
        minutes = (time.perf_counter() - started) / 60
        groups, groups_from = report.groups_of(assignments["base"], base.group_similarity,
                                               training)
        return _figures(args, sides, oof, training, lookup, groups, groups_from, minutes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def _figures(args, sides: dict, oof: dict[str, list[pd.DataFrame]], training, lookup,
             groups: np.ndarray, groups_from: str, minutes: float) -> dict:
    """What the bench prints: each side's figures (pooled over seeds), B - A and its interval,
    the per-seed differences and their spread."""
    pooled = {name: pd.concat(parts, ignore_index=True) for name, parts in oof.items()}
    figures = {name: report.compute(table, training, lookup, groups=groups)
               for name, table in pooled.items()}
    last = "override" if "override" in sides else "base"
    out = {"preset": args.preset, "set": " ".join(args.set) or "none",
           "overrides": " ".join(args.overrides) or "none",
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
    if "override" in sides:
        result = compare.compare_oof(pooled["base"], pooled["override"], training, lookup,
                                     groups, names=("base", "override"),
                                     resamples=args.resamples, seed=args.bootstrap_seed)
        main = result["figures"][0]
        out["difference"] = (f"{main['measure']} B - A {main['difference']:+.4f} "
                             f"[{main['low']:+.4f}, {main['high']:+.4f}] {main['verdict']}")
        out["bootstrap"] = (f"paired over {result['groups']} face groups ({groups_from}), "
                            f"{args.resamples} resamples, seed {args.bootstrap_seed}")
        if args.seeds > 1:
            per_seed = [_estimate(override, training, lookup) - _estimate(base, training, lookup)
                        for base, override in zip(oof["base"], oof["override"])]
            out["seed_differences"] = " ".join(f"{d:+.4f}" for d in per_seed)
            out["seed_spread"] = round(float(np.std(per_seed, ddof=1)), 4)
        out["verdict"] = compare.headline(result)
    out["minutes"] = round(minutes, 2)
    return out


def _estimate(oof: pd.DataFrame, training, lookup) -> float:
    estimate = report.compute(oof, training, lookup)["leaderboard_estimate"]["rmse"]
    return float("nan") if estimate is None else estimate


def _round(value) -> float | None:
    return None if value is None else round(value, 4)
