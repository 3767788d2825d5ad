"""What the kit trains on (kit/training/hardware.py): `python -m kit devices`, the one-line
refusal of a CPU fallback beside an NVIDIA GPU, a GPU too old for the installed jax, and the
process set-up that the entry points do and an import does not.

The driver's presence is faked as a user's machine would show it: a stub `nvidia-smi` on
PATH; jax's own reason by a CUDA plugin (a `jax_plugins` package on PYTHONPATH) whose
initialize() fails, as jax-cuda12-plugin does beside a cuDNN it cannot load. Whatever
depends on the state of jax's backends runs in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.training import hardware
from kit.training import precision as precisions

REPO = Path(__file__).resolve().parents[1]
T4 = "Tesla T4, 7.5, 15360, 535.104.05"
PLUGIN_ERROR = "Unable to load cuDNN. Is it installed?"


def stub_nvidia_smi(folder: Path, query: str | None = T4, listed: str = "Tesla T4") -> Path:
    """A folder holding an `nvidia-smi` that answers the query with `query` (None: fails, as
    an older driver without the compute_cap field does) and -L with `listed`."""
    folder.mkdir(parents=True, exist_ok=True)
    answer = f'echo "{query}"' if query is not None else "echo 'Field is not valid' >&2; exit 2"
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\ncase \"$1\" in\n"
                      f"  -L) echo \"GPU 0: {listed} (UUID: GPU-0000)\";;\n"
                      f"  --query-gpu=*) {answer};;\n"
                      "  *) exit 9;;\nesac\n")
    script.chmod(0o755)
    return folder


def failing_cuda_plugin(folder: Path) -> Path:
    plugin = folder / "jax_plugins" / "xla_cuda12"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(
        f"def initialize():\n    raise RuntimeError({PLUGIN_ERROR!r})\n")
    return folder


def kit_env(tmp_path: Path, gpu: Path | None = None, plugin: Path | None = None,
            **extra: str) -> dict:
    """The test's environment without the parent's device flags (the entry point must set
    them), JAX free to choose its backend, and optionally the stubs."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "PYTHONPATH")}
    if gpu is not None:
        env["PATH"] = f"{gpu}{os.pathsep}{env['PATH']}"
    if plugin is not None:
        env["PYTHONPATH"] = str(plugin)
    env.update(KIT_KAGGLE_ROOT=str(tmp_path / "not-kaggle"), **extra)
    return env


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


# ---------------------------------------------------------------- the driver


def test_the_driver_s_gpus_come_from_nvidia_smi_or_its_device_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(stub_nvidia_smi(tmp_path / "new")))
    assert hardware.driver_gpus(device_files=()) == [
        hardware.DriverGpu("Tesla T4", "7.5", 15360, "535.104.05")]
    monkeypatch.setenv("PATH", str(stub_nvidia_smi(tmp_path / "old", query=None)))
    assert hardware.driver_gpus(device_files=()) == [hardware.DriverGpu("Tesla T4")]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    device = tmp_path / "nvidia0"
    assert hardware.driver_gpus(device_files=(str(device),)) == []
    device.touch()
    assert hardware.driver_gpus(device_files=(str(device),)) == [
        hardware.DriverGpu(f"an NVIDIA GPU (the driver's {device})")]


# ---------------------------------------------------------------- the lines


def test_a_cpu_fallback_beside_a_gpu_quotes_jax_and_names_the_fix():
    gpus = [{"name": "Tesla T4", "compute_capability": "7.5"}] * 2
    line = hardware.cpu_fallback(gpus, "cpu", ["CUDA backend failed\n to initialize"], None,
                                 "0.7.2", on_kaggle=False)
    assert line == ("jax 0.7.2 runs on the CPU only, but this machine has an NVIDIA GPU "
                    "(Tesla T4); jax said: CUDA backend failed to initialize; install jax's "
                    "CUDA build: pip install -e '.[cuda12]'; or --allow-cpu trains on the CPU "
                    "anyway")
    silent = hardware.cpu_fallback(gpus, "cpu", [], None, "0.7.2", on_kaggle=True)
    assert "no CUDA build of jax is installed" in silent and "kernel_setup.py" in silent
    assert "installed but jax logged no reason" in hardware.cpu_fallback(
        gpus, "cpu", [], ("jax-cuda12-plugin", "0.7.2"), "0.7.2", on_kaggle=False)
    assert hardware.cpu_fallback(gpus, "gpu", [], None, "0.7.2", False) is None
    assert hardware.cpu_fallback([], "cpu", ["anything"], None, "0.7.2", False) is None


