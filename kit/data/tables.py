"""The competition's tables as arrays: parse, validate, cache.

Images are uint8 (N, 96, 96); keypoints float32 (N, 30) in Kaggle's column order with NaN where
a value is missing. Every problem is a KitError naming the file, the line and what was expected.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core import fileio
from kit.core.errors import KitError
from kit.core.keypoints import COLUMN_INDEX, COLUMNS, CORE_COLUMN_INDICES, IMAGE_SIZE, PIXELS

TRAINING_CSV = "training.csv"
TEST_CSV = "test.csv"
LOOKUP_CSV = "IdLookupTable.csv"
SAMPLE_CSV = "SampleSubmission.csv"
CSV_FILES = (TRAINING_CSV, TEST_CSV, LOOKUP_CSV, SAMPLE_CSV)
CACHE_VERSION = 1
# A number field longer than this is parsed field by field (it is almost surely not a number).
MAX_NUMBER_CHARS = 64


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
    columns: np.ndarray  # int64 (R,) index into kit.keypoints.COLUMNS

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


def _bad_token(field: bytes) -> str:
    """The first token of an Image field that is not an integer 0-255 (the slow, exact path)."""
    for token in field.split():
        if not token.isdigit() or int(token) > 255:
            return token.decode("latin-1")[:20]
    return ""


def _parse_rows(fields: list[bytes], images: np.ndarray, first: int) -> int | None:
    """Parse fields into images[first:first + len(fields)]; the first bad row, or None."""
    for offset, field in enumerate(fields):
        try:
            # int64: numpy saturates there, where a 32-bit parse would wrap 4294967301 to 5.
            values = np.fromstring(field, sep=" ", dtype=np.int64)
        except ValueError:  # text that is not integers (older numpy warns and stops instead)
            return first + offset
        if len(values) != PIXELS or values.min() < 0 or values.max() > 255:
            return first + offset
        images[first + offset] = values
    return None


def parse_pixels(fields: list[bytes], path: Path, first_line: int) -> np.ndarray:
    """Image fields ("12 250 3 ...") to uint8 (N, 96, 96).

    numpy's C text parser per row: a Python `split` per row makes 65 million string objects
    on Kaggle's 7049 rows (about 20 s); this makes none, and it runs on every core because
    numpy's parser releases the GIL.
    """
    images = np.empty((len(fields), PIXELS), np.uint8)
    workers = max(1, min(os.cpu_count() or 1, 8, len(fields)))
    bounds = np.linspace(0, len(fields), workers + 1).astype(int)
    with warnings.catch_warnings():
        # On text it cannot parse numpy stops early with a warning; the count check reports it.
        warnings.simplefilter("ignore", DeprecationWarning)
        with ThreadPoolExecutor(workers) as pool:
            bad_rows = list(pool.map(
                lambda span: _parse_rows(fields[span[0]:span[1]], images, span[0]),
                itertools.pairwise(bounds),
            ))
    bad_rows = [row for row in bad_rows if row is not None]
    if bad_rows:
        row = min(bad_rows)
        token = _bad_token(fields[row])
        if token:
            problem = f"Image holds {token!r}; expected integers 0-255 separated by spaces"
        else:
            count = len(fields[row].split())
            problem = f"Image has {count} values; expected {PIXELS} (96x96)"
        raise KitError(f"{path}: line {first_line + row}: {problem}")
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise KitError(f"{path}: file not found; run `make download` first") from None
    except OSError as error:
        raise KitError(f"{path}: cannot read ({error.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        # Spreadsheet programs add a UTF-8 byte order mark; the content is still valid.
        raw = raw[3:]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise KitError(f"{path}: line 1: the file is UTF-16 text; expected UTF-8 (save it as "
                       "UTF-8 CSV)")
    if not raw.strip():
        raise KitError(f"{path}: file is empty; expected a CSV with a header line")
    return raw


def _unquote(text: str) -> str | None:
    """A field without the quotes a CSV writer may put round it; None for a stray quote."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return None if '"' in text else text


