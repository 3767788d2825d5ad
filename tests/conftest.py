"""Fixtures shared by the test modules: one small synthetic competition and one tiny CV run
on it, made once per session (compiling the networks is the slow part)."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from unittest import mock


def session_folder() -> Path:
    """This test session's scratch folder (its compile cache, a Kaggle root that holds
    nothing): made by the first process, inherited by its pytest-xdist workers and their
    subprocesses through the environment, so all share one cache and none reads a program
    compiled by another checkout's code; removed when the session ends."""
    if "KIT_TEST_SESSION_DIR" not in os.environ:
        os.environ["KIT_TEST_SESSION_DIR"] = tempfile.mkdtemp(prefix="kit-test-session-")
    return Path(os.environ["KIT_TEST_SESSION_DIR"])


# The test networks are tiny: compiling them costs more than running them, so XLA spends
# little effort optimizing (subprocesses inherit it; results stay deterministic).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Set up as an entry point does, before anything starts JAX: compiled programs go to a cache
# of the test session's own, one for all its pytest-xdist workers and the subprocesses they
# start; no Kaggle mount of the machine the tests run on is taken for the data.
SESSION_FOLDER = session_folder()
os.environ["KIT_COMPILE_CACHE"] = str(SESSION_FOLDER / "compile-cache")
(SESSION_FOLDER / "no-kaggle").mkdir(exist_ok=True)
os.environ.setdefault("KIT_KAGGLE_ROOT", str(SESSION_FOLDER / "no-kaggle"))

from kit.training import runtime

# This process trains its tiny networks on one CPU device: split over two, every step waits
# for the other core (and xdist's other worker wants it). The environment is put back before
# JAX starts, so the subprocesses it starts (the command line, signals, pipelines) get the
# entry point's own devices, a user's path.
with mock.patch.dict(os.environ, KIT_CPU_DEVICES="1"):
    runtime.prepare_process()

import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.data import download, synth, tables
from kit.results import report
from kit.runs import cv

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The quick preset cut to 2 folds of 2 epochs.
QUICK_RUN = ["folds=2", "train.epochs=2", "grouped_folds=0"]
# Its network cut to one stage without residual blocks, the same soft-argmax head: tests
# trace and compile programs far more than they run them, and every layer costs in both.
SMALL_NETWORK = ["model.widths=8", "model.blocks_per_stage=0"]
QUICK = QUICK_RUN + SMALL_NETWORK
# The same as the notebook API's overrides dictionary.
SMALL_NETWORK_FIELDS = dict(setting.split("=") for setting in SMALL_NETWORK)


# Fixtures that train networks: a test that asks for one (directly or through another
# fixture) is in the slow tier, which `make test-fast` leaves out.
TRAINING_FIXTURES = frozenset({"quick_run", "shared_run", "tiny", "teacher_root", "student",
                               "shared_teacher", "alone", "folds_alone"})


def pytest_sessionfinish(session):
    """The session's scratch folder goes with the process that made it (a worker's session
    ends before its controller's)."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(SESSION_FOLDER, ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synth_competition(tmp_path_factory):
    """(what make_competition returned, the data folder it was downloaded into)."""
    folder = tmp_path_factory.mktemp("synth")
    made = synth.make_competition(folder / "competition", n_train=60, n_test=12, seed=0)
    download.download(folder / "data", archive=made["archive"])
    return made, folder / "data"


@pytest.fixture(scope="session")
def training(synth_competition):
    return tables.load_training(synth_competition[1])


@pytest.fixture(scope="session")
def quick_config():
    return config_io.override(config_io.preset("quick"), QUICK)


@pytest.fixture(scope="session")
def learning_config():
    """The quick preset's own network, 2 folds of 2 epochs: for tests of how far a network
    learns, which the small one barely does in a few steps."""
    return config_io.override(config_io.preset("quick"), QUICK_RUN)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, synth_competition, training, quick_config):
    """A finished 2-fold, 2-epoch run of both subsets, with its report and pictures."""
    _, data_dir = synth_competition
    root = tmp_path_factory.mktemp("cv")
    run_dir = cv.run_cv(quick_config, training, root)
    test = tables.load_test(data_dir)
    report.write(run_dir, training, tables.load_lookup(data_dir, test.image_ids))
    return run_dir


def refusal(build) -> str:
    """The KitError message of build(), which must be one line (how the CLI prints it)."""
    with pytest.raises(KitError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message
    return message


def read_archive(path: Path) -> dict[str, bytes]:
    """Every CSV in a Kaggle-layout zip by name, the nested zips opened."""
    files = {}
    with zipfile.ZipFile(path) as outer:
        for name in outer.namelist():
            content = outer.read(name)
            if name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(content)) as inner:
                    files.update({member: inner.read(member) for member in inner.namelist()})
            else:
                files[name] = content
    return files
