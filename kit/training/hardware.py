"""What this process trains on: the NVIDIA GPUs the machine has (its driver's device files,
`nvidia-smi`), what JAX made of them, the versions that decide it, and what `make cv` would
do here; and the one line that stops a run where the two disagree.

When JAX cannot start its CUDA backend (a CPU-only jaxlib, a plugin that fails its checks, a
card the wheel does not support) it logs a warning and carries on with the CPU: a GPU-sized
run would then train for hours on a few cores. So `cv` starts the backends here, keeps what
JAX logged while doing so, and refuses that fallback in one line unless asked for the CPU.

`survey()` gathers the record (written into engine.json, printed by `python -m kit devices`
and by a Kaggle kernel first); `describe()` and `summary()` format it; the checks
(`cpu_fallback`, `unsupported_gpu`) are pure functions of what was found.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import os
import subprocess
import traceback
import warnings
from collections.abc import Callable, Sequence

# The files an NVIDIA driver makes (WSL2: /dev/dxg); JAX's own check looks for the same.
NVIDIA_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")
# jax's installation guide: CUDA 12 wheels run on compute capability 5.2 (Maxwell) and newer,
# CUDA 13 wheels on 7.5 (Turing) and newer.
CUDA_PLUGINS = {"jax-cuda13-plugin": ("CUDA 13", (7, 5)), "jax-cuda12-plugin": ("CUDA 12", (5, 2))}
FIX_EXTRA = "jax-cuda12-plugin"  # what the fix installs: it runs on the widest range of cards
INSTALL_LINE = "pip install -e '.[cuda12]'"
NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                    "--format=csv,noheader,nounits"]
JAX_LOGGER = "jax._src.xla_bridge"  # where JAX says why a backend did not start
ALLOW_CPU_FLAG = "--allow-cpu"
ALLOW_CPU_HINT = f"; or {ALLOW_CPU_FLAG} trains on the CPU anyway"  # ends a CPU fallback's line


# ---------------------------------------------------------------- what the machine has


@dataclasses.dataclass(frozen=True)
class DriverGpu:
    """An NVIDIA GPU as its driver reports it (None: not reported)."""

    name: str
    compute_capability: str | None = None  # "7.5"
    memory_mib: int | None = None
    driver: str | None = None


def driver_gpus(run: Callable = subprocess.run,
                device_files: Sequence[str] = NVIDIA_DEVICE_FILES) -> list[DriverGpu]:
    """The NVIDIA GPUs the driver lists (`nvidia-smi`; an older driver without the
    compute_cap field: `nvidia-smi -L`), else one unnamed GPU where its device files exist."""
    listed = _nvidia_smi(NVIDIA_SMI_QUERY, run)
    if listed is not None:
        return [_queried(line) for line in listed]
    listed = _nvidia_smi(["nvidia-smi", "-L"], run)
    if listed:
        # "GPU 0: Tesla T4 (UUID: GPU-...)"
        return [DriverGpu(line.split(":", 1)[-1].split("(UUID")[0].strip())
                for line in listed if line.startswith("GPU")]
    found = [path for path in device_files if os.path.exists(path)]
    return [DriverGpu(f"an NVIDIA GPU (the driver's {found[0]})")] if found else []


def _nvidia_smi(command: list[str], run: Callable) -> list[str] | None:
    try:
        done = run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _queried(line: str) -> DriverGpu:
    name, capability, memory, driver = ([*map(str.strip, line.split(","))] + [""] * 4)[:4]

    def known(text: str) -> str | None:
        return text if text and "N/A" not in text and "[" not in text else None

    memory_mib = known(memory)
    return DriverGpu(name, known(capability),
                     int(float(memory_mib)) if memory_mib else None, known(driver))


# ---------------------------------------------------------------- what JAX made of it


def start_backends() -> tuple[str, list[str]]:
    """JAX's default backend, started here, and what JAX logged or warned while starting
    it: its reason when a GPU backend did not start. (Where the backends had started
    already, the reason JAX kept for a CUDA backend that failed quietly, if any.)"""
    import jax

    said: list[str] = []
    logger = logging.getLogger(JAX_LOGGER)
    handler = _Keep(said)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # so JAX's own handlers (some versions add one) print nothing
    logger.setLevel(logging.INFO)  # a plugin that fails quietly says why at INFO
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend = jax.default_backend()
    except (RuntimeError, AssertionError) as failed:  # only where JAX_PLATFORMS names one
        raise _platform_refused(failed, said) from failed
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    said += [str(w.message) for w in caught if _about_a_gpu(str(w.message))]
    if not said:
        try:  # the reasons jax keeps (a private name: absent in some versions)
            errors = importlib.import_module(JAX_LOGGER)._backend_errors or {}
        except (ImportError, AttributeError):
            errors = {}
        said += [f"Unable to initialize backend '{name}': {error}"
                 for name, error in errors.items() if name in ("cuda", "gpu")]
    return backend, said


def _platform_refused(failed: Exception, said: list[str]):
    """The one line for a backend that JAX_PLATFORMS asked for and JAX could not start (it
    fails loudly then, where it would otherwise fall back to the CPU)."""
    from kit.core.errors import KitError

    asked = os.environ.get("JAX_PLATFORMS", "")
    why = " | ".join([" ".join(str(failed).split()), *said]).strip(" |") or \
        "it found no such device here"
    return KitError(f"JAX_PLATFORMS={asked}: jax could not start that backend ({why}); unset "
                    f"JAX_PLATFORMS to let jax choose, or install jax's CUDA build: "
                    f"{INSTALL_LINE}")


def _about_a_gpu(text: str) -> bool:
    return any(word in text.lower() for word in ("cuda", "gpu", "nvidia", "plugin"))


class _Keep(logging.Handler):
    """Keeps the one-line text of each record about a GPU, a plugin or a fallback."""

    def __init__(self, into: list[str]):
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno < logging.WARNING and not _about_a_gpu(text):
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += ": " + traceback.format_exception_only(*record.exc_info[:2])[-1].strip()
        self.into.append(text)


def cuda_plugin() -> tuple[str, str] | None:
    """(distribution, version) of the installed JAX CUDA plugin, None for a CPU-only jax."""
    for name in CUDA_PLUGINS:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cuda_versions() -> tuple[str | None, str | None]:
    """The CUDA runtime and cuDNN versions of the installed CUDA plugin (None: none there)."""
    try:
        module = importlib.import_module("jax._src.lib").cuda_versions
        runtime_version = module.cuda_runtime_get_version()
        cudnn = module.cudnn_get_version()
    except (ImportError, AttributeError, RuntimeError, OSError):  # no plugin, or a broken one
        return None, None
    return f"{runtime_version // 1000}.{runtime_version % 1000 // 10}", _cudnn_text(cudnn)


def _cudnn_text(version: int) -> str:
    # cuDNN 9 numbers itself major*10000 + minor*100 + patch; 8 and older major*1000 + ...
    major, rest = divmod(version, 10000 if version >= 90000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def device_record(device) -> dict:
    """One JAX device: its kind, memory and compute capability where JAX reports them."""
    try:
        stats = device.memory_stats() or {}
    except (NotImplementedError, RuntimeError, AttributeError):  # a CPU device of some versions
        stats = {}
    return {"id": device.id, "platform": device.platform, "kind": device.device_kind,
            "memory_bytes": stats.get("bytes_limit"),
            "compute_capability": getattr(device, "compute_capability", None)}


# ---------------------------------------------------------------- the checks


def unsupported_gpu(gpus: list[dict], plugin: tuple[str, str] | None) -> str | None:
    """One line naming the first GPU whose compute capability is below what the installed
    CUDA plugin (or, without one, the CUDA 12 build the fix installs) runs on."""
    from kit.training import precision

    name = plugin[0] if plugin else FIX_EXTRA
    build, least = CUDA_PLUGINS[name]
    for gpu in gpus:
        found = precision.capability(gpu.get("compute_capability"))
        if found is None or found >= least:
            continue
        which = f"{gpu['name']}, compute capability {gpu['compute_capability']}"
        if name != FIX_EXTRA and found >= CUDA_PLUGINS[FIX_EXTRA][1]:
            what = f"jax's CUDA 12 build runs on it: {INSTALL_LINE}"
        else:
            what = (f"no jax build runs on it: {ALLOW_CPU_FLAG} (or JAX_PLATFORMS=cpu) trains "
                    "on the CPU")
        return (f"this machine's GPU ({which}) is older than jax's {build} build supports "
                f"({least[0]}.{least[1]} or newer, jax's installation guide); {what}")
    return None


def cpu_fallback(gpus: list[dict], backend: str, jax_said: list[str],
                 plugin: tuple[str, str] | None, jax_version: str, on_kaggle: bool) -> str | None:
    """The one line for a machine with an NVIDIA GPU whose jax runs on the CPU only: what
    jax said, and the fix. None where there is no GPU or jax uses one."""
    if backend != "cpu" or not gpus:
        return None
    names = ", ".join(sorted({gpu["name"] for gpu in gpus}))
    if jax_said:
        reason = "jax said: " + " | ".join(dict.fromkeys(" ".join(s.split()) for s in jax_said))
    elif plugin is None:
        reason = "no CUDA build of jax is installed (no jax-cuda12-plugin)"
    else:
        reason = f"{plugin[0]} {plugin[1]} is installed but jax logged no reason"
    if on_kaggle:
        fix = ("on Kaggle the kit keeps the image's jax (kit/kaggle/kernel_setup.py): restart "
               "the session, or choose another accelerator")
    else:
        fix = f"install jax's CUDA build: {INSTALL_LINE}"
    return (f"jax {jax_version} runs on the CPU only, but this machine has an NVIDIA GPU "
            f"({names}); {reason}; {fix}{ALLOW_CPU_HINT}")


def cpu_chosen(allow_cpu: bool, environ=os.environ) -> bool:
    """Whether the CPU was asked for: --allow-cpu, or JAX_PLATFORMS=cpu."""
    return allow_cpu or environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"


# ---------------------------------------------------------------- what `make cv` does here


def plan(config, platform: str, devices: list) -> dict:
    """What a cv run of `config` does here: precision, where folds and batches go, and steps
    per dispatch (from the engine's own rules)."""
    from kit.core.errors import KitError
    from kit.training import precision, programs

    choice = config.train.precision
    try:
        chosen = precision.resolve(choice, platform,
                                   getattr(devices[0], "compute_capability", None))
    except KitError as refused:
        chosen = f"refused: {refused}"
    if choice != "auto":
        rule = f"train.precision={choice} asks for it"
    elif platform == "cpu":
        rule = "fp32 on CPUs"
    else:
        rule = "train.precision=auto picks it by the device"
    try:
        batching = programs.resolve_batching(config.engine.fold_batching, platform)
    except KitError as refused:
        batching = f"refused: {refused}"
    split = programs.Placement.for_batch(config.train.batch_size, devices).devices
    parts = programs.group_placements(config.engine.fold_placement, config.train.batch_size,
                                      config.folds, devices)
    return {
        "fold_placement": f"{config.engine.fold_placement}: " + ", then ".join(
            _part_text(folds, placement) for folds, placement in parts),
        "precision": chosen,
        "precision_rule": rule,
        "fold_batching": batching,
        "batch_split_over": split,
        "chunk_seconds": config.engine.chunk_seconds,
        "steps_per_dispatch": (f"1 until a chunk is timed, then as many as take about "
                               f"{config.engine.chunk_seconds:g} s (at most an epoch)"),
    }


# ---------------------------------------------------------------- the record


def problem(backend: str, jax_said: list[str], gpus: list[dict], seen: list[dict],
            on_kaggle: bool) -> str | None:
    """The one line for this machine, if any: a GPU older than the installed jax supports
    (as JAX reports it, else as the driver does), else a CPU fallback beside a GPU."""
    import jax

    plugin = cuda_plugin()
    on_gpu = [{"name": d["kind"], "compute_capability": d["compute_capability"]}
              for d in seen if d["compute_capability"]]
    return unsupported_gpu(on_gpu or gpus, plugin) or cpu_fallback(
        gpus, backend, jax_said, plugin, jax.__version__, on_kaggle)


def check(allow_cpu: bool = False) -> tuple[str, list[str], list[DriverGpu]]:
    """Start JAX's backends and refuse, in one KitError line, a CPU fallback on a machine
    with an NVIDIA GPU (unless the CPU was asked for: cpu_chosen) or a GPU this jax cannot
    run on. Returns what survey() takes: the backend, what JAX said, the driver's GPUs."""
    import jax

    from kit.core.errors import KitError
    from kit.kaggle import places

    backend, said = start_backends()
    gpus = driver_gpus()
    if backend == "cpu" and cpu_chosen(allow_cpu):
        return backend, said, gpus
    line = problem(backend, said, [dataclasses.asdict(g) for g in gpus],
                   [device_record(d) for d in jax.local_devices()], places.on_kaggle())
    if line:
        raise KitError(line)
    return backend, said, gpus


def survey(config=None, backend: str | None = None, jax_said: Sequence[str] = (),
           gpus: list[DriverGpu] | None = None) -> dict:
    """This process's hardware record: backend, devices, host, the driver's GPUs, versions,
    what JAX said starting its backends, the problem line (None: none), and what a cv run
    of `config` (None: `make cv`, the hardware's preset) does here."""
    import jax

    from kit import config as config_io
    from kit.kaggle import places

    backend = backend or jax.default_backend()
    devices = jax.local_devices()
    gpus = driver_gpus() if gpus is None else gpus
    plugin = cuda_plugin()
    cuda, cudnn = cuda_versions()
    preset, why = config_io.preset_for(backend)
    chosen = config if config is not None else config_io.preset(preset)
    seen = [device_record(d) for d in devices]
    found = [dataclasses.asdict(g) for g in gpus]
    return {
        "backend": backend,
        "devices": seen,
        "host": {"cpu_cores": _cpu_cores(), "memory_bytes": _host_memory()},
        "driver_gpus": found,
        "versions": {"jax": jax.__version__, "jaxlib": _version("jaxlib"),
                     "cuda_plugin": f"{plugin[0]} {plugin[1]}" if plugin else None,
                     "cuda": cuda, "cudnn": cudnn},
        "jax_said": list(jax_said),
        "problem": problem(backend, list(jax_said), found, seen, places.on_kaggle()),
        "cv": {"preset": chosen.preset, "preset_why": None if config is not None else why,
               **plan(chosen, backend, devices)},
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_cores() -> int:
    from kit.training.runtime import cpu_cores

    return cpu_cores()


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------- formatting


def _size(count: int | None) -> str:
    return "?" if count is None else f"{count / 2**30:.1f} GiB"


def describe(record: dict) -> list[str]:
    """The record as lines for a terminal or a kernel's log."""
    versions = record["versions"]
    lines = [f"backend: {record['backend']}, {len(record['devices'])} device(s)"]
    for device in record["devices"]:
        extra = [f"memory {_size(device['memory_bytes'])}"] if device["memory_bytes"] else []
        extra += ([f"compute capability {device['compute_capability']}"]
                  if device["compute_capability"] else [])
        lines.append(f"  {device['platform']}:{device['id']} {device['kind']}"
                     + (f" ({', '.join(extra)})" if extra else ""))
    host = record["host"]
    lines.append(f"host: {host['cpu_cores']} CPU cores, memory {_size(host['memory_bytes'])}")
    for gpu in record["driver_gpus"]:
        facts = [f"compute capability {gpu['compute_capability']}"] if gpu["compute_capability"] \
            else []
        facts += [f"{gpu['memory_mib'] / 1024:.1f} GiB"] if gpu["memory_mib"] else []
        facts += [f"driver {gpu['driver']}"] if gpu["driver"] else []
        lines.append(f"NVIDIA driver lists: {gpu['name']}"
                     + (f" ({', '.join(facts)})" if facts else ""))
    if not record["driver_gpus"]:
        lines.append("NVIDIA driver: none found (no nvidia-smi, no /dev/nvidia0)")
    lines.append(f"jax {versions['jax']}, jaxlib {versions['jaxlib']}, CUDA plugin "
                 f"{versions['cuda_plugin'] or 'none'}, CUDA {versions['cuda'] or 'none'}, "
                 f"cuDNN {versions['cudnn'] or 'none'}")
    cv = record["cv"]
    why = f" ({cv['preset_why']})" if cv.get("preset_why") else ""
    lines += [f"make cv here: preset {cv['preset']}{why}",
              f"  precision {cv['precision']} ({cv['precision_rule']})",
              f"  folds: {_folds_text(cv)}",
              f"  steps per dispatch: {cv['steps_per_dispatch']}"]
    if record["problem"]:
        lines.append(f"problem: {record['problem']}")
    return lines


def _part_text(folds: int, placement) -> str:
    """One part of a fold group, as engine.fold_placement places it."""
    count = f"{folds} fold{'s' if folds > 1 else ''}"
    if placement.whole:
        return f"{count} whole, one a device on {placement.devices} at a time"
    return f"{count} with each batch split over {placement.devices} device(s)"


def _folds_text(cv: dict) -> str:
    batching = {"map": "one fold after another inside each program",
                "vmap": "a group's folds batched in one program"}.get(cv["fold_batching"],
                                                                      cv["fold_batching"])
    split = cv["batch_split_over"]
    where = "each batch on one device" if split == 1 else f"each batch split over {split} devices"
    where = cv.get("fold_placement", where)  # a record from before fold placements: split
    return f"{cv['fold_batching']}, {batching}; {where}"


def summary(record: dict) -> str:
    """The record in one line, for the start of a cv run."""
    versions = record["versions"]
    kinds = sorted({d["kind"] for d in record["devices"]})
    cuda = f"CUDA {versions['cuda']}, cuDNN {versions['cudnn']}" if versions["cuda"] else \
        "no CUDA"
    cv = record["cv"]
    return (f"{len(record['devices'])} {record['backend']} device(s) ({', '.join(kinds)}); "
            f"jax {versions['jax']}, {cuda}; precision {cv['precision']}; folds "
            f"{_folds_text(cv)}; steps per dispatch sized to about {cv['chunk_seconds']:g} s")

