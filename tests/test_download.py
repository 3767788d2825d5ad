"""kit.data.download: archive -> staged, validated, cached data/, or nothing changed at all."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kit.core.errors import KitError
from kit.data import archive as archive_io
from kit.data import download, tables
from kit.data.synth import make_competition
from kit.kaggle import client

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRACTICE_ARCHIVE = SHARED / "data" / "practice" / "facial-keypoints-detection.zip"
N_TRAIN, N_TEST = 8, 5


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> dict:
    return make_competition(tmp_path_factory.mktemp("synth"), N_TRAIN, N_TEST, seed=2)


@pytest.fixture(scope="module")
def other_competition(tmp_path_factory) -> dict:
    return make_competition(tmp_path_factory.mktemp("synth-other"), N_TRAIN + 3, N_TEST + 1,
                            seed=9)


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under folder: (sha256, mtime_ns, inode) by relative path."""
    return {
        str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                        path.stat().st_mtime_ns, path.stat().st_ino)
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def assert_no_staging(data_dir: Path) -> None:
    leftovers = [p for p in data_dir.rglob("*") if ".staging" in p.parts or p.name.endswith(".part")]
    assert leftovers == []


def test_download_unpacks_validates_and_caches(competition, tmp_path):
    data_dir = tmp_path / "data"
    result = download.download(data_dir, archive=competition["archive"])
    assert result.unpacked and not result.fetched
    assert result.source == competition["archive"] and result.data_dir == data_dir
    assert result.counts == {"training_rows": N_TRAIN, "test_images": N_TEST,
                             "lookup_rows": competition["n_lookup_rows"]}
    for name in tables.CSV_FILES:
        assert (data_dir / name).is_file()
    assert (data_dir / archive_io.MARKER).is_file()
    assert sorted((data_dir / "cache").glob("*.npz"))  # validation filled the cache
    assert_no_staging(data_dir)
    training = tables.load_training(data_dir)
    assert len(training) == N_TRAIN
    assert len(tables.subset_indices(training.keypoints, "15")) == competition["n_train_complete"]
    assert len(tables.subset_indices(training.keypoints, "4")) == N_TRAIN


