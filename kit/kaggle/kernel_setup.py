"""Runs on Kaggle's machine: the body of the script that `python -m kit cv --remote kaggle`
pushes, and the installer a Kaggle notebook runs by hand (`python kit/kaggle/kernel_setup.py`).

Standard library only, and it never imports the kit: it runs before the kit is there. The
pushed script is this file with three names put in front of it (kit/remote/kernels.py writes them):
BUNDLE, the kit's code (kit/ and pyproject.toml) as a base64 gzip tar; CV_ARGS, the cv flags;
SOURCE, the commit it came from. It unpacks the code into scratch space, installs what the
Kaggle image lacks or has outside the kit's ranges (pinning everything else installed, so the
image's jax and CUDA stay as they are), then runs `python -m kit cv` with the runs folder in
/kaggle/working, which Kaggle saves as the kernel's output. No credential is in it or needed.

The version rules here (a requirement met by what is installed, the extras a distribution
declares) are the kit's only ones: kit/training/runtime.py checks a process with them too.
"""
from __future__ import annotations

import base64
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import NamedTuple

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # an image without packaging still has pip's own copy: pip installs here
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
PLAIN_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]*")
# The image's accelerator stack, built for its CUDA: kept as it is, never replaced; a kit
# that cannot run on it says so instead.
KEPT = ("jax", "jaxlib")


def say(text: str) -> None:
    # One flushed line at a time: the kernel's log is what the laptop shows while it waits.
    print(f"[kit {time.strftime('%H:%M:%S')}] {text}", flush=True)


def kaggle_root() -> Path:
    return Path(os.environ.get("KIT_KAGGLE_ROOT") or "/kaggle")


def unpack_code(bundle: str, into: Path) -> Path:
    """The bundled kit into `into`; refuses members that would land outside it."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(bundle)), mode="r:gz") as archive:
        for member in archive.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or path.is_absolute() or ".." in path.parts:
                raise SystemExit(f"kit: the bundled code has a bad member {member.name!r}")
            target = into / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    return into


def requirements(pyproject: Path) -> list[str]:
    """The [project] dependencies of pyproject.toml."""
    import tomllib

    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


class Shortfall(NamedTuple):
    """A requirement the installed versions do not meet, and what is there instead."""
    requirement: str
    name: str       # the distribution the requirement names, canonical ('dm-haiku')
    found: str      # what is installed, for a message: 'rich 15.0.0', 'no dm-haiku'
    kept: bool      # the image's own (KEPT): to refuse, not to replace


def name_of(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def meets(requirement: Requirement, version: str) -> bool:
    try:  # a pre-release counts: images ship them (jaxlib 0.7.2rc1)
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def applies(requirement: Requirement, extras: tuple[str, ...] = ()) -> bool:
    """Whether a requirement's marker holds here, with `extras` asked for."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or ("",))


def extra_requirements(requires_dist: list[str], extras: tuple[str, ...]) -> list[Requirement]:
    """The lines of a distribution's Requires-Dist that only its `extras` bring in (what
    dm-haiku[jax] declares about jax)."""
    chosen = []
    for line in requires_dist:
        requirement = Requirement(line)
        if extras and applies(requirement, extras) and not applies(requirement):
            chosen.append(requirement)
    return chosen


def shortfall(requirement: str, installed: Mapping[str, str],
              requires_of: Callable[[str], list[str]]) -> Shortfall | None:
    """How the installed versions (canonical name: version) fall short of `requirement`:
    absent, outside its range, or installed with an extra whose own requirements are unmet
    (dm-haiku 0.0.17 declares jax>=0.11.0 under [jax]: beside jax 0.7.2 it is the wrong one).
    None when met, or when its marker does not hold here."""
    parsed = Requirement(requirement)
    name = canonicalize_name(parsed.name)
    if not applies(parsed):
        return None
    version = installed.get(name)
    if version is None:
        return Shortfall(requirement, name, f"no {name}", False)
    if not meets(parsed, version):
        return Shortfall(requirement, name, f"{name} {version}", name in KEPT)
    for declared in extra_requirements(requires_of(name), tuple(sorted(parsed.extras))):
        other = installed.get(canonicalize_name(declared.name))
        if other is None or not meets(declared, other):
            return Shortfall(requirement, name, (f"{name} {version}, which declares "
                                                 f"{declared.name}{declared.specifier} beside "
                                                 f"{declared.name} {other or 'absent'}"), False)
    return None


