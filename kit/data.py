"""The competition's tables as arrays: parse, validate, cache.

Images are uint8 (N, 96, 96); keypoints float32 (N, 30) in Kaggle's column order with NaN where
a value is missing. Every problem is a KitError naming the file, the line and what was expected.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit import fileio
from kit.errors import KitError
from kit.keypoints import COLUMN_INDEX, COLUMNS, CORE_COLUMN_INDICES, IMAGE_SIZE, PIXELS

TRAINING_CSV = "training.csv"
TEST_CSV = "test.csv"
LOOKUP_CSV = "IdLookupTable.csv"
SAMPLE_CSV = "SampleSubmission.csv"
CSV_FILES = (TRAINING_CSV, TEST_CSV, LOOKUP_CSV, SAMPLE_CSV)
CACHE_VERSION = 1


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
    missing = np.isnan(keypoints[:, 0::2])
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
        values = np.fromstring(field, sep=" ", dtype=np.int32)
        if len(values) != PIXELS:
            return first + offset
        images[first + offset] = values
    return None


def parse_pixels(fields: list[bytes], path: Path, first_line: int) -> np.ndarray:
    """Image fields ("12 250 3 ...") to uint8 (N, 96, 96).

    numpy's C text parser per row: a Python `split` per row makes 65 million string objects
    on Kaggle's 7049 rows (about 20 s); this makes none, and it runs on every core because
    numpy's parser releases the GIL.
    """
    images = np.empty((len(fields), PIXELS), np.int32)
    workers = max(1, min(os.cpu_count() or 1, 8, len(fields)))
    bounds = np.linspace(0, len(fields), workers + 1).astype(int)
    with warnings.catch_warnings():
        # On text it cannot parse numpy stops early with a warning; the count check reports it.
        warnings.simplefilter("ignore", DeprecationWarning)
        with ThreadPoolExecutor(workers) as pool:
            bad_rows = list(pool.map(
                lambda span: _parse_rows(fields[span[0]:span[1]], images, span[0]),
                zip(bounds[:-1], bounds[1:]),
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
    outside = (images.min(axis=1) < 0) | (images.max(axis=1) > 255)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise KitError(
            f"{path}: line {first_line + row}: Image holds {_bad_token(fields[row])!r}; "
            "expected integers 0-255"
        )
    return images.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


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
    if not raw.strip():
        raise KitError(f"{path}: file is empty; expected a CSV with a header line")
    return raw


def _header(line: bytes, path: Path, expected: tuple[str, ...], ordered: bool) -> list[str]:
    try:
        names = [name.strip().strip('"') for name in line.decode("utf-8").split(",")]
    except UnicodeDecodeError:
        raise KitError(f"{path}: line 1 is not UTF-8 text; expected a CSV header") from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KitError(f"{path}: line 1: duplicate columns {', '.join(duplicates)}")
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected columns {', '.join(extra)}")
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


def _numeric_table(prefixes: list[bytes], names: list[str], path: Path) -> pd.DataFrame:
    text = b"\n".join(prefixes).decode("utf-8", errors="replace")
    table = pd.read_csv(
        io.StringIO(text), header=None, names=names, dtype=str, keep_default_na=False,
        quoting=3,  # QUOTE_NONE: a stray quote is data to reject, not syntax to honour
    )
    out = {}
    for name in names:
        column = table[name].str.strip().str.strip('"')
        values = pd.to_numeric(column.where(column != "", None), errors="coerce")
        bad = values.isna() & (column != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise KitError(
                f"{path}: line {row + 2}: {name} is {column.iloc[row]!r}; expected a number"
            )
        out[name] = values.to_numpy(dtype=np.float64)
    return pd.DataFrame(out)


def parse_training(path: Path) -> TrainingSet:
    path = Path(path)
    raw = _read_bytes(path)
    names = _header(_first_line(raw), path, COLUMNS + ("Image",), ordered=False)
    if names[-1] != "Image":
        raise KitError(f"{path}: line 1: Image must be the last column")
    prefixes, fields = _split_image_field(raw, path, len(COLUMNS))
    table = _numeric_table(prefixes, names[:-1], path)
    keypoints = table[list(COLUMNS)].to_numpy(dtype=np.float32)
    finite = np.isfinite(keypoints) | np.isnan(keypoints)
    outside = ~finite | (keypoints < 0) | (keypoints > IMAGE_SIZE)
    if outside.any():
        row, column = map(int, np.argwhere(outside)[0])
        raise KitError(
            f"{path}: line {row + 2}: {COLUMNS[column]} = {keypoints[row, column]!r}; "
            f"expected a coordinate in [0, {IMAGE_SIZE}]"
        )
    images = parse_pixels(fields, path, first_line=2)
    return TrainingSet(images=images, keypoints=keypoints)


def parse_test(path: Path) -> TestSet:
    path = Path(path)
    raw = _read_bytes(path)
    _header(_first_line(raw), path, ("ImageId", "Image"), ordered=True)
    prefixes, fields = _split_image_field(raw, path, 1)
    ids = _numeric_table(prefixes, ["ImageId"], path)["ImageId"].to_numpy()
    image_ids = _check_ids(ids, path, "ImageId")
    images = parse_pixels(fields, path, first_line=2)
    return TestSet(images=images, image_ids=image_ids)


def _check_ids(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    bad = np.isnan(values) | (values != np.round(values)) | (values < 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise KitError(f"{path}: line {row + 2}: {name} {values[row]!r}; expected an integer >= 1")
    ids = values.astype(np.int64)
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        value = ids[first[counts > 1][0]]
        row = int(np.flatnonzero(ids == value)[1])
        raise KitError(f"{path}: line {row + 2}: duplicate {name} {value}")
    return ids


def _small_csv(path: Path, expected: tuple[str, ...], required: tuple[str, ...]) -> pd.DataFrame:
    raw = _read_bytes(path)
    _header(_first_line(raw), path, expected, ordered=True)
    try:
        table = pd.read_csv(
            io.BytesIO(raw), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise KitError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if len(table) == 0:
        raise KitError(f"{path}: no data rows after the header")
    for name in required:
        empty = table[name].str.strip() == ""
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise KitError(f"{path}: line {row + 2}: {name} is empty")
    return table


def _integer_column(table: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(table[name].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    return _check_ids(values, path, name) if name == "RowId" else _as_int(values, path, name)


def _as_int(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    bad = np.isnan(values) | (values != np.round(values)) | (values < 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise KitError(f"{path}: line {row + 2}: {name} {values[row]!r}; expected an integer >= 1")
    return values.astype(np.int64)


def parse_lookup(path: Path, test_image_ids: np.ndarray | None = None) -> LookupTable:
    """IdLookupTable.csv; with the test ImageIds, also checks that every image it names exists."""
    path = Path(path)
    table = _small_csv(path, ("RowId", "ImageId", "FeatureName", "Location"),
                       ("RowId", "ImageId", "FeatureName"))
    row_ids = _integer_column(table, "RowId", path)
    image_ids = _as_int(
        pd.to_numeric(table["ImageId"].str.strip(), errors="coerce").to_numpy(np.float64),
        path, "ImageId",
    )
    features = table["FeatureName"].str.strip()
    unknown = ~features.isin(COLUMN_INDEX)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise KitError(
            f"{path}: line {row + 2}: unknown FeatureName {features.iloc[row]!r}; expected one "
            "of Kaggle's 30 keypoint columns such as left_eye_center_x"
        )
    columns = features.map(COLUMN_INDEX).to_numpy(dtype=np.int64)
    pairs = image_ids * 64 + columns
    _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(np.sort(first[counts > 1])[0])
        repeat = int(np.flatnonzero(pairs == pairs[row])[1])
        raise KitError(
            f"{path}: line {repeat + 2}: ImageId {image_ids[row]} asks "
            f"{features.iloc[row]} twice"
        )
    if test_image_ids is not None:
        unknown_images = ~np.isin(image_ids, test_image_ids)
        if unknown_images.any():
            row = int(np.flatnonzero(unknown_images)[0])
            raise KitError(
                f"{path}: line {row + 2}: ImageId {image_ids[row]} is not in test.csv"
            )
    return LookupTable(row_ids=row_ids, image_ids=image_ids, columns=columns)


def parse_sample(path: Path) -> np.ndarray:
    """SampleSubmission.csv's RowIds, in its order."""
    path = Path(path)
    table = _small_csv(path, ("RowId", "Location"), ("RowId",))
    return _integer_column(table, "RowId", path)