def test_second_download_is_a_no_op_and_force_unpacks_again(competition, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    first = download.download(data_dir, archive=competition["archive"])
    before = snapshot(data_dir)

    def no_unpack(*args, **kwargs):
        raise AssertionError("unpacked again")

    def no_parse(path):
        raise AssertionError(f"parsed {path} again")

    with monkeypatch.context() as patch:
        patch.setattr(archive_io, "unpack", no_unpack)
        patch.setattr(tables, "parse_training", no_parse)
        patch.setattr(tables, "parse_test", no_parse)
        second = download.download(data_dir, archive=competition["archive"])
    assert not second.unpacked and second.counts == first.counts
    # Nothing rewritten: the CSVs and caches are the same files, untouched.
    after = snapshot(data_dir)
    assert {k: v for k, v in after.items() if not k.endswith(".sha256.json")} == {
        k: v for k, v in before.items() if not k.endswith(".sha256.json")}

    forced = download.download(data_dir, archive=competition["archive"], force=True)
    assert forced.unpacked and forced.counts == first.counts
    again = snapshot(data_dir)
    for name in tables.CSV_FILES:
        assert again[name][0] == before[name][0]  # same content
        assert again[name][2] != before[name][2]  # a new file, renamed into place
    assert_no_staging(data_dir)


def test_another_archive_replaces_the_data(competition, other_competition, tmp_path):
    data_dir = tmp_path / "data"
    download.download(data_dir, archive=competition["archive"])
    result = download.download(data_dir, archive=other_competition["archive"])
    assert result.unpacked and result.counts["training_rows"] == N_TRAIN + 3
    assert len(tables.load_training(data_dir)) == N_TRAIN + 3
    assert len(tables.load_test(data_dir)) == N_TEST + 1
    # One cache per table: the old archive's caches are gone.
    assert len(list((data_dir / "cache").glob("training-*.npz"))) == 1
    assert archive_io.is_unpacked(other_competition["archive"], data_dir)
    assert not archive_io.is_unpacked(competition["archive"], data_dir)


def read_outer(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def with_training_csv(outer: dict[str, bytes], edit) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(outer["training.zip"])) as inner:
        training = inner.read("training.csv")
    return {**outer, "training.zip": zip_bytes({"training.csv": edit(training)})}


def bad_pixel(training: bytes) -> bytes:
    lines = training.split(b"\n")
    lines[3] = lines[3].rsplit(b" ", 1)[0] + b" 256"
    return b"\n".join(lines)


BAD_ARCHIVES = [
    ("random bytes", lambda outer: os.urandom(3000), ["not a valid zip"]),
    ("HTML page", lambda outer: b"<html><body>Sign in</body></html>", ["HTML"]),
    ("empty", lambda outer: b"", ["empty"]),
    ("truncated", lambda outer: zip_bytes(outer)[: len(zip_bytes(outer)) // 2],
     ["not a valid zip"]),
    ("missing test.zip", lambda outer: zip_bytes({k: v for k, v in outer.items()
                                                  if k != "test.zip"}), ["test.zip"]),
    ("zip-slip", lambda outer: zip_bytes({**outer, "../evil.csv": b"x"}), ["'../evil.csv'"]),
    ("zip bomb", lambda outer: zip_bytes({**outer, "SampleSubmission.csv": bytes(20 << 20)}),
     ["zip bomb"]),
    ("bad pixel in training.csv", lambda outer: zip_bytes(with_training_csv(outer, bad_pixel)),
     ["training.csv", "line 4", "'256'"]),
    ("sample RowIds differ", lambda outer: zip_bytes(
        {**outer, "SampleSubmission.csv": outer["SampleSubmission.csv"] + b"999999,0\n"}),
     ["SampleSubmission.csv", "RowIds"]),
]


@pytest.mark.parametrize("build, phrases", [case[1:] for case in BAD_ARCHIVES],
                         ids=[case[0] for case in BAD_ARCHIVES])
def test_bad_archive_leaves_valid_data_untouched(competition, tmp_path, build, phrases):
    data_dir = tmp_path / "data"
    download.download(data_dir, archive=competition["archive"])
    before = snapshot(data_dir)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(build(read_outer(competition["archive"])))
    with pytest.raises(KitError) as caught:
        download.download(data_dir, archive=bad)
    message = str(caught.value)
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message
    assert snapshot(data_dir) == before
    assert_no_staging(data_dir)
    assert not (data_dir / ".staging").exists()
    # Still whole, still the earlier archive's data.
    assert archive_io.is_unpacked(competition["archive"], data_dir)
    assert tables.validate_all(data_dir)["training_rows"] == N_TRAIN


@pytest.mark.parametrize("build, phrases", [case[1:] for case in BAD_ARCHIVES],
                         ids=[case[0] for case in BAD_ARCHIVES])
def test_bad_archive_into_an_empty_folder_writes_nothing(competition, tmp_path, build, phrases):
    data_dir = tmp_path / "data"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(build(read_outer(competition["archive"])))
    with pytest.raises(KitError):
        download.download(data_dir, archive=bad)
    left = [p.relative_to(data_dir) for p in data_dir.rglob("*")] if data_dir.exists() else []
    assert left == []


def test_missing_archive_is_named(tmp_path):
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(KitError, match="nowhere.zip: archive not found"):
        download.download(tmp_path / "data", archive=missing)
    assert not (tmp_path / "data").exists()


def test_move_cut_short_leaves_no_marker(competition, other_competition, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    download.download(data_dir, archive=competition["archive"])
    real_replace = os.replace
    calls = []

    def failing_replace(source, target):
        # Only the move from staging into data/ fails, after training.csv went over.
        if Path(target) == data_dir / "test.csv":
            calls.append(target)
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(download.os, "replace", failing_replace)
    with pytest.raises(OSError):
        download.download(data_dir, archive=other_competition["archive"])
    monkeypatch.undo()
    assert calls == [data_dir / "test.csv"]
    # training.csv is the new one, test.csv the old: the folder must not claim to be complete.
    assert not (data_dir / archive_io.MARKER).exists()
    assert not archive_io.is_unpacked(competition["archive"], data_dir)
    assert_no_staging(data_dir)
    result = download.download(data_dir, archive=competition["archive"])
    assert result.unpacked and result.counts["training_rows"] == N_TRAIN


def test_without_an_archive_it_fetches_once(competition, tmp_path, monkeypatch):

    fetches = []

    def fake_download(dest_dir, force=False, **kwargs):
        fetches.append(force)
        target = Path(dest_dir) / "facial-keypoints-detection.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(competition["archive"], target)
        return target

    monkeypatch.setattr(client, "download_competition", fake_download)
    data_dir = tmp_path / "data"
    first = download.download(data_dir)
    assert first.fetched and first.unpacked and first.source == download.raw_archive_path(data_dir)
    second = download.download(data_dir)
    assert not second.fetched and not second.unpacked
    assert fetches == [True]
    assert second.counts == first.counts


@pytest.mark.skipif(not PRACTICE_ARCHIVE.is_file(),
                    reason=f"the practice archive is not at {PRACTICE_ARCHIVE}")
def test_practice_archive_end_to_end(tmp_path):
    data_dir = tmp_path / "data"
    result = download.download(data_dir, archive=PRACTICE_ARCHIVE)
    assert result.counts == {"training_rows": 2557, "test_images": 633, "lookup_rows": 9856}
    training = tables.load_training(data_dir)
    complete = np.isfinite(training.keypoints).all(axis=1)
    assert complete.sum() == 825
    assert len(tables.subset_indices(training.keypoints, "15")) == 825
    assert len(tables.subset_indices(training.keypoints, "4")) == 2557
    test = tables.load_test(data_dir)
    assert len(test) == 633 and test.image_ids.tolist() == list(range(1, 634))
    lookup = tables.load_lookup(data_dir, test.image_ids)
    assert len(lookup) == 9856
    assert np.array_equal(tables.load_sample(data_dir), lookup.row_ids)
    # The cache gives back exactly what a fresh parse gives.
    fresh = tables.load_training(data_dir, use_cache=False)
    assert np.array_equal(fresh.images, training.images)
    assert np.array_equal(fresh.keypoints, training.keypoints, equal_nan=True)
    again = download.download(data_dir, archive=PRACTICE_ARCHIVE)
    assert not again.unpacked and again.counts == result.counts