@pytest.mark.parametrize(("capability", "plugin", "expected"), [
    ("7.5", ("jax-cuda13-plugin", "0.10.2"), None),
    ("7.0", ("jax-cuda13-plugin", "0.10.2"), "jax's CUDA 13 build supports (7.5 or newer"),
    ("5.2", None, None),
    ("5.0", ("jax-cuda12-plugin", "0.7.2"), "jax's CUDA 12 build supports (5.2 or newer"),
    ("3.7", None, "no jax build runs on it"),
    (None, None, None),
])
def test_a_gpu_older_than_the_installed_jax_supports_is_named(capability, plugin, expected):
    line = hardware.unsupported_gpu([{"name": "Old", "compute_capability": capability}],
                                    plugin)
    if expected is None:
        assert line is None
    else:
        assert f"(Old, compute capability {capability})" in line and expected in line
        assert "\n" not in line
    if capability == "7.0":
        assert "jax's CUDA 12 build runs on it: pip install -e '.[cuda12]'" in line


@pytest.mark.parametrize(("platform", "capability", "precision"), [
    ("cpu", None, "fp32"), ("tpu", None, "bf16"), ("gpu", "9.0", "bf16"),
    ("gpu", "8.9", "bf16"), ("gpu", "8.0", "bf16"), ("gpu", "7.5", "fp16"),
    ("gpu", "7.0", "fp16"), ("gpu", "6.0", "fp32"), ("gpu", None, "fp32"),
])
def test_auto_precision_follows_the_compute_capability(platform, capability, precision):
    assert precisions.auto_precision(platform, capability) == precision


def test_the_cpu_is_chosen_by_the_flag_or_jax_platforms():
    assert hardware.cpu_chosen(True, {}) and hardware.cpu_chosen(False, {"JAX_PLATFORMS": "cpu"})
    assert not hardware.cpu_chosen(False, {"JAX_PLATFORMS": "cuda"})
    assert not hardware.cpu_chosen(False, {})


# ---------------------------------------------------------------- the CLI, in fresh processes


@pytest.mark.slow
def test_cv_beside_a_gpu_jax_cannot_use_stops_in_one_line_before_anything(tmp_path):
    env = kit_env(tmp_path, stub_nvidia_smi(tmp_path / "bin"), failing_cuda_plugin(
        tmp_path / "plugin"))
    runs = tmp_path / "cv"
    args = ["-m", "kit", "--data", str(tmp_path / "data"), "--runs", str(runs), "cv",
            "--preset", "quick"]
    refused = run(args, env)
    assert refused.returncode == 1, refused.stderr
    error = refused.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("error: jax ") and "runs on the CPU only, but this machine has " \
        "an NVIDIA GPU (Tesla T4); jax said: Jax plugin configuration error" in error
    assert PLUGIN_ERROR in error and "pip install -e '.[cuda12]'" in error
    assert "--allow-cpu" in error and not runs.exists()

    allowed = run([*args, "--allow-cpu"], env)  # past the check: then the missing data
    lines = allowed.stderr.strip().splitlines()
    assert allowed.returncode == 1 and len(lines) == 2, allowed.stderr
    assert lines[0].startswith("warning: jax ") and "NVIDIA GPU (Tesla T4)" in lines[0]
    assert lines[0].endswith("; training on the CPU as asked") and "--allow-cpu" not in lines[0]
    assert lines[1].startswith("error: ") and "training.csv" in lines[1]
    assert "devices " in allowed.stdout and " cpu device(s) (cpu)" in allowed.stdout


