"""Test-time views on a finished run: each fold's models predict their held-out rows again
under other views, and the OOF RMSE and leaderboard estimate (report.md's formula) of each
set of views is printed beside the run's own. Nothing is trained; the run is left as it was.

    python -m bench tta RUN [--data DIR] [--views NAME ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from kit.data import tables
from kit.kaggle import places
from kit.model import tasks
from kit.results import report
from kit.runs import cv, files, folds, predict

# Name -> the TTA settings it sets on the run's config.
VIEWS = {
    "none": {"flip_tta": False, "tta_shift": 0.0},
    "flip": {"tta_shift": 0.0},
    "run": {},  # the run's own
    "zoom": {"tta_zoom": 0.04},
    "rotate": {"tta_rotate": 5.0},
    "zoom+rotate": {"tta_zoom": 0.04, "tta_rotate": 5.0},
}


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench tta")
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=places.default_data_dir())
    parser.add_argument("--views", nargs="+", choices=list(VIEWS), default=list(VIEWS))
    args = parser.parse_args(argv)
    base = files.read_config(args.run)
    training = tables.load_training(args.data)
    lookup = tables.load_lookup(args.data, tables.load_test(args.data).image_ids)
    assignment = files.read_folds(args.run)
    folds.check_data(args.run, assignment, training)
    results = {}
    for name in args.views:
        config = dataclasses.replace(base, **VIEWS[name])
        started = time.perf_counter()
        oof_parts = []
        for network in tasks.network_names(config):
            task = tasks.task_for(network)
            for fold, model in enumerate(predict.load_fold_models(args.run, network)):
                _, rows = folds.fold_rows(assignment, network, fold)
                outputs = predict.predict_images(config, task, [model], training.images[rows])
                oof_parts += cv.oof_tables(config, training, network, fold, rows, outputs)
        figures = report.compute(pd.concat(oof_parts, ignore_index=True), training, lookup)
        results[name] = (f"15-key {figures['subsets']['15']['rmse']:.4f}, "
                         f"4-key {figures['subsets']['4']['rmse']:.4f}, "
                         f"LB estimate {figures['leaderboard_estimate']['rmse']:.4f} "
                         f"({time.perf_counter() - started:.0f} s)")
    return results
