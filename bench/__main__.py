"""`make bench`: every speed figure of the kit on this machine, one line each, and the
accuracy of one fold of the default preset on the practice data.

python -m bench [parse|augment|train|torch|fold|cv ...]   (default: all)
python -m bench fold [--preset P] [--set KEY=VALUE] [--fold K[,K]] [--seeds N] [KEY=VALUE ...]
                     [--lever NAME=KEY=VALUE[,KEY=VALUE...] ...] [--keep DIR]
                     (the override and each lever against one base, paired, with a 95 %
                     interval; --keep DIR keeps each side's training as runs)
python -m bench cv [--preset P] [--set KEY=VALUE] [--epochs E] [--size practice|kaggle]
                   [--engine new|old]
python -m bench folds [--folds K] [--similarity S ...]   (held-out faces against the test's)
python -m bench labels [--similarity S ...]   (the labels' noise floor: near-identical frames)
python -m bench tta RUN [--data DIR] [--views NAME ...]   (test-time views of a finished run)
python -m bench widths [--preset P] [--widen F ...]   (train-step cost of wider networks)
"""
from __future__ import annotations

import os
import sys

from kit.training import runtime

# Before the suites import JAX: as `python -m kit` does (kit/__main__.py).
runtime.prepare_process()

from bench import (
    bench_augment,
    bench_cv,
    bench_fold,
    bench_folds,
    bench_labels,
    bench_parse,
    bench_torch,
    bench_train,
    bench_tta,
    bench_widths,
)

SUITES = {
    "parse": bench_parse.run,
    "augment": bench_augment.run,
    "train": bench_train.run,
    "torch": bench_torch.run,
    "fold": bench_fold.run,
    "folds": bench_folds.run,
    "labels": bench_labels.run,
    # In `make bench`: v1 for 3 epochs on both engines, side by side.
    "cv": lambda: bench_cv.run(["--epochs", "3"]),
    "cv-old": lambda: bench_cv.run(["--epochs", "3", "--engine", "old"]),
}
WITH_ARGUMENTS = {"fold": bench_fold.run, "folds": bench_folds.run, "labels": bench_labels.run,
                  "cv": bench_cv.run, "tta": bench_tta.run, "widths": bench_widths.run}


def main(argv: list[str]) -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine slows every figure)")
    if argv[:1] and argv[0] in WITH_ARGUMENTS and (len(argv) > 1 or argv[0] not in SUITES):
        runs = [(argv[0], lambda: WITH_ARGUMENTS[argv[0]](argv[1:]))]
    else:
        unknown = [name for name in argv if name not in SUITES]
        if unknown:
            sys.exit(f"unknown suite {unknown[0]!r}: expected one of {', '.join(SUITES)}")
        runs = [(name, SUITES[name]) for name in argv or list(SUITES)]
    for name, suite in runs:
        result = suite()
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
