"""kit.data.archive: Kaggle's nested zip into data/*.csv, refusing anything odd before writing a byte.

Each bad archive must raise a one-line KitError naming the archive (and the member) and leave the
target folder without any file: no CSV, no marker, no temporary file.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.core.errors import KitError
from kit.data import archive
from kit.data.synth import make_competition

CSV_NAMES = ("training.csv", "test.csv", "IdLookupTable.csv", "SampleSubmission.csv")


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2013, 5, 7, 0, 0, 0)), content,
                        compress_type=compression)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict[str, bytes]:
    """The synthetic archive's outer members and, under their own names, the four CSVs."""
    summary = make_competition(tmp_path_factory.mktemp("synth"), 4, 3, seed=5)
    out = {}
    with zipfile.ZipFile(summary["archive"]) as outer:
        for name in outer.namelist():
            out[name] = outer.read(name)
            if name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(out[name])) as inner:
                    out.update({member: inner.read(member) for member in inner.namelist()})
    return out


def outer_members(members: dict[str, bytes], **changes: bytes | None) -> dict[str, bytes]:
    """The four outer members, with some replaced (a value) or left out (None)."""
    names = {"training_zip": "training.zip", "test_zip": "test.zip",
             "lookup": "IdLookupTable.csv", "sample": "SampleSubmission.csv"}
    out = {name: members[name] for name in names.values()}
    for key, value in changes.items():
        name = names.get(key, key)
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def write_archive(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "facial-keypoints-detection.zip"
    path.write_bytes(content)
    return path


def assert_refused(path: Path, data_dir: Path, *phrases: str) -> str:
    with pytest.raises(KitError) as caught:
        archive.unpack(path, data_dir)
    message = str(caught.value)
    assert "\n" not in message, message
    assert path.name in message, message
    for phrase in phrases:
        assert phrase in message, message
    # Nothing at all was written: no CSV, no marker, no temporary file.
    left = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) if data_dir.exists() else []
    assert left == [], left
    return message


@pytest.fixture(scope="module")
def zeros() -> bytes:
    # 20 MB of zeros deflate to about 20 KB: a ratio near 1000, cheap to build and to refuse.
    return zip_bytes({"training.csv": bytes(20 << 20)})


