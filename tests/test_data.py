"""kit.data: parsing, validation and caching of the four competition CSVs.

Every malformed file must raise KitError with one line naming the file, the line and what was
expected. The valid files come from kit.data.synth, read here with zipfile, not with the kit's unpacker.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.core.errors import KitError
from kit.core.keypoints import COLUMNS, IMAGE_SIZE
from kit.data import tables
from kit.data.synth import make_competition
from tests.conftest import read_archive

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_LOOKUP = SHARED / "data" / "kaggle-format" / "IdLookupTable.csv"
REAL_SAMPLE = SHARED / "data" / "kaggle-format" / "SampleSubmission.csv"
N_TRAIN, N_TEST = 6, 4
HEADER = ",".join((*COLUMNS, "Image")).encode()


@pytest.fixture(scope="module")
def competition_csvs(tmp_path_factory) -> dict[str, bytes]:
    summary = make_competition(tmp_path_factory.mktemp("synth"), N_TRAIN, N_TEST, seed=11,
                               complete_fraction=0.5)
    return read_archive(summary["archive"])


def assert_rejected(path: Path, parse, line: int | None, *phrases: str) -> str:
    """parse(path) raises one-line KitError naming the file, `line N` and every phrase."""
    with pytest.raises(KitError) as caught:
        parse(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert path.name in message, message
    if line is not None:
        assert re.search(rf"\bline {line}\b", message), message
    for phrase in phrases:
        assert phrase in message, message
    # The message shows the file's text, not numpy's repr of it.
    assert "np.float" not in message and "np.int" not in message, message
    return message


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------- edits of a valid file


def lines_of(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n")
    return raw[:-1].split(b"\n")


def joined(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def set_field(raw: bytes, line: int, column: int, value: bytes) -> bytes:
    """Replace field `column` of file line `line` (1-based)."""
    lines = lines_of(raw)
    fields = lines[line - 1].split(b",")
    fields[column] = value
    lines[line - 1] = b",".join(fields)
    return joined(lines)


def set_pixel(raw: bytes, line: int, index: int, value: bytes) -> bytes:
    lines = lines_of(raw)
    head, _, image = lines[line - 1].rpartition(b",")
    pixels = image.split(b" ")
    pixels[index] = value
    lines[line - 1] = head + b"," + b" ".join(pixels)
    return joined(lines)


def drop_column(raw: bytes, column: int) -> bytes:
    lines = [line.split(b",") for line in lines_of(raw)]
    return joined([b",".join(fields[:column] + fields[column + 1:]) for fields in lines])


def add_column(raw: bytes, name: bytes) -> bytes:
    lines = [line.split(b",") for line in lines_of(raw)]
    lines[0].insert(1, name)
    for fields in lines[1:]:
        fields.insert(1, b"1.0")
    return joined([b",".join(fields) for fields in lines])


def change_pixel_count(raw: bytes, line: int, delta: int) -> bytes:
    lines = lines_of(raw)
    head, _, image = lines[line - 1].rpartition(b",")
    pixels = image.split(b" ")
    pixels = pixels[:delta] if delta < 0 else pixels + [b"7"] * delta
    lines[line - 1] = head + b"," + b" ".join(pixels)
    return joined(lines)


def drop_field(raw: bytes, line: int, column: int) -> bytes:
    lines = lines_of(raw)
    fields = lines[line - 1].split(b",")
    del fields[column]
    lines[line - 1] = b",".join(fields)
    return joined(lines)


def move_comma_into_image(raw: bytes, line: int) -> bytes:
    lines = lines_of(raw)
    head, _, image = lines[line - 1].rpartition(b",")
    fields = head.split(b",")
    fields[0:2] = [fields[0] + fields[1]]
    pixels = image.split(b" ")
    pixels[100] += b",7"
    lines[line - 1] = b",".join(fields) + b"," + b" ".join(pixels)
    return joined(lines)


NOSE_TIP_X = COLUMNS.index("nose_tip_x")

# (id, edit of a valid training.csv, the line the message must name, phrases it must hold)
TRAINING_CASES = [
    ("missing column", lambda raw: drop_column(raw, NOSE_TIP_X), 1,
     ["missing", "nose_tip_x"]),
    ("extra column", lambda raw: add_column(raw, b"chin_x"), 1, ["unexpected", "chin_x"]),
    ("duplicate header", lambda raw: set_field(raw, 1, 1, b"left_eye_center_x"), 1,
     ["duplicate", "left_eye_center_x"]),
    ("header with an empty name", lambda raw: raw.replace(b",Image\n", b",,Image\n", 1), 1,
     ["unexpected", "''"]),
    ("Image column not last", lambda raw: joined(
        [b"Image," + lines_of(raw)[0].removesuffix(b",Image")] + lines_of(raw)[1:]), 1,
     ["Image", "last"]),
    ("9215 pixels", lambda raw: change_pixel_count(raw, 3, -1), 3, ["9215", "9216"]),
    ("9217 pixels", lambda raw: change_pixel_count(raw, 4, 1), 4, ["9217", "9216"]),
    ("pixel 12a", lambda raw: set_pixel(raw, 3, 100, b"12a"), 3, ["'12a'", "0-255"]),
    ("pixel nan", lambda raw: set_pixel(raw, 2, 5, b"nan"), 2, ["'nan'", "0-255"]),
    ("negative pixel", lambda raw: set_pixel(raw, 5, 9000, b"-3"), 5, ["'-3'", "0-255"]),
    ("pixel 256", lambda raw: set_pixel(raw, 3, 0, b"256"), 3, ["'256'", "0-255"]),
    ("pixel 99999", lambda raw: set_pixel(raw, 3, 9215, b"99999"), 3, ["'99999'", "0-255"]),
    # 2**32 + 5 wraps to 5 in a 32-bit integer: it must still be refused.
    ("pixel 4294967301", lambda raw: set_pixel(raw, 3, 1, b"4294967301"), 3,
     ["4294967301", "0-255"]),
    ("pixel 1e30", lambda raw: set_pixel(raw, 3, 1, b"9" * 30), 3, ["0-255"]),
    ("float pixel", lambda raw: set_pixel(raw, 4, 7, b"12.5"), 4, ["'12.5'", "0-255"]),
    ("empty pixel between two spaces", lambda raw: set_pixel(raw, 4, 7, b""), 4,
     ["9215", "9216"]),
    ("empty Image", lambda raw: set_field(raw, 3, -1, b""), 3, ["0 values", "9216"]),
    ("keypoint -1", lambda raw: set_field(raw, 3, 0, b"-1"), 3,
     ["left_eye_center_x", "-1", "[0, 96]"]),
    ("keypoint 96.5", lambda raw: set_field(raw, 4, 1, b"96.5"), 4,
     ["left_eye_center_y", "96.5", "[0, 96]"]),
    ("keypoint 1e308", lambda raw: set_field(raw, 2, 0, b"1e308"), 2, ["'1e308'", "[0, 96]"]),
    ("keypoint 1e309 overflows", lambda raw: set_field(raw, 2, 0, b"1e309"), 2, ["'1e309'"]),
    # pandas < 3 segfaults parsing this exponent (pandas-dev/pandas#63650): the kit must not.
    ("keypoint 1e2147483648", lambda raw: set_field(raw, 3, 4, b"1e2147483648"), 3,
     ["left_eye_inner_corner_x", "'1e2147483648'", "[0, 96]"]),
    ("keypoint inf", lambda raw: set_field(raw, 3, 0, b"inf"), 3, ["inf", "[0, 96]"]),
    ("keypoint -inf", lambda raw: set_field(raw, 3, 0, b"-inf"), 3, ["inf", "[0, 96]"]),
    ("keypoint text", lambda raw: set_field(raw, 5, 2, b"abc"), 5,
     ["'abc'", "expected a number"]),
    ("keypoint nan text", lambda raw: set_field(raw, 5, 0, b"nan"), 5,
     ["'nan'", "expected a number"]),
    ("keypoint latin-1 byte", lambda raw: set_field(raw, 6, 0, b"4\xe90"), 6, ["expected"]),
    ("truncated last line", lambda raw: raw[:-5000], N_TRAIN + 1, ["values", "9216"]),
    ("truncated in the keypoints", lambda raw: raw[:raw.rindex(b"\n", 0, -1) + 40], N_TRAIN + 1,
     ["fields", "expected 31"]),
    ("stray quote in a keypoint", lambda raw: set_field(raw, 3, 0, b'"40.5'), 3, ['"']),
    ("stray quote opening the Image", lambda raw: set_field(
        raw, 4, -1, b'"' + lines_of(raw)[3].rpartition(b",")[2]), 4, ["quote"]),
    ("stray quote inside the Image", lambda raw: set_pixel(raw, 3, 50, b'1"2'), 3, ["0-255"]),
    ("quote in the header", lambda raw: raw.replace(b"nose_tip_x", b'nose_tip_x"', 1), 1,
     ["nose_tip_x"]),
    ("empty file", lambda raw: b"", None, ["empty"]),
    ("whitespace only", lambda raw: b" \n\n", None, ["empty"]),
    ("header only", lambda raw: lines_of(raw)[0] + b"\n", None, ["no data rows"]),
    ("blank line in the middle", lambda raw: joined(
        lines_of(raw)[:3] + [b""] + lines_of(raw)[3:]), 4, ["empty"]),
    ("spaces-only line in the middle", lambda raw: joined(
        lines_of(raw)[:2] + [b"   "] + lines_of(raw)[2:]), 3, ["empty"]),
    ("UTF-16", lambda raw: raw.decode().encode("utf-16"), 1, ["UTF-8"]),
    ("latin-1 header", lambda raw: raw.replace(b"nose_tip_x", "nosé_tip_x".encode("latin-1")),
     1, ["UTF-8"]),
    ("extra trailing comma on a row", lambda raw: joined(
        [line + b"," if i == 3 else line for i, line in enumerate(lines_of(raw))]), 4,
     ["32 fields", "expected 31"]),
    ("extra trailing comma on the header", lambda raw: raw.replace(b",Image\n", b",Image,\n", 1),
     1, ["''"]),
    ("missing keypoint field", lambda raw: drop_field(raw, 3, 0), 3,
     ["30 fields", "expected 31"]),
    # One keypoint comma lost and one gained inside the Image: 31 fields again, but the last
    # "keypoint" is a run of pixels (parsed field by field, not as a wide numpy array).
    ("comma moved into the Image", lambda raw: move_comma_into_image(raw, 3), 3,
     ["left_eye_center_x", "expected a number"]),
    ("image of digits only, no comma", lambda raw: joined(
        lines_of(raw)[:2] + [lines_of(raw)[2].rpartition(b",")[2]] + lines_of(raw)[3:]), 3,
     ["1 fields", "expected 31"]),
]


@pytest.mark.parametrize("edit, line, phrases",
                         [case[1:] for case in TRAINING_CASES],
                         ids=[case[0] for case in TRAINING_CASES])
def test_malformed_training_csv_is_rejected(competition_csvs, tmp_path, edit, line, phrases):
    raw = competition_csvs["training.csv"]
    edited = edit(raw)
    assert edited != raw
    path = write(tmp_path, "training.csv", edited)
    assert_rejected(path, tables.parse_training, line, *phrases)


def test_valid_training_csv_parses(competition_csvs, tmp_path):
    training = tables.parse_training(write(tmp_path, "training.csv", competition_csvs["training.csv"]))
    assert training.images.shape == (N_TRAIN, IMAGE_SIZE, IMAGE_SIZE)
    assert training.images.dtype == np.uint8
    assert training.keypoints.shape == (N_TRAIN, 30)
    assert training.keypoints.dtype == np.float32
    # The synthetic data: half the rows carry all 30 values, the rest only the 8 core ones.
    assert len(tables.subset_indices(training.keypoints, "15")) == N_TRAIN // 2
    assert len(tables.subset_indices(training.keypoints, "4")) == N_TRAIN
    first = lines_of(competition_csvs["training.csv"])[1].split(b",")
    assert training.keypoints[0, 0] == np.float32(first[0].decode())
    pixels = np.array(first[-1].split(b" "), dtype=np.int64)
    assert np.array_equal(training.images[0].ravel(), pixels)


def test_bom_and_crlf_parse_to_identical_arrays(competition_csvs, tmp_path):
    raw = competition_csvs["training.csv"]
    plain = tables.parse_training(write(tmp_path, "training.csv", raw))
    windows = b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")
    other = tables.parse_training(write(tmp_path, "training-crlf.csv", windows))
    assert np.array_equal(plain.images, other.images)
    assert np.array_equal(plain.keypoints, other.keypoints, equal_nan=True)
    test_plain = tables.parse_test(write(tmp_path, "test.csv", competition_csvs["test.csv"]))
    test_windows = tables.parse_test(write(
        tmp_path, "test-crlf.csv", b"\xef\xbb\xbf" + competition_csvs["test.csv"].replace(b"\n", b"\r\n")))
    assert np.array_equal(test_plain.images, test_windows.images)
    assert np.array_equal(test_plain.image_ids, test_windows.image_ids)
    lookup_windows = competition_csvs["IdLookupTable.csv"].replace(b"\n", b"\r\n")
    assert np.array_equal(
        tables.parse_lookup(write(tmp_path, "IdLookupTable.csv", competition_csvs["IdLookupTable.csv"])).columns,
        tables.parse_lookup(write(tmp_path, "lookup-crlf.csv", b"\xef\xbb\xbf" + lookup_windows)).columns,
    )


def test_no_trailing_newline_and_quoted_fields_are_accepted(competition_csvs, tmp_path):
    raw = competition_csvs["training.csv"]
    plain = tables.parse_training(write(tmp_path, "training.csv", raw))
    unterminated = tables.parse_training(write(tmp_path, "a.csv", raw[:-1]))
    assert np.array_equal(plain.images, unterminated.images)
    # A CSV writer may quote every field: "left_eye_center_x","40.1",...,"12 34 ..."
    quoted = joined([b",".join(b'"' + field + b'"' for field in line.split(b","))
                     for line in lines_of(raw)])
    other = tables.parse_training(write(tmp_path, "b.csv", quoted))
    assert np.array_equal(plain.images, other.images)
    assert np.array_equal(plain.keypoints, other.keypoints, equal_nan=True)


def test_columns_in_another_order_are_read_by_name(competition_csvs, tmp_path):
    raw = competition_csvs["training.csv"]
    plain = tables.parse_training(write(tmp_path, "training.csv", raw))
    # Swap the first two keypoint columns, header and values alike.
    swapped = []
    for line in lines_of(raw):
        fields = line.split(b",")
        fields[0], fields[1] = fields[1], fields[0]
        swapped.append(b",".join(fields))
    other = tables.parse_training(write(tmp_path, "swapped.csv", joined(swapped)))
    assert np.array_equal(plain.keypoints, other.keypoints, equal_nan=True)


def test_missing_file_says_run_download(tmp_path):
    assert_rejected(tmp_path / "training.csv", tables.parse_training, None, "not found")
    with pytest.raises(KitError, match="make download"):
        tables.load_training(tmp_path)
    with pytest.raises(KitError, match="make download"):
        tables.load_test(tmp_path)


# ---------------------------------------------------------------- test.csv


def test_valid_test_csv_parses(competition_csvs, tmp_path):
    test = tables.parse_test(write(tmp_path, "test.csv", competition_csvs["test.csv"]))
    assert test.images.shape == (N_TEST, IMAGE_SIZE, IMAGE_SIZE)
    assert test.image_ids.tolist() == list(range(1, N_TEST + 1))
    assert test.image_ids.dtype == np.int64


TEST_CASES = [
    ("duplicate ImageId", lambda raw: set_field(raw, 4, 0, b"1"), 4, ["duplicate", "ImageId 1"]),
    ("non-integer ImageId", lambda raw: set_field(raw, 3, 0, b"2.5"), 3, ["'2.5'", "integer"]),
    ("text ImageId", lambda raw: set_field(raw, 3, 0, b"two"), 3, ["'two'"]),
    ("zero ImageId", lambda raw: set_field(raw, 2, 0, b"0"), 2, ["'0'", "integer >= 1"]),
    ("ImageId with a huge exponent", lambda raw: set_field(raw, 3, 0, b"8e2569614270"), 3,
     ["'8e2569614270'", "integer >= 1"]),
    ("negative ImageId", lambda raw: set_field(raw, 5, 0, b"-4"), 5, ["'-4'", "integer >= 1"]),
    ("empty ImageId", lambda raw: set_field(raw, 3, 0, b""), 3, ["ImageId", "empty"]),
    ("missing ImageId field", lambda raw: joined(
        lines_of(raw)[:2] + [lines_of(raw)[2].partition(b",")[2]] + lines_of(raw)[3:]), 3,
     ["1 fields", "expected 2"]),
    ("wrong header order", lambda raw: raw.replace(b"ImageId,Image", b"Image,ImageId", 1), 1,
     ["order", "ImageId,Image"]),
    ("training header", lambda raw: HEADER + raw[raw.index(b"\n"):], 1, ["missing", "ImageId"]),
    ("pixel 300", lambda raw: set_pixel(raw, 5, 3, b"300"), 5, ["'300'", "0-255"]),
    ("blank line", lambda raw: joined(lines_of(raw)[:2] + [b""] + lines_of(raw)[2:]), 3,
     ["empty"]),
    ("header only", lambda raw: b"ImageId,Image\n", None, ["no data rows"]),
]


@pytest.mark.parametrize("edit, line, phrases", [case[1:] for case in TEST_CASES],
                         ids=[case[0] for case in TEST_CASES])
def test_malformed_test_csv_is_rejected(competition_csvs, tmp_path, edit, line, phrases):
    raw = competition_csvs["test.csv"]
    edited = edit(raw)
    assert edited != raw
    assert_rejected(write(tmp_path, "test.csv", edited), tables.parse_test, line, *phrases)


# ---------------------------------------------------------------- IdLookupTable.csv, SampleSubmission.csv


def test_valid_lookup_parses(competition_csvs, tmp_path):
    lookup = tables.parse_lookup(write(tmp_path, "IdLookupTable.csv", competition_csvs["IdLookupTable.csv"]),
                               np.arange(1, N_TEST + 1))
    rows = [line.split(b",") for line in lines_of(competition_csvs["IdLookupTable.csv"])[1:]]
    assert lookup.row_ids.tolist() == [int(row[0]) for row in rows]
    assert lookup.image_ids.tolist() == [int(row[1]) for row in rows]
    assert [COLUMNS[c] for c in lookup.columns] == [row[2].decode() for row in rows]
    sample = tables.parse_sample(write(tmp_path, "SampleSubmission.csv",
                                     competition_csvs["SampleSubmission.csv"]))
    assert np.array_equal(sample, lookup.row_ids)


def lookup_with(lines: list[bytes]) -> bytes:
    return joined([b"RowId,ImageId,FeatureName,Location", *lines])


LOOKUP_CASES = [
    ("unknown FeatureName", [b"1,1,left_eye_center_x,", b"2,1,chin_x,"], 3,
     ["FeatureName 'chin_x'", "left_eye_center_x"]),
    ("ImageId not in test.csv", [b"1,1,nose_tip_x,", b"2,99,nose_tip_x,"], 3,
     ["ImageId 99", "test.csv"]),
    ("duplicate RowId", [b"1,1,nose_tip_x,", b"2,1,nose_tip_y,", b"2,2,nose_tip_x,"], 4,
     ["duplicate RowId 2"]),
    ("same ImageId and FeatureName twice", [b"1,1,nose_tip_x,", b"2,2,nose_tip_x,",
                                            b"3,1,nose_tip_x,"], 4, ["ImageId 1", "nose_tip_x"]),
    ("non-integer RowId", [b"1,1,nose_tip_x,", b"x,1,nose_tip_y,"], 3, ["RowId", "'x'"]),
    ("RowId with a huge exponent", [b"1e2147483648,1,nose_tip_x,"], 2, ["RowId", "integer"]),
    ("zero ImageId", [b"1,0,nose_tip_x,"], 2, ["ImageId", "'0'", "integer >= 1"]),
    ("empty FeatureName", [b"1,1,nose_tip_x,", b"2,1,,"], 3, ["FeatureName", "empty"]),
    ("too many fields", [b"1,1,nose_tip_x,", b"2,1,nose_tip_y,,5"], 3, ["5 fields", "4"]),
    ("too few fields", [b"1,1,nose_tip_x,", b"2,1"], 3, ["2 fields", "4"]),
    # A blank line must not shift the line numbers of the rows after it.
    ("blank line", [b"1,1,nose_tip_x,", b"", b"2,1,chin_y,"], 3, ["empty"]),
    ("bad quote", [b"1,1,nose_tip_x,", b'2,1,"nose_tip_y,'], 3, ["quote"]),
    ("header only", [], None, ["no data rows"]),
]


@pytest.mark.parametrize("lines, line, phrases", [case[1:] for case in LOOKUP_CASES],
                         ids=[case[0] for case in LOOKUP_CASES])
def test_malformed_lookup_is_rejected(tmp_path, lines, line, phrases):
    path = write(tmp_path, "IdLookupTable.csv", lookup_with(lines))
    assert_rejected(path, lambda p: tables.parse_lookup(p, np.arange(1, 5)), line, *phrases)


def test_lookup_header_and_encoding_are_checked(tmp_path):
    path = write(tmp_path, "IdLookupTable.csv", b"RowId,FeatureName,ImageId,Location\n1,x,1,\n")
    assert_rejected(path, tables.parse_lookup, 1, "order")
    path = write(tmp_path, "IdLookupTable.csv",
                 lookup_with([b"1,1,nose_tip_x,", "2,1,nosé_tip_y,".encode("latin-1")]))
    assert_rejected(path, tables.parse_lookup, 3, "UTF-8")


def test_kaggle_lookup_habits_are_accepted(tmp_path):
    # Kaggle's own IdLookupTable.csv ends lines in CR CR LF and leaves out the empty Location.
    plain = tables.parse_lookup(write(tmp_path, "a.csv", lookup_with(
        [b"1,1,nose_tip_x,", b"2,1,nose_tip_y,", b"3,2,nose_tip_x,"])))
    kaggle = tables.parse_lookup(write(
        tmp_path, "b.csv",
        b"RowId,ImageId,FeatureName,Location\r\r\n1,1,nose_tip_x\r\r\n2,1,nose_tip_y\r\r\n"
        b"3,2,nose_tip_x\r\r\n"))
    for field in ("row_ids", "image_ids", "columns"):
        assert np.array_equal(getattr(plain, field), getattr(kaggle, field))
    # Still, a row short of a required field is refused at its own line.
    path = write(tmp_path, "c.csv", b"RowId,ImageId,FeatureName,Location\r\r\n1,1\r\r\n")
    assert_rejected(path, tables.parse_lookup, 2, "2 fields")


def test_sample_submission_is_checked(tmp_path):
    path = write(tmp_path, "SampleSubmission.csv", b"RowId,Location\n1,0\n1,0\n")
    assert_rejected(path, tables.parse_sample, 3, "duplicate RowId 1")
    path = write(tmp_path, "SampleSubmission.csv", b"Location,RowId\n0,1\n")
    assert_rejected(path, tables.parse_sample, 1, "order")


@pytest.mark.skipif(not REAL_LOOKUP.is_file(),
                    reason=f"the real competition's lookup table is not at {REAL_LOOKUP}")
def test_real_lookup_table_loads():
    lookup = tables.parse_lookup(REAL_LOOKUP, np.arange(1, 1784))
    assert len(lookup) == 27124
    assert len(np.unique(lookup.image_ids)) == 1783
    assert lookup.row_ids.tolist() == list(range(1, 27125))
    # ImageIds 1-591 ask up to 30 values, 592-1783 the 8 core ones.
    per_image = np.bincount(lookup.image_ids)
    assert per_image[592:].max() == 8 and per_image[1:592].max() == 30
    assert np.array_equal(tables.parse_sample(REAL_SAMPLE), lookup.row_ids)
    # Without ImageId 1783 among the test images the table is refused.
    with pytest.raises(KitError, match=r"line \d+: ImageId 1783 is not in test.csv"):
        tables.parse_lookup(REAL_LOOKUP, np.arange(1, 1783))


# ---------------------------------------------------------------- validate_all


def write_tables(data_dir: Path, competition_csvs: dict[str, bytes]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in tables.CSV_FILES:
        (data_dir / name).write_bytes(competition_csvs[name])
    return data_dir


def test_validate_all_counts(competition_csvs, tmp_path):
    counts = tables.validate_all(write_tables(tmp_path / "data", competition_csvs))
    lookup_rows = len(lines_of(competition_csvs["IdLookupTable.csv"])) - 1
    assert counts == {"training_rows": N_TRAIN, "test_images": N_TEST, "lookup_rows": lookup_rows}


def test_validate_all_refuses_sample_with_other_row_ids(competition_csvs, tmp_path):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    lines = lines_of(competition_csvs["SampleSubmission.csv"])
    (data_dir / "SampleSubmission.csv").write_bytes(joined(lines[:-1]))  # one row short
    with pytest.raises(KitError) as caught:
        tables.validate_all(data_dir)
    message = str(caught.value)
    assert "SampleSubmission.csv" in message and "RowIds differ" in message, message
    (data_dir / "SampleSubmission.csv").write_bytes(joined(lines[:1] + lines[2:3] + lines[1:2]
                                                           + lines[3:]))  # same ids, reordered
    with pytest.raises(KitError, match="same order"):
        tables.validate_all(data_dir)


def test_validate_all_refuses_lookup_naming_unknown_images(competition_csvs, tmp_path):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    lines = lines_of(competition_csvs["test.csv"])
    (data_dir / "test.csv").write_bytes(joined(lines[:-1]))  # drop the last test image
    with pytest.raises(KitError, match=rf"IdLookupTable.csv: line \d+: ImageId {N_TEST} is not"):
        tables.validate_all(data_dir)


# ---------------------------------------------------------------- subsets


def test_subsets_and_missing_patterns():
    keypoints = np.full((3, 30), 10.0, np.float32)
    keypoints[1, COLUMNS.index("left_eye_inner_corner_x")] = np.nan
    keypoints[1, COLUMNS.index("left_eye_inner_corner_y")] = np.nan
    keypoints[2, COLUMNS.index("nose_tip_y")] = np.nan
    assert tables.subset_indices(keypoints, "15").tolist() == [0]
    assert tables.subset_indices(keypoints, "4").tolist() == [0, 1]
    patterns = dict(tables.missing_patterns(keypoints))
    assert patterns[()] == 1 and patterns[("left_eye_inner_corner",)] == 1
    with pytest.raises(KitError, match="'15' or '4'"):
        tables.subset_indices(keypoints, "5")


# ---------------------------------------------------------------- the cache


def cache_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "cache").glob("training-*.npz"))


def test_second_load_reads_the_cache_not_the_csv(competition_csvs, tmp_path, monkeypatch):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    first = tables.load_training(data_dir)
    [cache] = cache_files(data_dir)
    stamp = cache.stat().st_mtime_ns

    def no_parse(path):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(tables, "parse_training", no_parse)
    second = tables.load_training(data_dir)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.keypoints, second.keypoints, equal_nan=True)
    assert second.images.dtype == np.uint8 and second.keypoints.dtype == np.float32
    assert cache_files(data_dir) == [cache] and cache.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    direct = tables.load_training(data_dir, use_cache=False)
    assert np.array_equal(first.keypoints, direct.keypoints, equal_nan=True)


def test_changed_csv_rebuilds_the_cache(competition_csvs, tmp_path):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    before = tables.load_training(data_dir)
    raw = competition_csvs["training.csv"]
    old = lines_of(raw)[1].split(b",")[0]
    # Same length, new value, written at once. On a coarse clock (a kernel tick; 2 s on FAT)
    # the mtime can come out unchanged too: set it back to show that this is still noticed.
    new = b"1" + old[1:] if not old.startswith(b"1") else b"2" + old[1:]
    path = data_dir / "training.csv"
    stat = path.stat()
    path.write_bytes(set_field(raw, 2, 0, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = tables.load_training(data_dir)
    assert after.keypoints[0, 0] == np.float32(new.decode())
    assert after.keypoints[0, 0] != before.keypoints[0, 0]
    assert len(cache_files(data_dir)) == 1  # the stale cache is gone
    # Content back as before: the values come back too.
    path.write_bytes(raw)
    assert tables.load_training(data_dir).keypoints[0, 0] == before.keypoints[0, 0]


@pytest.mark.parametrize("damage", [
    lambda content: b"",
    lambda content: content[: len(content) // 2],
    lambda content: os.urandom(len(content)),
    lambda content: content[:100] + bytes(200) + content[300:],
], ids=["empty", "truncated", "random", "zeroed"])
def test_damaged_cache_is_rebuilt(competition_csvs, tmp_path, damage):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    first = tables.load_training(data_dir)
    [cache] = cache_files(data_dir)
    cache.write_bytes(damage(cache.read_bytes()))
    second = tables.load_training(data_dir)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.keypoints, second.keypoints, equal_nan=True)
    # The rebuilt cache is whole again and is used.
    with np.load(cache_files(data_dir)[0]) as stored:
        assert np.array_equal(stored["images"], first.images)


def test_cache_with_wrong_arrays_is_rebuilt(competition_csvs, tmp_path):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    first = tables.load_test(data_dir)
    [cache] = sorted((data_dir / "cache").glob("test-*.npz"))
    with open(cache, "wb") as f:
        np.savez(f, images=np.zeros((2, 3), np.float64), image_ids=np.array([7]))
    second = tables.load_test(data_dir)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.image_ids, second.image_ids)


def test_bad_csv_leaves_no_cache(competition_csvs, tmp_path):
    data_dir = write_tables(tmp_path / "data", competition_csvs)
    (data_dir / "training.csv").write_bytes(set_pixel(competition_csvs["training.csv"], 3, 0, b"256"))
    with pytest.raises(KitError, match="line 3"):
        tables.load_training(data_dir)
    assert cache_files(data_dir) == []
    assert not list((data_dir / "cache").glob("*.part"))


# ---------------------------------------------------------------- properties


def simple_training_csv(keypoints: np.ndarray, images: np.ndarray) -> bytes:
    """The plainest writer: repr of each float, empty for NaN, pixels joined by spaces."""
    lines = [HEADER]
    for values, image in zip(keypoints, images):
        numbers = [b"" if np.isnan(v) else repr(float(v)).encode() for v in values]
        pixels = " ".join(str(int(p)) for p in image.ravel()).encode()
        lines.append(b",".join([*numbers, pixels]))
    return joined(lines)


coordinates = st.one_of(
    st.just(float("nan")),
    st.sampled_from([0.0, 96.0, 48.0]),
    st.floats(0.0, 96.0, allow_nan=False, width=32),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 3), data_=st.data())
def test_random_valid_values_round_trip(tmp_path, rows, data_):
    keypoints = np.array(data_.draw(st.lists(st.lists(coordinates, min_size=30, max_size=30),
                                              min_size=rows, max_size=rows)), np.float32)
    seed = data_.draw(st.integers(0, 2**32 - 1))
    images = np.random.default_rng(seed).integers(0, 256, (rows, IMAGE_SIZE, IMAGE_SIZE))
    corner = data_.draw(st.sampled_from([0, 255]))
    images[0, 0, 0] = corner
    path = write(tmp_path, "training.csv", simple_training_csv(keypoints, images))
    parsed = tables.parse_training(path)
    assert np.array_equal(parsed.keypoints, keypoints, equal_nan=True)
    assert np.array_equal(parsed.images, images.astype(np.uint8))


@pytest.fixture(scope="module")
def small_training(competition_csvs) -> tuple[bytes, tables.TrainingSet]:
    raw = competition_csvs["training.csv"]
    # Two rows keep each example fast; the corruption can land anywhere in them.
    small = joined(lines_of(raw)[:3])
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        parsed = tables.parse_training(write(Path(folder), "training.csv", small))
    return small, parsed


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                st.sampled_from([b"", b",", b"\n", b'"', b"-", b".", b"e", b" ",
                                                 b"\r", b"9", b"\xff", b"\x00", b"nan", b"1e9"]),
                                st.integers(0, 3)),
                      min_size=1, max_size=4))
def test_corrupted_training_csv_parses_validly_or_raises_kit_error(tmp_path, small_training,
                                                                   edits):
    raw, _ = small_training
    corrupted = bytearray(raw)
    for where, insert, delete in edits:
        at = int(where * len(corrupted))
        corrupted[at:at + delete] = insert
    path = write(tmp_path, "training.csv", bytes(corrupted))
    try:
        parsed = tables.parse_training(path)
    except KitError as error:
        assert "\n" not in str(error) and "training.csv" in str(error)
        return
    n = len(parsed)
    assert n >= 1
    assert parsed.images.shape == (n, IMAGE_SIZE, IMAGE_SIZE) and parsed.images.dtype == np.uint8
    assert parsed.keypoints.shape == (n, 30) and parsed.keypoints.dtype == np.float32
    present = parsed.keypoints[~np.isnan(parsed.keypoints)]
    assert ((present >= 0) & (present <= IMAGE_SIZE)).all()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=st.lists(st.integers(0, 10**9), min_size=1, max_size=3),
       values=st.lists(st.integers(0, 255), min_size=3, max_size=3))
def test_random_byte_flips_in_small_tables_raise_only_kit_error(tmp_path, competition_csvs, positions,
                                                                values):
    for name, parse in (("test.csv", tables.parse_test), ("IdLookupTable.csv", tables.parse_lookup),
                        ("SampleSubmission.csv", tables.parse_sample)):
        corrupted = bytearray(competition_csvs[name])
        for position, value in zip(positions, values):
            corrupted[position % len(corrupted)] = value
        try:
            parse(write(tmp_path, name, bytes(corrupted)))
        except KitError as error:
            assert "\n" not in str(error) and name in str(error)


def test_pixel_field_count_reports_the_first_bad_row(competition_csvs, tmp_path):
    # Two bad rows: the message names the earlier one, whichever thread found it.
    raw = change_pixel_count(change_pixel_count(competition_csvs["training.csv"], 6, -2), 3, -1)
    assert_rejected(write(tmp_path, "training.csv", raw), tables.parse_training, 3, "9215")

