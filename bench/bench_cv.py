"""A whole `make cv` of a preset, timed as a user runs it: a fresh process, every fold of
every network, report included.

    python -m bench cv [--preset v1|best|...] [--set KEY=VALUE ...] [--epochs E]
                       [--size practice|kaggle] [--engine new|old] [--repeat N] [--keep DIR]

`--size kaggle` builds a competition of Kaggle's size from the practice one (its training
rows repeated up to 7049, its test images up to 1783, the real IdLookupTable.csv and
SampleSubmission.csv). `--engine old` runs the same preset on b2cd740's engine, from a git
worktree of that commit (its `default` preset is our `v1`), so the two engines are timed side
by side on one machine. Prints wall seconds, images trained per second, compile seconds and,
where `nvidia-smi` answers, the GPU's mean busy percentage while the run trained; on the
practice data, the submission's RMSE against the practice test truth. A pipeline
(`--preset best`) also gets each stage's minutes, OOF, estimate and practice-test RMSE,
measured in the same run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from bench.common import PRACTICE_SOLUTION, PRACTICE_ZIP, SHARED, without_kit_flags

REPO = Path(__file__).resolve().parents[1]
OLD_ENGINE = "b2cd740"  # the last commit of the per-step Python loop
KAGGLE_FORMAT = SHARED / "data" / "kaggle-format"
KAGGLE_TRAINING_ROWS, KAGGLE_TEST_IMAGES = 7049, 1783


def kaggle_size_archive(folder: Path) -> Path:
    """A Kaggle-size competition zip from the practice data and the real lookup table."""
    with zipfile.ZipFile(PRACTICE_ZIP) as outer:
        members = {name: outer.read(name) for name in outer.namelist()}

    def inner_csv(name: str) -> list[bytes]:
        with zipfile.ZipFile(io.BytesIO(members[f"{name}.zip"])) as inner:
            return inner.read(f"{name}.csv").splitlines()

    training = inner_csv("training")
    rows = training[1:]
    training = [training[0]] + [rows[i % len(rows)] for i in range(KAGGLE_TRAINING_ROWS)]
    test = inner_csv("test")
    images = [line.split(b",", 1)[1] for line in test[1:]]
    test = [test[0]] + [b"%d,%s" % (i + 1, images[i % len(images)])
                        for i in range(KAGGLE_TEST_IMAGES)]

    def zipped(name: str, lines: list[bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as inner:
            inner.writestr(f"{name}.csv", b"\n".join(lines) + b"\n")
        return buffer.getvalue()

    archive = folder / "facial-keypoints-detection.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("training.zip", zipped("training", training))
        out.writestr("test.zip", zipped("test", test))
        for name in ("IdLookupTable.csv", "SampleSubmission.csv"):
            out.write(KAGGLE_FORMAT / name, name)
    return archive


class GpuSampler:
    """nvidia-smi's utilisation every half second, while the run goes on."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _work(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True).stdout
                self.samples.append(float(out.split()[0]))
            except (subprocess.SubprocessError, ValueError, IndexError):
                return

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def old_engine_tree(folder: Path) -> Path:
    tree = folder / "old-engine"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree),
                    OLD_ENGINE], check=True, capture_output=True)
    return tree