def patch_central(content: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite a field of member's central directory entry (offset from the entry's start)."""
    end = content.rindex(b"PK\x05\x06")
    start = struct.unpack_from("<I", content, end + 16)[0]  # the central directory's offset
    while True:
        assert content[start:start + 4] == b"PK\x01\x02"
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", content, start + 28)
        if content[start + 46:start + 46 + name_length] == member.encode():
            break
        start += 46 + name_length + extra_length + comment_length
    patched = bytearray(content)
    struct.pack_into(fmt, patched, start + offset, value)
    return bytes(patched)


def patch_local(content: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        start = zf.getinfo(member).header_offset
    patched = bytearray(content)
    struct.pack_into(fmt, patched, start + offset, value)
    return bytes(patched)


def flip_data_byte(content: bytes, member: str) -> bytes:
    """Flip a byte in the middle of member's compressed data."""
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        info = zf.getinfo(member)
    name_length, extra_length = struct.unpack_from("<HH", content, info.header_offset + 26)
    data_start = info.header_offset + 30 + name_length + extra_length
    patched = bytearray(content)
    patched[data_start + info.compress_size // 2] ^= 0x5A
    return bytes(patched)


# (id, the archive's bytes from the synthetic members, phrases the message must hold)
CASES = [
    ("random bytes", lambda m, z: os.urandom(5000), ["not a valid zip"]),
    ("truncated", lambda m, z: zip_bytes(outer_members(m))[: len(zip_bytes(outer_members(m))) // 2],
     ["not a valid zip"]),
    ("HTML error page", lambda m, z: b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>",
     ["HTML"]),
    ("HTML page in lower case after blank lines",
     lambda m, z: b"\n\n  <html><head><title>404</title></head></html>", ["HTML"]),
    ("empty file", lambda m, z: b"", ["empty"]),
    ("missing test.zip", lambda m, z: zip_bytes(outer_members(m, test_zip=None)),
     ["missing member test.zip", "expected"]),
    ("missing IdLookupTable.csv", lambda m, z: zip_bytes(outer_members(m, lookup=None)),
     ["missing member IdLookupTable.csv"]),
    ("training.zip without training.csv", lambda m, z: zip_bytes(outer_members(
        m, training_zip=zip_bytes({"train.csv": m["training.csv"]}))),
     ["training.zip", "missing member training.csv", "train.csv"]),
    ("training.zip is not a zip", lambda m, z: zip_bytes(outer_members(
        m, training_zip=m["training.csv"])), ["training.zip", "not a valid zip"]),
    ("zip-slip ../ in the outer zip", lambda m, z: zip_bytes(
        {**outer_members(m), "../evil.csv": b"x"}), ["'../evil.csv'", "outside"]),
    ("zip-slip absolute in the outer zip", lambda m, z: zip_bytes(
        {**outer_members(m), "/abs.csv": b"x"}), ["'/abs.csv'", "outside"]),
    ("zip-slip backslash in the outer zip", lambda m, z: zip_bytes(
        {**outer_members(m), "..\\evil.csv": b"x"}), ["evil.csv", "outside"]),
    ("zip-slip drive letter in the outer zip", lambda m, z: zip_bytes(
        {**outer_members(m), "C:\\evil.csv": b"x"}), ["evil.csv", "outside"]),
    ("zip-slip ../ in training.zip", lambda m, z: zip_bytes(outer_members(
        m, training_zip=zip_bytes({"training.csv": m["training.csv"], "../evil.csv": b"x"}))),
     ["training.zip", "'../evil.csv'", "outside"]),
    ("zip-slip absolute in test.zip", lambda m, z: zip_bytes(outer_members(
        m, test_zip=zip_bytes({"/abs.csv": b"x", "test.csv": m["test.csv"]}))),
     ["test.zip", "'/abs.csv'", "outside"]),
    ("zip-slip hidden under a folder", lambda m, z: zip_bytes(
        {**outer_members(m), "data/../../evil.csv": b"x"}), ["evil.csv", "outside"]),
    ("zip bomb in the outer zip", lambda m, z: zip_bytes(outer_members(m, lookup=bytes(20 << 20))),
     ["IdLookupTable.csv", "zip bomb"]),
    ("zip bomb in training.zip", lambda m, z: zip_bytes(outer_members(m, training_zip=z)),
     ["training.zip", "training.csv", "zip bomb"]),
    ("declared size of 3 GB", lambda m, z: patch_central(
        zip_bytes(outer_members(m)), "SampleSubmission.csv", 24, "<I", 3 << 30),
     ["SampleSubmission.csv", "expected at most"]),
    ("declared size smaller than the data", lambda m, z: patch_local(patch_central(
        zip_bytes(outer_members(m)), "IdLookupTable.csv", 24, "<I", 10),
        "IdLookupTable.csv", 22, "<I", 10), ["IdLookupTable.csv", "damaged"]),
    ("wrong CRC field", lambda m, z: patch_central(
        zip_bytes(outer_members(m)), "SampleSubmission.csv", 16, "<I", 0x12345678),
     ["SampleSubmission.csv", "damaged"]),
    ("flipped byte in deflated data", lambda m, z: flip_data_byte(
        zip_bytes(outer_members(m)), "IdLookupTable.csv"), ["IdLookupTable.csv", "damaged"]),
    ("flipped byte in stored data", lambda m, z: flip_data_byte(
        zip_bytes(outer_members(m), zipfile.ZIP_STORED), "SampleSubmission.csv"),
     ["SampleSubmission.csv", "damaged"]),
    ("flipped byte in training.zip's member", lambda m, z: zip_bytes(outer_members(
        m, training_zip=flip_data_byte(m["training.zip"], "training.csv"))),
     ["training.zip", "training.csv", "damaged"]),
    ("encrypted member", lambda m, z: patch_local(patch_central(
        zip_bytes(outer_members(m)), "SampleSubmission.csv", 8, "<H", 1),
        "SampleSubmission.csv", 6, "<H", 1), ["SampleSubmission.csv", "encrypted"]),
    ("unknown compression method", lambda m, z: patch_local(patch_central(
        zip_bytes(outer_members(m)), "IdLookupTable.csv", 10, "<H", 42),
        "IdLookupTable.csv", 8, "<H", 42), ["IdLookupTable.csv", "compression"]),
]


@pytest.mark.parametrize("build, phrases", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_archive_is_refused_and_writes_nothing(members, zeros, tmp_path, build, phrases):
    path = write_archive(tmp_path, build(members, zeros))
    assert_refused(path, tmp_path / "data", *phrases)


def test_missing_archive_and_folder_as_archive(tmp_path):
    assert_refused(tmp_path / "facial-keypoints-detection.zip", tmp_path / "data", "not found")
    folder = tmp_path / "folder.zip"
    folder.mkdir()
    with pytest.raises(KitError, match="folder.zip"):
        archive.unpack(folder, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_member_over_the_size_limit_is_refused(members, tmp_path, monkeypatch):
    # The real limit is 2 GB; a small one shows that a member's true size is checked too.
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 1000)
    path = write_archive(tmp_path, zip_bytes(outer_members(members), zipfile.ZIP_STORED))
    assert_refused(path, tmp_path / "data", "expected at most 1000")


def test_valid_archive_unpacks_byte_for_byte(members, tmp_path):
    path = write_archive(tmp_path, zip_bytes(outer_members(members)))
    data_dir = tmp_path / "data"
    written = archive.unpack(path, data_dir)
    assert sorted(written) == sorted(CSV_NAMES)
    for name in CSV_NAMES:
        assert (data_dir / name).read_bytes() == members[name]
    # Only the CSVs and the marker: no temporary files.
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([*CSV_NAMES, archive.MARKER])
    assert archive.is_unpacked(path, data_dir)
    # A CSV of another size, or another archive, is not "already unpacked".
    (data_dir / "SampleSubmission.csv").write_bytes(members["SampleSubmission.csv"] + b"1,0\n")
    assert not archive.is_unpacked(path, data_dir)
    archive.unpack(path, data_dir)
    assert archive.is_unpacked(path, data_dir)
    other = tmp_path / "other.zip"
    other.write_bytes(zip_bytes(outer_members(members), zipfile.ZIP_STORED))
    assert not archive.is_unpacked(other, data_dir)
    (data_dir / archive.MARKER).write_text("{not json")
    assert not archive.is_unpacked(path, data_dir)


def test_members_inside_a_folder_are_found(members, tmp_path):
    # Some tools put everything under a top folder: the names still match.
    nested = {f"facial-keypoints-detection/{name}": content
              for name, content in outer_members(members).items()}
    path = write_archive(tmp_path, zip_bytes(nested))
    archive.unpack(path, tmp_path / "data")
    assert (tmp_path / "data" / "training.csv").read_bytes() == members["training.csv"]


def test_the_synth_archive_unpacks(tmp_path):
    summary = make_competition(tmp_path, 3, 2, seed=1)
    written = archive.unpack(summary["archive"], tmp_path / "data")
    assert sorted(written) == sorted(CSV_NAMES)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_random_corruption_unpacks_or_raises_kit_error(members, tmp_path, flips, cut):
    content = bytearray(zip_bytes(outer_members(members)))
    for where, mask in flips:
        content[int(where * len(content))] ^= mask
    if cut is not None:
        content = content[: int(cut * len(content))]
    path = write_archive(tmp_path, bytes(content))
    data_dir = tmp_path / "data"
    for leftover in data_dir.glob("*") if data_dir.exists() else []:
        leftover.unlink()
    try:
        archive.unpack(path, data_dir)
    except KitError as error:
        assert "\n" not in str(error) and path.name in str(error)
        assert not data_dir.exists() or not any(data_dir.iterdir())
        return
    # What unpacked passed every CRC: the CSVs are the originals.
    for name in CSV_NAMES:
        assert (data_dir / name).read_bytes() == members[name]
