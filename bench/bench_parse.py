"""Parsing a Kaggle-size training.csv (7049 rows, built by repeating the practice rows) and
reloading it from the cache. Targets: parse <= 2 s, cache reload <= 0.3 s on 2 cores."""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from bench.common import PRACTICE_ZIP, median_seconds
from kit.data import tables

KAGGLE_ROWS = 7049


def kaggle_size_training_csv(folder: Path) -> Path:
    with zipfile.ZipFile(PRACTICE_ZIP) as outer, \
            zipfile.ZipFile(outer.open("training.zip")) as inner:
        lines = inner.read("training.csv").split(b"\n")
    header, rows = lines[0], [line for line in lines[1:] if line]
    body = [rows[i % len(rows)] for i in range(KAGGLE_ROWS)]
    path = folder / "training.csv"
    path.write_bytes(b"\n".join([header, *body]) + b"\n")
    return path


def run() -> dict:
    if not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    folder = Path(tempfile.mkdtemp(prefix="kit-bench-parse-"))
    try:
        path = kaggle_size_training_csv(folder)
        parse = median_seconds(lambda: tables.parse_training(path))
        tables.load_training(folder)  # fills the cache
        reload = median_seconds(lambda: tables.load_training(folder), repeats=5)
        return {
            "csv_mb": round(path.stat().st_size / 1e6, 1),
            "rows": KAGGLE_ROWS,
            "parse_s": round(parse, 3),
            "parse_target_s": 2.0,
            "cache_reload_s": round(reload, 3),
            "cache_reload_target_s": 0.3,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    print(run())