def images_trained(run_dir: Path) -> int:
    """Training images over every fold and epoch, from the run's own files."""
    config = json.loads((run_dir / "config.json").read_text())
    assignment = json.loads((run_dir / "folds.json").read_text())
    batch = config["train"]["batch_size"]
    total = 0
    for folder in (run_dir / "folds").iterdir():
        network, fold = folder.name.rsplit("-", 1)
        entry = assignment["networks"][network]
        train_rows = sum(1 for f in entry["fold"] if f != int(fold))
        epochs = len(json.loads((folder / "history.json").read_text())["history"])
        total += max(train_rows // batch, 1) * batch * epochs
    return total


def practice_test_rmse(code: Path, data: Path, runs: Path, env: dict,
                       run: str | None = None) -> float:
    """The run's (cv/latest's by default) submission scored against the practice
    competition's test truth."""
    done = subprocess.run(
        [sys.executable, "-m", "kit", "--data", str(data), "--runs", str(runs), "submit",
         *([run] if run else []), "--dry-run", "--out", str(runs.parent / "submissions"),
         "--solution", str(PRACTICE_SOLUTION)], cwd=code, env=env, capture_output=True,
        text=True, check=False)
    if done.returncode:
        raise SystemExit(f"submit failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(done.stdout.split("score against")[1].split(":")[1].split()[0])


def one_run(code: Path, data: Path, runs: Path, preset: str, epochs: int | None,
            score: bool, overrides: list[str] = ()) -> dict:
    command = [sys.executable, "-m", "kit", "--data", str(data), "--runs", str(runs), "cv",
               "--preset", preset, "--no-resume"] + (["--epochs", str(epochs)] if epochs else [])
    command += [part for assignment in overrides for part in ("--set", assignment)]
    # The environment the user gave, not the device flags `import kit` added to this
    # process: each engine sets up its own process (the old one runs as it always ran).
    env = dict(os.environ, PYTHONPATH=str(code),
               XLA_FLAGS=without_kit_flags(os.environ.get("XLA_FLAGS", "")))
    with GpuSampler() as gpu:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True,
                              check=False)
        seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"cv failed ({done.returncode}): {done.stderr[-2000:]}")
    run_dir = (runs / "latest").resolve()
    record = run_dir / "pipeline.json"
    stages = json.loads(record.read_text())["stages"] if record.exists() else []
    trained = [runs / s["run"] for s in stages if s["kind"] == "cv"] or [run_dir]
    images = sum(images_trained(d) for d in trained)
    out = {"wall_seconds": round(seconds, 1), "images": images,
           "images_per_second_of_wall": round(images / seconds, 1)}
    if stages:  # a pipeline: what each stage cost and scored, measured in this one run
        out["stages"] = stage_figures(code, data, runs, env, stages, score)
    engine = run_dir / "engine.json"
    if engine.exists():
        call = json.loads(engine.read_text())["calls"][-1]
        out.update(compile_seconds=call["compile_seconds"],
                   train_seconds=call["train_seconds"],
                   train_images_per_second=call["images_per_second"],
                   devices=f"{call['devices']} {call['backend']}")
    report = json.loads((run_dir / "report.json").read_text())
    out["oof_rmse"] = round(report["overall_rmse"], 4)
    out["lb_estimate"] = round(report["leaderboard_estimate"].get("rmse") or float("nan"), 4)
    if gpu.mean() is not None:
        out["gpu_busy_percent"] = gpu.mean()
    if score:
        out["practice_test_rmse"] = round(practice_test_rmse(code, data, runs, env), 4)
    return out


def stage_figures(code: Path, data: Path, runs: Path, env: dict, stages: list[dict],
                  score: bool) -> dict:
    figures = {}
    for stage in stages:
        report = json.loads((runs / stage["run"] / "report.json").read_text())
        figures[stage["name"]] = {
            "run": stage["run"], "seconds": stage.get("seconds"),
            "oof_rmse": round(report["overall_rmse"], 4),
            "lb_estimate": round(report["leaderboard_estimate"].get("rmse") or float("nan"), 4)}
        if score:
            figures[stage["name"]]["practice_test_rmse"] = round(
                practice_test_rmse(code, data, runs, env, stage["run"]), 4)
    return figures


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench cv")
    parser.add_argument("--preset", default="v1")
    parser.add_argument("--epochs", type=int, help="fewer epochs than the preset's, for speed")
    parser.add_argument("--size", choices=("practice", "kaggle"), default="practice")
    parser.add_argument("--engine", choices=("new", "old"), default="new")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the preset's to change (as `cv --set`)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs in a row: the second shows the compile cache at work")
    parser.add_argument("--keep", type=Path, help="do the work in this folder and keep it "
                        "(its runs can then be blended and submitted)")
    args = parser.parse_args(argv or [])
    if not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    folder = args.keep or Path(tempfile.mkdtemp(prefix="kit-bench-cv-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        archive = kaggle_size_archive(folder) if args.size == "kaggle" else PRACTICE_ZIP
        code = REPO if args.engine == "new" else old_engine_tree(folder)
        # The old engine knows our v1 as its default.
        preset = "default" if args.engine == "old" and args.preset == "v1" else args.preset
        subprocess.run([sys.executable, "-m", "kit", "--data", str(folder / "data"), "download",
                        "--archive", str(archive)], cwd=REPO, check=True, capture_output=True)
        out = {"preset": args.preset, "engine": args.engine, "size": args.size,
               "epochs": args.epochs or "preset's", "set": " ".join(args.set) or "none"}
        for attempt in range(args.repeat):
            figures = one_run(code, folder / "data", folder / f"cv-{attempt}", preset,
                              args.epochs, score=args.size == "practice", overrides=args.set)
            out.update({(f"run{attempt + 1}_{k}" if args.repeat > 1 else k): v
                        for k, v in figures.items()})
    finally:
        if args.engine == "old":
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(folder / "old-engine")], check=False, capture_output=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(run(sys.argv[1:]))
