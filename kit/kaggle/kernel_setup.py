"""Runs on Kaggle's machine: the body of the script that `python -m kit cv --remote kaggle`
pushes, and the installer a Kaggle notebook runs by hand (`python kit/kaggle/kernel_setup.py`).

Standard library only, and it never imports the kit: it runs before the kit is there. The
pushed script is this file with three names put in front of it (kit/remote/kernels.py writes them):
BUNDLE, the kit's code (kit/ and pyproject.toml) as a base64 gzip tar; CV_ARGS, the cv flags;
SOURCE, the commit it came from. It unpacks the code into scratch space, installs only the
requirements the Kaggle image lacks (pinning everything already installed, so the image's
jax and CUDA stay as they are), then runs `python -m kit cv` with the runs folder in
/kaggle/working, which Kaggle saves as the kernel's output. No credential is in it or needed.
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
from pathlib import Path, PurePosixPath

REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
PLAIN_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]*")


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
    text = pyproject.read_text()
    try:
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    except ImportError:  # Python 3.10: the list is plain enough to read with a pattern
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.DOTALL | re.MULTILINE)
        return re.findall(r'"([^"]+)"', block.group(1)) if block else []


def missing(required: list[str]) -> list[str]:
    """The requirements with no installed distribution of that name (versions are not
    compared: the image's own versions are the ones to keep)."""
    absent = []
    for requirement in required:
        name = REQUIREMENT_NAME.match(requirement).group(1)
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(requirement)
    return absent


def install(absent: list[str], scratch: Path) -> None:
    """pip install what is absent, with every installed distribution pinned as it is."""
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                   if REQUIREMENT_NAME.fullmatch(d.metadata["Name"] or "")
                   and PLAIN_VERSION.fullmatch(d.version or "")})  # one odd entry fails pip
    constraints = scratch / "kit-constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
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
    absent = missing(requirements(pyproject))
    if absent:
        install(absent, scratch)
    else:
        say("every requirement is already installed")


def run_remote_cv(bundle: str, cv_args: list[str], source: str) -> int:
    scratch = scratch_dir()
    code = unpack_code(bundle, scratch / "kit-code")
    say(f"kit code from {source}, unpacked into {code}")
    install_missing(code / "pyproject.toml", scratch)
    working = kaggle_root() / "working"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
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