def _listing(names: list[str], most: int = 5) -> str:
    """Names for a one-line message: quoted (an empty name shows as ''), at most `most`."""
    shown = ", ".join(repr(name[:40]) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _header(line: bytes, path: Path, expected: tuple[str, ...], ordered: bool) -> list[str]:
    try:
        fields = line.decode("utf-8").split(",")
    except UnicodeDecodeError:
        raise KitError(f"{path}: line 1 is not UTF-8 text; expected a CSV header") from None
    names = [_unquote(field) for field in fields]
    if None in names:
        field = fields[names.index(None)].strip()
        raise KitError(f"{path}: line 1: column name {field!r} has a stray quote; expected "
                       f"{','.join(expected)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KitError(f"{path}: line 1: duplicate columns {_listing(duplicates)}")
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {_listing(missing)}")
        if extra:
            parts.append(f"unexpected columns {_listing(extra)}")
        raise KitError(f"{path}: line 1: {'; '.join(parts)}")
    if ordered and tuple(names) != expected:
        raise KitError(f"{path}: line 1: columns out of order; expected {','.join(expected)}")
    return names


def _split_image_field(raw: bytes, path: Path, prefix_fields: int) -> tuple[list, list]:
    """Each data row into (the fields before Image, the Image field), Image being the last
    column; slices of the file's bytes without first splitting it into lines (a 230 MB copy)."""
    prefixes, images = [], []
    position = raw.index(b"\n") + 1 if b"\n" in raw else len(raw)
    number = 1
    while position < len(raw):
        number += 1
        end = raw.find(b"\n", position)
        end = len(raw) if end < 0 else end
        stop = end - 1 if end > position and raw[end - 1] == 13 else end  # CRLF
        comma = raw.rfind(b",", position, stop)
        if stop == position or raw[position:stop].isspace():
            raise KitError(f"{path}: line {number} is empty; expected a CSV row")
        prefix = raw[position:comma] if comma >= 0 else b""
        if comma < 0 or prefix.count(b",") != prefix_fields - 1:
            found = raw.count(b",", position, stop) + 1
            raise KitError(f"{path}: line {number}: {found} fields; expected {prefix_fields + 1}")
        image = raw[comma + 1 : stop]
        if image.startswith(b'"'):
            if not image.endswith(b'"') or len(image) < 2:
                raise KitError(f"{path}: line {number}: unbalanced quote in the Image field")
            image = image[1:-1]
        prefixes.append(prefix)
        images.append(image)
        position = end + 1
    if not images:
        raise KitError(f"{path}: no data rows after the header")
    return prefixes, images


def _first_line(raw: bytes) -> bytes:
    end = raw.find(b"\n")
    line = raw if end < 0 else raw[:end]
    return line[:-1] if line.endswith(b"\r") else line


def _field_number(field: bytes | str) -> float | None:
    """One field as a float: NaN when empty, None when it is no number (or a literal NaN)."""
    text = field.decode("utf-8", errors="replace") if isinstance(field, bytes) else field
    text = _unquote(text)
    if text is None:
        return None
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _floats(fields: list[bytes] | list[str]) -> tuple[np.ndarray, int | None]:
    """Fields as float64 (NaN where empty) and the index of the first that is no number.

    Not pandas.to_numeric: pandas < 3 crashes the interpreter on an exponent such as
    "1e2147483648" (pandas-dev/pandas#63650). numpy converts text with Python's float rules."""
    # One long field would make a numpy array of that width for every field: Python instead.
    if max(map(len, fields)) > MAX_NUMBER_CHARS:
        return _floats_in_python(fields)
    array = np.array(fields)
    empty = array == array.dtype.type()
    try:
        values = np.where(empty, array.dtype.type("nan"), array).astype(np.float64)
        if not np.isnan(values[~empty]).any():  # "nan" written out is not a missing value
            return values, None
    except ValueError:  # spaces round quotes, a stray quote, text: field by field, in Python
        pass
    return _floats_in_python(fields)


def _floats_in_python(fields: list[bytes] | list[str]) -> tuple[np.ndarray, int | None]:
    numbers = [_field_number(field) for field in fields]
    bad = next((i for i, number in enumerate(numbers) if number is None), None)
    values = np.array([np.nan if number is None else number for number in numbers], np.float64)
    return values, bad


def _shown(field: bytes | str) -> str:
    text = field.decode("utf-8", errors="replace") if isinstance(field, bytes) else field
    return repr(text.strip()[:40])


def _numeric_table(
    prefixes: list[bytes], names: list[str], path: Path,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """The comma-separated fields before Image as float64 (rows, len(names)), NaN where
    empty; with bounds, every value present must lie in [low, high]."""
    width = len(names)
    # Each prefix holds exactly width - 1 commas (_split_image_field checked): one flat split.
    fields = b",".join(prefixes).split(b",")
    values, bad = _floats(fields)
    if bad is not None:
        row, column = divmod(bad, width)
        raise KitError(f"{path}: line {row + 2}: {names[column]} is {_shown(fields[bad])}; "
                       "expected a number")
    if bounds is not None:
        low, high = bounds
        with np.errstate(invalid="ignore"):
            outside = ~np.isnan(values) & ~((values >= low) & (values <= high))
        if outside.any():
            row, column = divmod(int(np.flatnonzero(outside)[0]), width)
            raise KitError(
                f"{path}: line {row + 2}: {names[column]} is {_shown(fields[row * width + column])}"
                f"; expected a coordinate in [{low:g}, {high:g}]"
            )
    return values.reshape(len(prefixes), width)


def parse_training(path: Path) -> TrainingSet:
    path = Path(path)
    raw = _read_bytes(path)
    names = _header(_first_line(raw), path, COLUMNS + ("Image",), ordered=False)
    if names[-1] != "Image":
        raise KitError(f"{path}: line 1: Image must be the last column")
    prefixes, fields = _split_image_field(raw, path, len(COLUMNS))
    # The range is checked in float64, on the file's text: 1e308 would overflow float32.
    table = _numeric_table(prefixes, names[:-1], path, bounds=(0.0, float(IMAGE_SIZE)))
    keypoints = table[:, [names.index(column) for column in COLUMNS]].astype(np.float32)
    images = parse_pixels(fields, path, first_line=2)
    return TrainingSet(images=images, keypoints=keypoints)


def parse_test(path: Path) -> TestSet:
    path = Path(path)
    raw = _read_bytes(path)
    _header(_first_line(raw), path, ("ImageId", "Image"), ordered=True)
    prefixes, fields = _split_image_field(raw, path, 1)
    lines = np.arange(len(prefixes)) + 2
    texts = [prefix.decode("utf-8", errors="replace") for prefix in prefixes]
    image_ids = _unique(_integers(texts, lines, path, "ImageId"), lines, path, "ImageId")
    images = parse_pixels(fields, path, first_line=2)
    return TestSet(images=images, image_ids=image_ids)


def _integers(texts: list[str], lines: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A column of ids as int64; each must be an integer >= 1. lines: each row's file line."""
    values, _ = _floats(texts)  # no number, or empty: NaN, refused below
    with np.errstate(invalid="ignore"):
        bad = ~((values == np.round(values)) & (values >= 1) & (values < 2.0**53))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = f"is {texts[row].strip()!r}" if texts[row].strip() else "is empty"
        raise KitError(f"{path}: line {lines[row]}: {name} {shown}; expected an integer >= 1")
    return values.astype(np.int64)


def _first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """(row of the earliest second appearance of a value, row of its first), or None."""
    order = np.argsort(values, kind="stable")
    repeats = np.flatnonzero(values[order][1:] == values[order][:-1])
    if not len(repeats):
        return None
    row = int(order[1:][repeats].min())
    return row, int(np.flatnonzero(values == values[row])[0])


def _unique(ids: np.ndarray, lines: np.ndarray, path: Path, name: str) -> np.ndarray:
    """ids, refused where one repeats: the message names the line of its second appearance."""
    repeat = _first_repeat(ids)
    if repeat is not None:
        row, first = repeat
        raise KitError(f"{path}: line {lines[row]}: duplicate {name} {ids[row]} (first at line "
                       f"{lines[first]}); expected each {name} once")
    return ids


def _small_csv(
    path: Path, expected: tuple[str, ...], required: tuple[str, ...]
) -> tuple[dict[str, list[str]], np.ndarray]:
    """A small CSV's columns as lists of text, and each row's line in the file (for messages).

    Read with the csv module, row by row, so that a blank line or a row with too few fields is
    reported at its own line rather than skipped or padded. Two habits of Kaggle's own
    IdLookupTable.csv are accepted: lines ending in CR CR LF (a CR LF written through a text-mode
    file on Windows) and rows without the trailing empty Location field."""
    raw = _read_bytes(path)
    _header(_first_line(raw), path, expected, ordered=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise KitError(f"{path}: line {line} is not UTF-8 text; expected a CSV row") from None
    text = text.replace("\r\r\n", "\n")
    optional_tail = len(expected)
    while optional_tail > 0 and expected[optional_tail - 1] not in required:
        optional_tail -= 1
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, lines = [], []
    try:
        next(reader)  # the header, checked above
        for row in reader:
            if len(row) != len(expected):
                if not row or len(row) == 1 and not row[0].strip():
                    raise KitError(f"{path}: line {reader.line_num} is empty; expected a CSV row")
                if not optional_tail <= len(row) < len(expected):
                    raise KitError(f"{path}: line {reader.line_num}: {len(row)} fields; "
                                   f"expected {len(expected)} ({','.join(expected)})")
                row = row + [""] * (len(expected) - len(row))
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise KitError(f"{path}: line {reader.line_num}: a quote is not closed or is followed "
                       f"by text ({error}); expected {len(expected)} fields") from None
    if not rows:
        raise KitError(f"{path}: no data rows after the header")
    columns = {name: list(values) for name, values in zip(expected, zip(*rows))}
    for name in required:
        for row, value in enumerate(columns[name]):
            if not value.strip():
                raise KitError(f"{path}: line {lines[row]}: {name} is empty; expected a value")
    return columns, np.array(lines)


def parse_lookup(path: Path, test_image_ids: np.ndarray | None = None) -> LookupTable:
    """IdLookupTable.csv; with the test ImageIds, also checks that every image it names exists."""
    path = Path(path)
    table, lines = _small_csv(path, ("RowId", "ImageId", "FeatureName", "Location"),
                              ("RowId", "ImageId", "FeatureName"))
    row_ids = _unique(_integers(table["RowId"], lines, path, "RowId"), lines, path, "RowId")
    image_ids = _integers(table["ImageId"], lines, path, "ImageId")
    features = [feature.strip() for feature in table["FeatureName"]]
    columns = np.array([COLUMN_INDEX.get(feature, -1) for feature in features], dtype=np.int64)
    if (columns < 0).any():
        row = int(np.flatnonzero(columns < 0)[0])
        raise KitError(
            f"{path}: line {lines[row]}: unknown FeatureName {features[row]!r}; expected "
            "one of Kaggle's 30 keypoint columns such as left_eye_center_x"
        )
    repeat = _first_repeat(image_ids * len(COLUMNS) + columns)
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
    table, lines = _small_csv(path, ("RowId", "Location"), ("RowId",))
    return _unique(_integers(table["RowId"], lines, path, "RowId"), lines, path, "RowId")


# ---------------------------------------------------------------- the cache


# Timestamps are coarse (a kernel tick; 2 s on FAT), so a file rewritten just after it was
# hashed can keep its size and mtime. A memo is trusted only for a file last changed this long
# before it was hashed (git's "racy" rule); otherwise the file is hashed again.
RACY_NS = 2_000_000_000

# What a cached array must look like: dtype and the shape after the row count.
CACHED_ARRAYS = {
    "images": (np.uint8, (IMAGE_SIZE, IMAGE_SIZE)),
    "keypoints": (np.float32, (len(COLUMNS),)),
    "image_ids": (np.int64, ()),
}


def _content_key(path: Path, cache_dir: Path) -> str:
    """sha256 of a file's bytes, remembered by (size, mtime, inode) so a reload need not
    re-hash it."""
    stat = path.stat()
    stamp = f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}"
    memo = cache_dir / f"{path.name}.sha256.json"
    try:
        known = json.loads(memo.read_text())
        if known["stamp"] == stamp and stat.st_mtime_ns < known["hashed_at_ns"] - RACY_NS:
            return known["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    hashed_at_ns = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    fileio.write_json(memo, {"stamp": stamp, "hashed_at_ns": hashed_at_ns,
                             "sha256": digest.hexdigest()})
    return digest.hexdigest()


def _read_cache(cache: Path, names: tuple[str, ...]) -> dict | None:
    """The cached arrays, or None when the file is missing, damaged or not what we wrote."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in names}
    except Exception:  # noqa: BLE001 - any failure to read a cache means: parse the CSV again
        return None
    rows = {len(array) if array.ndim else -1 for array in arrays.values()}
    for name, array in arrays.items():
        dtype, shape = CACHED_ARRAYS[name]
        if array.dtype != dtype or array.shape[1:] != shape or len(rows) != 1:
            return None
    return arrays


def _cached(path: Path, cache_dir: Path, parse, names: tuple[str, ...]) -> dict:
    """The named arrays of a parsed CSV, from cache_dir when its content hash is known."""
    key = _content_key(path, cache_dir)[:16]
    cache = cache_dir / f"{path.stem}-v{CACHE_VERSION}-{key}.npz"
    if cache.exists():
        arrays = _read_cache(cache, names)
        if arrays is not None:
            return arrays
    parsed = parse(path)
    arrays = {name: getattr(parsed, name) for name in names}
    for stale in cache_dir.glob(f"{path.stem}-v*.npz"):
        stale.unlink(missing_ok=True)
    with fileio.atomic_path(cache) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)
    return arrays


def _load(data_dir: Path, file_name: str, parse, kind, use_cache: bool):
    """A parsed table, from the cache when the CSV's content has not changed."""
    path = Path(data_dir) / file_name
    if not use_cache:
        return parse(path)
    if not path.exists():
        raise KitError(f"{path}: file not found; run `make download` first")
    names = tuple(field.name for field in dataclasses.fields(kind))
    return kind(**_cached(path, Path(data_dir) / "cache", parse, names))


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
