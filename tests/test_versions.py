"""Which versions a process runs, and the refusal of a jax, dm-haiku or kaggle outside the
kit's declared ranges (kit/training/runtime.py)."""
from __future__ import annotations

import platform
import re

import jax

from kit.cli import main as cli
from kit.kaggle import kernel_setup
from kit.runs import files
from kit.training import runtime

DECLARED = ["jax>=0.4.30,<0.13", "dm-haiku[jax]>=0.0.12,<0.1", "kaggle>=1.8,<3", "rich>=13,<15"]
IN_RANGE = {"jax": "0.7.2", "jaxlib": "0.7.2", "dm-haiku": "0.0.15", "kaggle": "2.2.5",
            "rich": "15.0.0"}  # rich is not one the check refuses


def test_versions_in_range_pass_and_one_outside_is_named_with_its_range():
    assert runtime.unsupported(DECLARED, IN_RANGE) is None
    line = runtime.unsupported(DECLARED, {**IN_RANGE, "kaggle": "1.7.4.5"})
    assert line.startswith("kaggle 1.7.4.5 is not supported: the kit needs kaggle>=1.8,<3")
    assert "\n" not in line
    assert runtime.unsupported(DECLARED, {**IN_RANGE, "jax": "0.13.0"}).startswith("jax 0.13.0")
    assert runtime.unsupported(DECLARED, {k: v for k, v in IN_RANGE.items()
                                          if k != "dm-haiku"}).startswith("no dm-haiku")


def test_a_dm_haiku_that_declares_another_jax_is_unsupported():
    requires = {"dm-haiku": ['jax>=0.11.0; extra == "jax"']}
    line = runtime.unsupported(DECLARED, {**IN_RANGE, "dm-haiku": "0.0.17"},
                               lambda name: requires.get(name, []))
    assert line.startswith("dm-haiku 0.0.17, which declares jax>=0.11.0 beside jax 0.7.2")


def test_this_process_is_supported_by_its_own_declared_ranges():
    declared = runtime.declared_requirements()
    assert set(runtime.CHECKED) <= {kernel_setup.name_of(r) for r in declared}
    runtime.check_supported()


def test_cv_refuses_an_unsupported_jax_before_anything_trains(tmp_path, monkeypatch, capsys):
    shadow = tmp_path / "jax-0.1.0.dist-info"  # what importlib.metadata finds first
    shadow.mkdir()
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: jax\nVersion: 0.1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "cv"
    assert cli.main(["--data", str(tmp_path / "data"), "--runs", str(runs), "cv"]) == 1
    error = capsys.readouterr().err
    assert re.search(r"jax 0.1.0 is not supported: the kit needs jax[<>=,.0-9]+ ", error)
    assert len(error.strip().splitlines()) == 1 and not runs.exists()


def test_running_names_the_stack_and_the_devices():
    versions = runtime.running()
    assert versions["python"] == platform.python_version() and versions["jax"] == jax.__version__
    assert versions["devices"] == {"platform": jax.devices()[0].platform,
                                   "kind": jax.devices()[0].device_kind,
                                   "count": jax.device_count()}
    line = runtime.describe(versions)
    assert f"jax {jax.__version__}, jaxlib " in line and f"{jax.device_count()} " in line


def test_a_runs_engine_json_keeps_the_hardware_record(quick_run):
    """What `python -m kit devices` prints, as the run saw it."""
    hardware = files.read_engine_calls(quick_run)[-1]["versions"]["hardware"]
    assert hardware["backend"] == jax.default_backend()
    assert len(hardware["devices"]) == jax.local_device_count()
    assert {"precision", "fold_batching", "steps_per_dispatch"} <= set(hardware["cv"])