# ---------------------------------------------------------------- the cache


def _content_key(path: Path, cache_dir: Path) -> str:
    """sha256 of a file's bytes, remembered by (size, mtime) so a reload need not re-hash it."""
    stat = path.stat()
    stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
    memo = cache_dir / f"{path.name}.sha256.json"
    try:
        known = json.loads(memo.read_text())
        if known.get("stamp") == stamp:
            return known["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    fileio.write_json(memo, {"stamp": stamp, "sha256": digest.hexdigest()})
    return digest.hexdigest()


def _cached(path: Path, cache_dir: Path, parse, names: tuple[str, ...]):
    key = _content_key(path, cache_dir)[:16]
    cache = cache_dir / f"{path.stem}-v{CACHE_VERSION}-{key}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                return {name: stored[name] for name in names}, True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt from the CSV
    parsed = parse(path)
    arrays = {name: getattr(parsed, name) for name in names}
    for stale in cache_dir.glob(f"{path.stem}-v*.npz"):
        stale.unlink(missing_ok=True)
    with fileio.atomic_path(cache) as temporary:
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)
    return arrays, False


def load_training(data_dir: Path, use_cache: bool = True) -> TrainingSet:
    path = Path(data_dir) / TRAINING_CSV
    if not use_cache:
        return parse_training(path)
    if not path.exists():
        raise KitError(f"{path}: file not found; run `make download` first")
    arrays, _ = _cached(path, Path(data_dir) / "cache", parse_training, ("images", "keypoints"))
    return TrainingSet(**arrays)


def load_test(data_dir: Path, use_cache: bool = True) -> TestSet:
    path = Path(data_dir) / TEST_CSV
    if not use_cache:
        return parse_test(path)
    if not path.exists():
        raise KitError(f"{path}: file not found; run `make download` first")
    arrays, _ = _cached(path, Path(data_dir) / "cache", parse_test, ("images", "image_ids"))
    return TestSet(**arrays)


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


def env_data_dir() -> Path:
    return Path(os.environ.get("KIT_DATA", "data"))
