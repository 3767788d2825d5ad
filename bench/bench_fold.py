"""Accuracy of one fold on the practice competition: a preset (with overrides) trained on the
training rows of fold 0, scored on its held-out rows, in about a fifth of `make cv`'s time.

    python -m bench fold [--preset P] [--fold K] [--teacher RUN_DIR] [KEY=VALUE ...]

With --teacher (a finished run of the practice data, anywhere), the fold is a second pass
taught by it: its folds and its fold-k model's lessons (add `pseudo_labels=1` and the like).

Prints the held-out RMSE of each subset and the leaderboard-weighted estimate (report.md's
formula) with the wall time. One fold moves by a few hundredths between seeds: the README's
ablation rows are fold-0 figures, the headline rows full `make cv` runs.
"""
from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import PRACTICE_ZIP
from kit import config as config_io
from kit.data import download, tables
from kit.model import heads
from kit.results import report, teacher
from kit.runs import cv, folds
from kit.training import engine


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench fold")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--teacher", type=Path, default=None, metavar="RUN_DIR")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv or [])
    if not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    overrides = args.overrides + ([f"teacher={args.teacher.name}"] if args.teacher else [])
    config = config_io.override(config_io.preset(args.preset), overrides)
    folder = Path(tempfile.mkdtemp(prefix="kit-bench-fold-"))
    try:
        download.download(folder / "data", archive=PRACTICE_ZIP)
        training = tables.load_training(folder / "data")
        lookup = tables.load_lookup(folder / "data")
        teaching = teacher.prepare_from(config, args.teacher.parent, training,
                                        folder / "data", lookup) if args.teacher else None
        assignment = teaching.assignment if teaching else folds.assign_folds(config, training)
        started = time.perf_counter()
        oof_parts = []
        for network in heads.networks(config):
            lesson = (functools.partial(teaching.lesson, config, network, training, assignment)
                      if teaching else None)
            cv.train_network(config, training, folder / "run", network, assignment,
                             engine.Listener(), engine.Stats(), only=(args.fold,),
                             lesson=lesson)
            oof_parts += cv.fold_oof(config, training, folder / "run", network, args.fold)
        minutes = (time.perf_counter() - started) / 60
        figures = report.compute(pd.concat(oof_parts, ignore_index=True), training, lookup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "preset": args.preset,
        "overrides": " ".join(args.overrides) or "none",
        "teacher": str(args.teacher or "none"),
        "fold": args.fold,
        "rmse_15": round(figures["subsets"]["15"]["rmse"], 4),
        "rmse_4": round(figures["subsets"]["4"]["rmse"], 4),
        "leaderboard_estimate": round(figures["leaderboard_estimate"]["rmse"], 4),
        "minutes": round(minutes, 2),
    }


if __name__ == "__main__":
    print(run())