def shortfalls(required: list[str], installed: Mapping[str, str],
               requires_of: Callable[[str], list[str]]) -> list[Shortfall]:
    found = (shortfall(requirement, installed, requires_of) for requirement in required)
    return [entry for entry in found if entry is not None]


def refusal(entries: list[Shortfall]) -> str | None:
    """The one line for the first shortfall that is the image's own (its jax), if any."""
    for entry in entries:
        if entry.kept:
            return (f"kit: the image has {entry.found}, the kit needs {entry.requirement}; "
                    "the image's jax is kept as it is, so run the kit on an image that has one "
                    "in that range")
    return None


def installed_versions() -> dict[str, str]:
    """Every installed distribution: canonical name -> version (the first on sys.path, the
    one an import finds)."""
    found: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        if distribution.metadata["Name"]:
            found.setdefault(canonicalize_name(distribution.metadata["Name"]), distribution.version)
    return found


def requires_dist(name: str) -> list[str]:
    try:
        return importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []


def missing(required: list[str]) -> list[str]:
    """The requirements the installed versions do not meet (absent, out of range, or with an
    extra whose own requirements are unmet)."""
    return [e.requirement for e in shortfalls(required, installed_versions(), requires_dist)]


def pins(installed: Mapping[str, str], replaced: set[str]) -> list[str]:
    """Constraints that keep every installed distribution as it is, but those `replaced`."""
    return sorted(f"{name}=={version}" for name, version in installed.items()
                  if name not in replaced and REQUIREMENT_NAME.fullmatch(name)
                  and PLAIN_VERSION.fullmatch(version or ""))  # one odd entry fails pip


def install(absent: list[str], scratch: Path) -> None:
    """pip install `absent`, with every other installed distribution pinned as it is."""
    constraints = scratch / "kit-constraints.txt"
    constraints.write_text("\n".join(pins(installed_versions(),
                                          {name_of(r) for r in absent})) + "\n")
    say(f"installing what the image lacks: {' '.join(absent)}")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
                             "--disable-pip-version-check", "-c", str(constraints), *absent],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise SystemExit(f"kit: could not install {' '.join(absent)} ({tail}); the kernel needs "
                         "internet on for that (leave out --no-internet)")


def scratch_dir() -> Path:
    temp = kaggle_root() / "temp"
    return temp if temp.is_dir() and os.access(temp, os.W_OK) else Path(tempfile.gettempdir())


def install_missing(pyproject: Path, scratch: Path) -> None:
    """Bring the installed versions into the kit's ranges, or refuse in one line."""
    required = requirements(pyproject)
    entries = shortfalls(required, installed_versions(), requires_dist)
    line = refusal(entries)
    if line:
        raise SystemExit(line)
    if not entries:
        say("every requirement is already installed, in range")
        return
    say("outside the kit's ranges: " + "; ".join(e.found for e in entries))
    install([e.requirement for e in entries], scratch)
    importlib.invalidate_caches()
    left = shortfalls(required, installed_versions(), requires_dist)
    if left:
        raise SystemExit("kit: after installing, still " + "; ".join(
            f"{e.found} (the kit needs {e.requirement})" for e in left))


def run_remote_cv(bundle: str, cv_args: list[str], source: str) -> int:
    scratch = scratch_dir()
    code = unpack_code(bundle, scratch / "kit-code")
    say(f"kit code from {source}, unpacked into {code}")
    install_missing(code / "pyproject.toml", scratch)
    working = kaggle_root() / "working"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    # What the kit trains on here, before anything else of it runs: the log says it first.
    subprocess.call([sys.executable, "-m", "kit", "devices"], cwd=working, env=env)
    command = [sys.executable, "-m", "kit", "--runs", str(working / "cv"), "cv", *cv_args]
    say("running: python -m kit " + " ".join(command[3:]))
    returncode = subprocess.call(command, cwd=working, env=env)
    # cv/latest is a symlink: an output listing may skip it or copy the whole run again.
    (working / "cv" / "latest").unlink(missing_ok=True)
    return returncode


if __name__ == "__main__":
    if "BUNDLE" in globals():  # the pushed script
        sys.exit(run_remote_cv(BUNDLE, CV_ARGS, SOURCE))  # noqa: F821 (put in front by remote.py)
    # By hand in a notebook: install what the image lacks for this checkout's kit.
    install_missing(Path(__file__).resolve().parents[2] / "pyproject.toml", scratch_dir())
