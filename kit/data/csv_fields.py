"""Reading Kaggle's CSVs field by field, fast and strict: the image field's pixels, number
fields, headers and small tables, each problem a KitError naming the file, the line and what
was expected."""
from __future__ import annotations

import csv
import io
import itertools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kit.core.errors import KitError
from kit.core.keypoints import IMAGE_SIZE, PIXELS

# A number field longer than this is parsed field by field (it is almost surely not a number).
MAX_NUMBER_CHARS = 64


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
    on Kaggle's 7049 rows; this makes none, and it runs on every core because numpy's parser
    releases the GIL.
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


def read_bytes(path: Path) -> bytes:
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


def header(line: bytes, path: Path, expected: tuple[str, ...], ordered: bool) -> list[str]:
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


def split_image_field(raw: bytes, path: Path, prefix_fields: int) -> tuple[list, list]:
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


def first_line(raw: bytes) -> bytes:
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


def numeric_table(
    prefixes: list[bytes], names: list[str], path: Path,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """The comma-separated fields before Image as float64 (rows, len(names)), NaN where
    empty; with bounds, every value present must lie in [low, high]."""
    width = len(names)
    # Each prefix holds exactly width - 1 commas (split_image_field checked): one flat split.
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


def integers(texts: list[str], lines: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A column of ids as int64; each must be an integer >= 1. lines: each row's file line."""
    values, _ = _floats(texts)  # no number, or empty: NaN, refused below
    with np.errstate(invalid="ignore"):
        bad = ~((values == np.round(values)) & (values >= 1) & (values < 2.0**53))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = f"is {texts[row].strip()!r}" if texts[row].strip() else "is empty"
        raise KitError(f"{path}: line {lines[row]}: {name} {shown}; expected an integer >= 1")
    return values.astype(np.int64)


def first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """(row of the earliest second appearance of a value, row of its first), or None."""
    order = np.argsort(values, kind="stable")
    repeats = np.flatnonzero(values[order][1:] == values[order][:-1])
    if not len(repeats):
        return None
    row = int(order[1:][repeats].min())
    return row, int(np.flatnonzero(values == values[row])[0])


def unique(ids: np.ndarray, lines: np.ndarray, path: Path, name: str) -> np.ndarray:
    """ids, refused where one repeats: the message names the line of its second appearance."""
    repeat = first_repeat(ids)
    if repeat is not None:
        row, first = repeat
        raise KitError(f"{path}: line {lines[row]}: duplicate {name} {ids[row]} (first at line "
                       f"{lines[first]}); expected each {name} once")
    return ids


def small_csv(
    path: Path, expected: tuple[str, ...], required: tuple[str, ...]
) -> tuple[dict[str, list[str]], np.ndarray]:
    """A small CSV's columns as lists of text, and each row's line in the file (for messages).

    Read with the csv module, row by row, so that a blank line or a row with too few fields is
    reported at its own line rather than skipped or padded. Two habits of Kaggle's own
    IdLookupTable.csv are accepted: lines ending in CR CR LF (a CR LF written through a text-mode
    file on Windows) and rows without the trailing empty Location field."""
    raw = read_bytes(path)
    header(first_line(raw), path, expected, ordered=True)
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
