"""Unpacking the competition zip (with training.zip and test.zip inside) into data/, safely;
or the same files from a folder, as a Kaggle notebook sees them under /kaggle/input.

A member is written to a temporary name and renamed only once it is complete and its CRC
checked, so an interrupted unpack never leaves a CSV that looks valid.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from kit.core import fileio
from kit.core.errors import KitError
from kit.data.tables import LOOKUP_CSV, SAMPLE_CSV, TEST_CSV, TRAINING_CSV

# Kaggle's zip: two nested zips and two CSVs. Each unpacked file comes from one member.
NESTED = {"training.zip": TRAINING_CSV, "test.zip": TEST_CSV}
PLAIN = (LOOKUP_CSV, SAMPLE_CSV)
MAX_MEMBER_BYTES = 2 << 30  # Kaggle's training.csv is 240 MB; 2 GB is absurd
MAX_RATIO = 100  # CSV of digits compresses about 4:1; a bomb compresses thousands to one
MARKER = ".unpacked.json"


def _open_zip(source: bytes | Path, name: str) -> zipfile.ZipFile:
    head = b""
    try:
        if isinstance(source, bytes):
            head = source[:64]
            return zipfile.ZipFile(io.BytesIO(source))
        with open(source, "rb") as f:
            head = f.read(64)
        # Opened by path, the ZipFile owns the file and closes it with itself.
        return zipfile.ZipFile(source)
    except FileNotFoundError:
        raise KitError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise KitError(f"{name}: is a folder; expected a zip file") from None
    except PermissionError:
        raise KitError(f"{name}: cannot read it (permission denied)") from None
    # A damaged directory can surface as any of these, not only as BadZipFile.
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error, UnicodeError,
            NotImplementedError):  # e.g. "zip file version 13.7" from a garbled header
        hint = ""
        if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            hint = " (it is an HTML page: a login or error page saved instead of the data)"
        elif not head:
            hint = " (it is empty)"
        raise KitError(f"{name}: not a valid zip archive{hint}; download it again") from None


def _check_member(info: zipfile.ZipInfo, archive: str) -> None:
    if not info.filename:
        raise KitError(f"{archive}: a member has an empty name (a damaged directory); "
                       "download it again")
    path = PurePosixPath(info.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or info.filename.startswith(("/", "\\")) or (
        len(info.filename) > 1 and info.filename[1] == ":"
    ):
        raise KitError(f"{archive}: member {info.filename!r} would be written outside the "
                       "target folder; refusing to unpack")
    if info.file_size > MAX_MEMBER_BYTES:
        raise KitError(f"{archive}: member {info.filename!r} unpacks to {info.file_size} bytes; "
                       f"expected at most {MAX_MEMBER_BYTES}")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise KitError(f"{archive}: member {info.filename!r} compresses {info.file_size} bytes "
                       f"into {info.compress_size} (a zip bomb?); refusing to unpack")


def _members(zf: zipfile.ZipFile, archive: str, expected: tuple[str, ...]) -> dict:
    infos = {}
    for info in zf.infolist():
        _check_member(info, archive)
        if not info.is_dir():
            infos[PurePosixPath(info.filename).name] = info
    missing = [name for name in expected if name not in infos]
    if missing:
        found = ", ".join(sorted(infos)) or "nothing"
        raise KitError(f"{archive}: missing member {', '.join(missing)} (it holds {found}); "
                       "expected Kaggle's facial-keypoints-detection archive")
    return infos


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str) -> bytes:
    """The member's bytes, read with a hard size limit (a header can lie about the size)."""
    try:
        with zf.open(info) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as error:
        raise KitError(f"{archive}: member {info.filename!r} is damaged ({error}); "
                       "download it again") from None
    except NotImplementedError:  # a subclass of RuntimeError: first
        raise KitError(f"{archive}: member {info.filename!r} uses compression method "
                       f"{info.compress_type}, which this Python cannot read; expected deflate "
                       "or stored") from None
    except RuntimeError:  # what zipfile raises for an encrypted member
        raise KitError(f"{archive}: member {info.filename!r} is encrypted; expected Kaggle's "
                       "unencrypted archive") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise KitError(f"{archive}: member {info.filename!r} unpacks to more than "
                       f"{MAX_MEMBER_BYTES} bytes; refusing to unpack")
    return data


