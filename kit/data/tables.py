"""The competition's tables as arrays: parse, validate, cache.

Images are uint8 (N, 96, 96); keypoints float32 (N, 30) in Kaggle's column order with NaN where
a value is missing. Every problem is a KitError naming the file, the line and what was expected.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core.errors import KitError
from kit.core.keypoints import COLUMN_INDEX, COLUMNS, CORE_COLUMN_INDICES, IMAGE_SIZE
from kit.data import cache
from kit.data.csv_fields import (
    first_line,
    first_repeat,
    header,
    integers,
    numeric_table,
    parse_pixels,
    read_bytes,
    small_csv,
    split_image_field,
    unique,
)

TRAINING_CSV = "training.csv"
TEST_CSV = "test.csv"
LOOKUP_CSV = "IdLookupTable.csv"
SAMPLE_CSV = "SampleSubmission.csv"
CSV_FILES = (TRAINING_CSV, TEST_CSV, LOOKUP_CSV, SAMPLE_CSV)


@dataclass(frozen=True)
class TrainingSet:
    """training.csv: faces and their keypoints (NaN where the annotator gave none)."""

    images: np.ndarray  # uint8 (N, 96, 96)
    keypoints: np.ndarray  # float32 (N, 30)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class TestSet:
    """test.csv: faces to predict, named by ImageId."""

    images: np.ndarray  # uint8 (N, 96, 96)
    image_ids: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class LookupTable:
    """IdLookupTable.csv: which value of which image each submission row answers."""

    row_ids: np.ndarray  # int64 (R,)
    image_ids: np.ndarray  # int64 (R,)
    columns: np.ndarray  # int64 (R,) index into kit.core.keypoints.COLUMNS

    def __len__(self) -> int:
        return len(self.row_ids)


# ---------------------------------------------------------------- subsets


def subset_indices(keypoints: np.ndarray, subset: str) -> np.ndarray:
    """Rows a subset's model trains on: "15" all 30 values present, "4" the 8 core ones."""
    present = ~np.isnan(keypoints)
    if subset == "15":
        return np.flatnonzero(present.all(axis=1))
    if subset == "4":
        return np.flatnonzero(present[:, CORE_COLUMN_INDICES].all(axis=1))
    raise KitError(f"unknown subset {subset!r}: expected '15' or '4'")


def missing_patterns(keypoints: np.ndarray) -> list[tuple[tuple[str, ...], int]]:
    """Each distinct set of missing keypoint names with its row count, commonest first."""
    # A keypoint is missing when either of its two values is (Kaggle's rows miss both together,
    # but a hand-edited file need not).
    missing = np.isnan(keypoints).reshape(len(keypoints), -1, 2).any(axis=2)
    patterns, counts = np.unique(missing, axis=0, return_counts=True)
    names = [c[:-2] for c in COLUMNS[0::2]]
    out = [(tuple(n for n, m in zip(names, row) if m), int(k)) for row, k in zip(patterns, counts)]
    return sorted(out, key=lambda item: -item[1])


# ---------------------------------------------------------------- images


def parse_training(path: Path) -> TrainingSet:
    path = Path(path)
    raw = read_bytes(path)
    names = header(first_line(raw), path, COLUMNS + ("Image",), ordered=False)
    if names[-1] != "Image":
        raise KitError(f"{path}: line 1: Image must be the last column")
    prefixes, fields = split_image_field(raw, path, len(COLUMNS))
    # The range is checked in float64, on the file's text: 1e308 would overflow float32.
    table = numeric_table(prefixes, names[:-1], path, bounds=(0.0, float(IMAGE_SIZE)))
    keypoints = table[:, [names.index(column) for column in COLUMNS]].astype(np.float32)
    images = parse_pixels(fields, path, first_line=2)
    return TrainingSet(images=images, keypoints=keypoints)


def parse_test(path: Path) -> TestSet:
    path = Path(path)
    raw = read_bytes(path)
    header(first_line(raw), path, ("ImageId", "Image"), ordered=True)
    prefixes, fields = split_image_field(raw, path, 1)
    lines = np.arange(len(prefixes)) + 2
    texts = [prefix.decode("utf-8", errors="replace") for prefix in prefixes]
    image_ids = unique(integers(texts, lines, path, "ImageId"), lines, path, "ImageId")
    images = parse_pixels(fields, path, first_line=2)
    return TestSet(images=images, image_ids=image_ids)


