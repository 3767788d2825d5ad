"""How the process meets the hardware, set before JAX starts: CPU cores as devices, and a
compilation cache that outlives the process.

On the CPU each core becomes a single-threaded device: training splits its batches over them
faster than one device's thread pool runs them (docs/engine.md), and it is the same code path
that splits them over several GPUs.

Compiling the training programs costs seconds to minutes (XLA's GPU autotuning, large
programs on the CPU); JAX's persistent cache keeps them on disk, keyed by the program and the
machine, so a second run of a preset loads them instead.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def cpu_device_flags(environ: dict[str, str]) -> str:
    """XLA_FLAGS with one single-threaded CPU device per core, unless the user set a count.

    KIT_CPU_DEVICES overrides the count (1: the plain single device with its thread pool).
    """
    flags = environ.get("XLA_FLAGS", "")
    if DEVICE_COUNT_FLAG in flags:
        return flags
    count = int(environ.get("KIT_CPU_DEVICES") or cpu_cores())
    if count <= 1:
        return flags
    return f"{flags} {DEVICE_COUNT_FLAG}={count} {SINGLE_THREADED}".strip()


SINGLE_THREADED = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def cache_dir(environ: dict[str, str]) -> Path | None:
    """Where compiled programs are kept: KIT_COMPILE_CACHE, else the user's cache folder;
    KIT_COMPILE_CACHE=off turns the cache off."""
    chosen = environ.get("KIT_COMPILE_CACHE")
    if chosen is not None:
        return None if chosen.lower() in ("", "0", "off", "none") else Path(chosen)
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kit" / "jax"


def configure(environ=os.environ) -> None:
    """Set the device flags (before JAX's backends start: they read them once) and turn
    the persistent compilation cache on."""
    environ["XLA_FLAGS"] = cpu_device_flags(environ)
    folder = cache_dir(environ)
    if folder is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, however quick to compile: the small ones add up to seconds per run.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@functools.cache  # once a process: a second call would find JAX's backends started
def prepare_process() -> None:
    """What each entry point does first, before JAX starts (never an import: a notebook that
    only reads a config keeps its process as it was): glibc keeps freed memory for reuse
    (kit.training.allocator), and configure()'s device flags and compilation cache."""
    from kit.training.allocator import keep_freed_memory

    keep_freed_memory()
    configure()


# ---------------------------------------------------------------- versions and devices
# Here, beside the device flags, because both say what this process runs on; the rules that
# compare versions with ranges are kernel_setup's (the one copy: it must run before the kit's
# own requirements are installed), and the ranges are the installed kit's declared ones.

STACK = ("jax", "jaxlib", "dm-haiku", "optax", "kaggle")  # what trains and talks to Kaggle
CHECKED = ("jax", "dm-haiku", "kaggle")  # refused at `kit cv` when outside the kit's ranges


def declared_requirements() -> list[str]:
    """The kit's declared dependencies: the installed kit's metadata, else (code run from an
    uninstalled copy, as on a Kaggle kernel) the pyproject.toml beside the package."""
    import importlib.metadata

    from kit.kaggle import kernel_setup

    try:
        declared = importlib.metadata.requires("kit")
    except importlib.metadata.PackageNotFoundError:
        declared = None
    if declared is None:
        return kernel_setup.requirements(Path(__file__).resolve().parents[2] / "pyproject.toml")
    return [line for line in declared if "extra ==" not in line]


def unsupported(required: list[str], installed: dict[str, str],
                requires_of=lambda name: []) -> str | None:
    """One line naming the first of CHECKED whose installed version is outside the kit's
    range (`required`, pip's syntax), with the range; None when all are in range."""
    from kit.kaggle import kernel_setup

    ours = [r for r in required if kernel_setup.name_of(r) in CHECKED]
    for entry in kernel_setup.shortfalls(ours, installed, requires_of):
        return (f"{entry.found} is not supported: the kit needs {entry.requirement} "
                f"(pip install '{entry.requirement}', or `make env` in a fresh .venv)")
    return None


def check_supported() -> None:
    """Refuse, before anything trains, a jax, dm-haiku or kaggle outside the kit's ranges."""
    from kit.core.errors import KitError
    from kit.kaggle import kernel_setup

    problem = unsupported(declared_requirements(), kernel_setup.installed_versions(),
                          kernel_setup.requires_dist)
    if problem:
        raise KitError(problem)


def running() -> dict:
    """The versions of Python and STACK this process runs (None: not installed) and its JAX
    devices, as engine.json records them (beside kit.training.hardware's survey)."""
    import importlib.metadata
    import platform

    import jax

    versions: dict = {"python": platform.python_version()}
    for name in STACK:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    versions["devices"] = {"platform": devices[0].platform, "kind": devices[0].device_kind,
                           "count": len(devices)}
    return versions


def describe(versions: dict) -> str:
    """running()'s record as one sentence for report.md."""
    stack = ", ".join(f"{name} {versions[name]}" for name in STACK if versions.get(name))
    devices = versions["devices"]
    return (f"Ran on Python {versions['python']}, {stack}; {devices['count']} "
            f"{devices['platform']} device(s) ({devices['kind']}).")
