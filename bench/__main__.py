"""`make bench`: every speed figure of the kit on this machine, one line each.

python -m bench [parse|augment|train|torch ...]   (default: all)
"""
from __future__ import annotations

import os
import sys

from bench import bench_augment, bench_parse, bench_torch, bench_train

SUITES = {
    "parse": bench_parse.run,
    "augment": bench_augment.run,
    "train": bench_train.run,
    "torch": bench_torch.run,
}


def main(names: list[str]) -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine slows every figure)")
    for name in names or list(SUITES):
        result = SUITES[name]()
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
