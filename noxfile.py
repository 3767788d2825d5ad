"""The test matrix: the kit on today's newest versions, on Kaggle's notebook image, and on the
oldest versions pyproject.toml allows. `nox -s kaggle_image` (CI runs it after `make test`);
`make matrix` runs all three. The ranges come from pyproject.toml alone: the floor is read
from it, the image's versions are the image's own (docs: DEPENDENCIES.md, "Where Kaggle users
run the kit").
"""
from __future__ import annotations

from pathlib import Path

import nox
import tomllib
from packaging.requirements import Requirement

nox.options.sessions = ["newest", "kaggle_image", "floor"]
nox.options.reuse_existing_virtualenvs = False  # a matrix entry is a fresh install
nox.options.error_on_missing_interpreters = True  # a skipped entry would read as a pass

PROJECT = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())["project"]
TEST_TOOLS = [r for r in PROJECT["optional-dependencies"]["dev"] if not r.startswith("nox")]

# Kaggle's notebook and kernel image (Colab's GPU runtime, May 2026): its jax stays as it is;
# rich 15.0.0 is the image's too, outside the kit's rich<15, so the installer must move it.
IMAGE_PYTHON = "3.12"
IMAGE = ["jax==0.7.2", "jaxlib==0.7.2", "optax==0.2.8", "flax==0.11.2", "numpy==2.0.2",
         "pandas==2.2.2", "rich==15.0.0"]
# What matters on the image, under ten minutes on two cores: a quick cv, notebook mode, a
# submission, the config, the engine, the installer's and version check's own tests, mixed
# precision and whole folds per device (what a T4 pair trains with), and a
# remote run whose kernel (the fake server runs it with this session's Python) runs on the
# image's versions, comes back and submits.
IMAGE_TESTS = ["tests/test_notebook.py", "tests/test_submission.py", "tests/test_config.py",
               "tests/test_config_validation.py", "tests/test_cv.py", "tests/test_engine.py",
               "tests/test_kernel_setup.py", "tests/test_versions.py", "tests/test_precision.py",
               "tests/test_devices.py",
               ("tests/test_remote.py::test_remote_cv_runs_the_pushed_code_and_comes_back_as_a"
                "_submittable_run")]
# What the floor's kaggle client and the oldest arrays stack must carry: Kaggle's routes
# (download, submit, kernels), the submission and a quick cv.
FLOOR_TESTS = ["tests/test_kaggle_io.py", "tests/test_download.py", "tests/test_remote.py",
               "tests/test_submission.py", "tests/test_cv.py", "tests/test_versions.py"]
SHOW_VERSIONS = ("import json; from kit.training import runtime; "
                 "print('versions:', json.dumps(runtime.running()))")


def lowest(requirement: str) -> str:
    """`name[extras]==V` for a requirement's `>=V` floor ('dm-haiku[jax]>=0.0.12,<0.1' ->
    'dm-haiku[jax]==0.0.12')."""
    parsed = Requirement(requirement)
    floors = [spec.version for spec in parsed.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError(f"pyproject.toml: {requirement!r} needs one >= floor to test")
    extras = f"[{','.join(sorted(parsed.extras))}]" if parsed.extras else ""
    return f"{parsed.name}{extras}=={floors[0]}"


def floor_pins(requirements: list[str]) -> list[str]:
    """Every dependency at its floor, and jaxlib at jax's (jax alone would take the newest
    jaxlib it allows)."""
    pins = [lowest(requirement) for requirement in requirements]
    jax = next(pin for pin in pins if pin.startswith("jax=="))
    return pins + [jax.replace("jax==", "jaxlib==")]


def floor_python(requires_python: str) -> str:
    return next(spec.version for spec in Requirement(f"python{requires_python}").specifier
                if spec.operator == ">=")


@nox.session
def newest(session: nox.Session) -> None:
    """Today's newest versions, the whole suite (what `make test` runs in .venv)."""
    session.install("-e", ".[dev]")
    session.run("python", "-c", SHOW_VERSIONS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=IMAGE_PYTHON)
def kaggle_image(session: nox.Session) -> None:
    """The image's versions first, then the kit's other requirements the way a Kaggle kernel
    gets them: kernel_setup's own installer, the kit run from the checkout, not installed."""
    session.install(*IMAGE)
    session.run("python", "kit/kaggle/kernel_setup.py")
    session.install(*TEST_TOOLS)
    session.run("python", "-c", SHOW_VERSIONS)
    session.run("python", "-m", "pytest", "-n", "2", "--dist", "worksteal",
                *(session.posargs or IMAGE_TESTS))


@nox.session(python=floor_python(PROJECT["requires-python"]))
def floor(session: nox.Session) -> None:
    """The oldest Python and dependency versions pyproject.toml declares, pinned."""
    session.install(*floor_pins(PROJECT["dependencies"]), *TEST_TOOLS)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "pip", "check")
    session.run("python", "-c", SHOW_VERSIONS)
    session.run("python", "-m", "pytest", "-m", "not slow", *(session.posargs or FLOOR_TESTS))