def parse_lookup(path: Path, test_image_ids: np.ndarray | None = None) -> LookupTable:
    """IdLookupTable.csv; with the test ImageIds, also checks that every image it names exists."""
    path = Path(path)
    table, lines = small_csv(path, ("RowId", "ImageId", "FeatureName", "Location"),
                              ("RowId", "ImageId", "FeatureName"))
    row_ids = unique(integers(table["RowId"], lines, path, "RowId"), lines, path, "RowId")
    image_ids = integers(table["ImageId"], lines, path, "ImageId")
    features = [feature.strip() for feature in table["FeatureName"]]
    columns = np.array([COLUMN_INDEX.get(feature, -1) for feature in features], dtype=np.int64)
    if (columns < 0).any():
        row = int(np.flatnonzero(columns < 0)[0])
        raise KitError(
            f"{path}: line {lines[row]}: unknown FeatureName {features[row]!r}; expected "
            "one of Kaggle's 30 keypoint columns such as left_eye_center_x"
        )
    repeat = first_repeat(image_ids * len(COLUMNS) + columns)
    if repeat is not None:
        row, first = repeat
        raise KitError(
            f"{path}: line {lines[row]}: ImageId {image_ids[row]} asks {features[row]} again "
            f"(first at line {lines[first]}); expected each value asked once"
        )
    if test_image_ids is not None:
        unknown_images = ~np.isin(image_ids, test_image_ids)
        if unknown_images.any():
            row = int(np.flatnonzero(unknown_images)[0])
            raise KitError(
                f"{path}: line {lines[row]}: ImageId {image_ids[row]} is not in test.csv; "
                "expected the ImageIds of test.csv"
            )
    return LookupTable(row_ids=row_ids, image_ids=image_ids, columns=columns)


def parse_sample(path: Path) -> np.ndarray:
    """SampleSubmission.csv's RowIds, in its order."""
    path = Path(path)
    table, lines = small_csv(path, ("RowId", "Location"), ("RowId",))
    return unique(integers(table["RowId"], lines, path, "RowId"), lines, path, "RowId")


# ---------------------------------------------------------------- the cache


# Timestamps are coarse (a kernel tick; 2 s on FAT), so a file rewritten just after it was
# hashed can keep its size and mtime. A memo is trusted only for a file last changed this long
# before it was hashed (git's "racy" rule); otherwise the file is hashed again.
def _load(data_dir: Path, file_name: str, parse, kind, use_cache: bool):
    """A parsed table, from the cache when the CSV's content has not changed."""
    path = Path(data_dir) / file_name
    if not use_cache:
        return parse(path)
    if not path.exists():
        raise KitError(f"{path}: file not found; run `make download` first")
    names = tuple(field.name for field in dataclasses.fields(kind))
    return kind(**cache.cached(path, Path(data_dir) / "cache", parse, names))


def load_training(data_dir: Path, use_cache: bool = True) -> TrainingSet:
    return _load(data_dir, TRAINING_CSV, parse_training, TrainingSet, use_cache)


def load_test(data_dir: Path, use_cache: bool = True) -> TestSet:
    return _load(data_dir, TEST_CSV, parse_test, TestSet, use_cache)


def load_lookup(data_dir: Path, test_image_ids: np.ndarray | None = None) -> LookupTable:
    return parse_lookup(Path(data_dir) / LOOKUP_CSV, test_image_ids)


def load_sample(data_dir: Path) -> np.ndarray:
    return parse_sample(Path(data_dir) / SAMPLE_CSV)


def validate_all(data_dir: Path) -> dict:
    """Parse every file (filling the cache) and check them against each other."""
    data_dir = Path(data_dir)
    training = load_training(data_dir)
    test = load_test(data_dir)
    lookup = load_lookup(data_dir, test.image_ids)
    sample = load_sample(data_dir)
    if len(sample) != len(lookup) or not np.array_equal(sample, lookup.row_ids):
        raise KitError(
            f"{data_dir / SAMPLE_CSV}: its {len(sample)} RowIds differ from the "
            f"{len(lookup)} RowIds of {LOOKUP_CSV}; expected the same RowIds in the same order"
        )
    return {
        "training_rows": len(training),
        "test_images": len(test),
        "lookup_rows": len(lookup),
    }