def unpack(archive: Path, data_dir: Path) -> dict[str, Path]:
    """Kaggle's zip into data_dir/*.csv; validates the layout before writing anything."""
    archive, data_dir = Path(archive), Path(data_dir)
    name = str(archive)
    outer = _open_zip(archive, name)
    with outer:
        members = _members(outer, name, tuple(NESTED) + PLAIN)
        contents: dict[str, bytes] = {}
        for nested, csv_name in NESTED.items():
            inner_name = f"{name}:{nested}"
            inner = _open_zip(_read_member(outer, members[nested], name), inner_name)
            with inner:
                inner_members = _members(inner, inner_name, (csv_name,))
                contents[csv_name] = _read_member(inner, inner_members[csv_name], inner_name)
        for csv_name in PLAIN:
            contents[csv_name] = _read_member(outer, members[csv_name], name)
    written = {}
    for csv_name, data in contents.items():
        written[csv_name] = fileio.write_bytes(data_dir / csv_name, data)
    fileio.write_json(data_dir / MARKER, {
        "archive_sha256": file_sha256(archive),
        "sizes": {csv_name: len(data) for csv_name, data in contents.items()},
    })
    return written


def folder_sources(folder: Path) -> dict[str, Path]:
    """Where each CSV is in the competition's folder as a Kaggle notebook sees it: Kaggle serves
    the zip's members (training.zip and test.zip beside the two small CSVs); older notebooks
    see them extracted as training/training.csv and test/test.csv."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: no such folder; expected the competition's files there")
    sources = {}
    for csv_name in (*NESTED.values(), *PLAIN):
        stem = csv_name.removesuffix(".csv")
        candidates = (folder / stem / csv_name, folder / csv_name, folder / f"{stem}.zip")
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            present = ", ".join(sorted(path.name for path in folder.iterdir())) or "nothing"
            raise KitError(f"{folder}: no {stem}.zip, {stem}/{csv_name} or {csv_name} (it holds "
                           f"{present}); expected Kaggle's facial-keypoints-detection files")
        sources[csv_name] = found
    return sources


def unpack_folder(folder: Path, data_dir: Path) -> dict[str, Path]:
    """The competition's CSVs from a read-only folder (either layout) into data_dir; nothing is
    written into `folder`."""
    data_dir = Path(data_dir)
    sources = folder_sources(folder)
    written = {}
    for csv_name, source in sources.items():
        if source.suffix == ".zip":
            inner = _open_zip(source, str(source))
            with inner:
                members = _members(inner, str(source), (csv_name,))
                content = _read_member(inner, members[csv_name], str(source))
            written[csv_name] = fileio.write_bytes(data_dir / csv_name, content)
        else:
            with fileio.atomic_path(data_dir / csv_name) as temporary:
                shutil.copyfile(source, temporary)
            written[csv_name] = data_dir / csv_name
    fileio.write_json(data_dir / MARKER, {
        "folder": str(Path(folder)),
        "sources": _signature(sources),
        "sizes": {name: path.stat().st_size for name, path in written.items()},
    })
    return written


def _signature(sources: dict[str, Path]) -> dict[str, list]:
    # Size and modification time: Kaggle's input is read-only, so a change means a new mount.
    return {name: [str(path), path.stat().st_size, path.stat().st_mtime_ns]
            for name, path in sources.items()}


def is_unpacked_folder(folder: Path, data_dir: Path) -> bool:
    """True when data_dir holds the CSVs of this folder, unchanged, from an earlier unpack."""
    try:
        marker = json.loads((Path(data_dir) / MARKER).read_text())
        if marker["folder"] != str(Path(folder)):
            return False
        if marker["sources"] != _signature(folder_sources(folder)):
            return False
        return all((Path(data_dir) / n).stat().st_size == size
                   for n, size in marker["sizes"].items())
    except (OSError, ValueError, KeyError, TypeError, KitError):
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_unpacked(archive: Path, data_dir: Path) -> bool:
    """True when data_dir holds this archive's CSVs, unchanged in size, from an earlier unpack."""
    try:
        marker = json.loads((Path(data_dir) / MARKER).read_text())
        sizes = marker["sizes"]
        if any((Path(data_dir) / n).stat().st_size != size for n, size in sizes.items()):
            return False
        return marker["archive_sha256"] == file_sha256(archive)
    except (OSError, ValueError, KeyError, TypeError):
        return False
