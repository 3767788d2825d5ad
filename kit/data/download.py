"""`make download`: the competition zip (from Kaggle or a local copy) to validated, cached data.

Everything is unpacked and validated in a staging folder first and moved into data/ only when
all four files parse, so a bad archive leaves the previous data untouched.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kit.config import COMPETITION
from kit.core.errors import KitError
from kit.data import archive as archive_io
from kit.data import tables
from kit.kaggle import places


@dataclass(frozen=True)
class DownloadResult:
    source: Path
    data_dir: Path
    fetched: bool  # a new zip came from Kaggle
    unpacked: bool  # the CSVs were (re)written; False means all was already in place
    counts: dict


def raw_archive_path(data_dir: Path) -> Path:
    return Path(data_dir) / "raw" / f"{COMPETITION}.zip"


def download(data_dir: Path, archive: Path | None = None, force: bool = False) -> DownloadResult:
    """Fetch (or take `archive`), unpack, validate and cache; a no-op when already done."""
    data_dir = Path(data_dir)
    fetched = False
    if archive is None and places.competition_input() is not None:
        # On Kaggle the competition is already mounted: no API call, no zip.
        return from_folder(data_dir, places.competition_input(), force)
    if archive is not None:
        source = Path(archive)
        if not source.is_file():
            raise KitError(f"{source}: archive not found; expected a copy of {COMPETITION}.zip")
    else:
        source = raw_archive_path(data_dir)
        if force or not source.is_file():
            from kit.kaggle import client  # only here does the kit need the network

            source = client.download_competition(source.parent, force=True)
            fetched = True
    if not force and not fetched and archive_io.is_unpacked(source, data_dir):
        return DownloadResult(source, data_dir, fetched, False, tables.validate_all(data_dir))
    counts = _unpack_staged(lambda staging: archive_io.unpack(source, staging), data_dir)
    return DownloadResult(source, data_dir, fetched, True, counts)


def from_folder(data_dir: Path, folder: Path, force: bool = False) -> DownloadResult:
    """The competition as a Kaggle notebook sees it (read-only, either layout) into data_dir:
    unpacked, validated and cached there; a no-op when already done."""
    data_dir, folder = Path(data_dir), Path(folder)
    if not force and archive_io.is_unpacked_folder(folder, data_dir):
        return DownloadResult(folder, data_dir, False, False, tables.validate_all(data_dir))
    counts = _unpack_staged(lambda staging: archive_io.unpack_folder(folder, staging), data_dir)
    return DownloadResult(folder, data_dir, False, True, counts)


def _unpack_staged(unpack, data_dir: Path) -> dict:
    staging = data_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(staging)
        counts = tables.validate_all(staging)
        _move_into_place(staging, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _move_into_place(staging: Path, data_dir: Path) -> None:
    # The old marker goes first: a move cut short must not leave a folder of mixed files that
    # still says it is complete.
    (data_dir / archive_io.MARKER).unlink(missing_ok=True)
    (data_dir / "cache").mkdir(parents=True, exist_ok=True)
    for stale in (data_dir / "cache").glob("*"):
        stale.unlink()
    for cached in (staging / "cache").glob("*"):
        os.replace(cached, data_dir / "cache" / cached.name)
    for name in tables.CSV_FILES:
        os.replace(staging / name, data_dir / name)
    # The marker goes last: it is what says "this folder is complete".
    os.replace(staging / archive_io.MARKER, data_dir / archive_io.MARKER)


def prepare_notebook_data(data_dir: Path) -> str | None:
    """On Kaggle, make data_dir (the default scratch folder) hold the mounted competition's
    CSVs, validated and cached; a line saying what was done, or None when nothing was (not on
    Kaggle, another data folder, or already prepared)."""
    data_dir = Path(data_dir)
    if data_dir != places.notebook_data_dir() or not places.on_kaggle():
        return None
    folder = places.competition_input()
    if folder is None:
        raise KitError(
            f"no competition under {places.kaggle_root() / 'input'}: add it to the notebook "
            f"(Add Input > Competitions > {COMPETITION}), or pass --data with a folder of its CSVs"
        )
    result = from_folder(data_dir, folder)
    if not result.unpacked:
        return None
    counts = result.counts
    return (f"[green]ready[/] {data_dir}/ from {folder}: {counts['training_rows']} training "
            f"rows, {counts['test_images']} test images, {counts['lookup_rows']} lookup rows")