def test_devices_reports_the_machine_with_the_entry_point_s_device_flags(tmp_path):
    env = kit_env(tmp_path, stub_nvidia_smi(tmp_path / "bin", query="Quadro K620, 3.0, 2048, "
                                            "470.1"), KIT_CPU_DEVICES="3")
    shown = run(["-m", "kit", "devices"], env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    import jax

    assert "backend: cpu, 3 device(s)" in out  # the flags reached jax before its backends
    assert "NVIDIA driver lists: Quadro K620 (compute capability 3.0, 2.0 GiB, driver " \
           "470.1)" in out
    assert f"jax {jax.__version__}, jaxlib " in out and "CUDA none, cuDNN none" in out
    assert "make cv here: preset default" in out and "precision fp32 (fp32 on CPUs)" in out
    assert "folds: map, one fold after another" in out and "steps per dispatch: 1 until" in out
    assert "problem: this machine's GPU (Quadro K620, compute capability 3.0) is older than " \
           "jax's CUDA 12 build supports" in out


def test_the_notebook_s_calls_set_the_process_up_too(tmp_path):
    script = "import kit.cli.notebook as kn\nkn.devices()\n"
    shown = run(["-c", script], kit_env(tmp_path, KIT_CPU_DEVICES="3"))
    assert shown.returncode == 0, shown.stderr
    assert "backend: cpu, 3 device(s)" in shown.stdout
    assert "NVIDIA driver: none found" in shown.stdout or "NVIDIA driver lists" in shown.stdout


def test_importing_the_kit_changes_nothing_in_the_process(tmp_path):
    script = ("import os, kit, kit.config, kit.runs, kit.training, kit.cli.main, kit.cli.notebook"
              "\nimport jax, json\n"
              "print(json.dumps([os.environ.get('XLA_FLAGS'),"
              " jax.config.jax_compilation_cache_dir]))\n")
    shown = run(["-c", script], kit_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == [None, None]


def test_the_survey_is_one_record_with_a_one_line_summary():
    import jax

    record = hardware.survey()
    backend, count = jax.default_backend(), jax.local_device_count()
    assert record["backend"] == backend and len(record["devices"]) == count
    assert record["cv"]["preset"] in ("default", "gpu")
    assert json.loads(json.dumps(record)) == record  # as engine.json stores it
    line = hardware.summary(record)
    assert "\n" not in line and line.startswith(f"{count} {backend} device(s)")
    assert hardware.describe(record)[0] == f"backend: {backend}, {count} device(s)"


def test_a_gpu_record_reads_as_kaggle_s_t4_pair_would():
    t4 = {"platform": "gpu", "kind": "Tesla T4", "memory_bytes": 15 * 2**30,
          "compute_capability": "7.5"}
    record = {
        "backend": "gpu", "devices": [{"id": 0, **t4}, {"id": 1, **t4}],
        "host": {"cpu_cores": 4, "memory_bytes": 32 * 2**30},
        "driver_gpus": [{"name": "Tesla T4", "compute_capability": "7.5", "memory_mib": 15360,
                         "driver": "560.35.03"}] * 2,
        "versions": {"jax": "0.7.2", "jaxlib": "0.7.2", "cuda_plugin": "jax-cuda12-plugin 0.7.2",
                     "cuda": "12.8", "cudnn": hardware._cudnn_text(91002)},
        "jax_said": [], "problem": None,
        "cv": {"preset": "gpu", "preset_why": "a GPU is here", "precision": "fp16",
               "precision_rule": "train.precision=auto picks it by the device",
               "fold_batching": "map", "batch_split_over": 2, "chunk_seconds": 1.0,
               "steps_per_dispatch": "1 until a chunk is timed"},
    }
    lines = hardware.describe(record)
    assert lines[:3] == ["backend: gpu, 2 device(s)",
                         "  gpu:0 Tesla T4 (memory 15.0 GiB, compute capability 7.5)",
                         "  gpu:1 Tesla T4 (memory 15.0 GiB, compute capability 7.5)"]
    assert ("jax 0.7.2, jaxlib 0.7.2, CUDA plugin jax-cuda12-plugin 0.7.2, CUDA 12.8, "
            "cuDNN 9.10.2") in lines
    assert "  precision fp16 (train.precision=auto picks it by the device)" in lines
    assert not any(line.startswith("problem") for line in lines)
    assert hardware.summary(record).startswith(
        "2 gpu device(s) (Tesla T4); jax 0.7.2, CUDA 12.8, cuDNN 9.10.2; precision fp16; "
        "folds map")
    assert hardware._cudnn_text(8907) == "8.9.7"


def test_a_backend_jax_platforms_asks_for_and_jax_cannot_start_is_one_line(tmp_path):
    shown = run(["-m", "kit", "devices"], kit_env(tmp_path, JAX_PLATFORMS="cuda"))
    error = shown.stderr.strip()
    assert shown.returncode == 1 and len(error.splitlines()) == 1, error
    assert error.startswith("error: JAX_PLATFORMS=cuda: jax could not start that backend (")
    assert "unset JAX_PLATFORMS" in error
