"""A pipeline run: its stages' configs built and checked before anything trains, then each
stage run in order, its run recorded in cv/pipelines/<id>.json as it finishes.

Each stage is an ordinary run in cv/ (`show` and `compare` read it): a CV run made by
kit.runs.cv with its report, or an OOF-weighted blend made by kit.results.ensemble. A
rerun with the same arguments carries on with the newest unfinished record: a finished stage
is kept, an unfinished CV stage resumes from its checkpoints (kit.runs.folders finds its run
by its config). The final run keeps the record as pipeline.json, and cv/latest points to it,
so `make submit` submits the pipeline's result.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kit import config as config_io
from kit.config import OWNED, Config, Pipeline, Stage
from kit.core.errors import KitError
from kit.data.tables import LookupTable, TrainingSet
from kit.recipes.progress import PipelineListener
from kit.results import ensemble, report, teacher
from kit.runs import cv, files, folders

# A taught stage's configs are checked before its teacher exists: this stands for its run id.
PENDING = "pending-teacher"


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    config: Config | None  # None for a blend


@dataclass(frozen=True)
class Arguments:
    """What a pipeline was asked: a resumed pipeline must have been asked the same."""

    base: str  # the preset every CV stage starts from: the hardware's
    overrides: tuple[str, ...]  # the user's `--set`s, --folds, --seed, --epochs

    def to_dict(self) -> dict:
        return {"base": self.base, "overrides": list(self.overrides)}


# ---------------------------------------------------------------- planning


def check_overrides(pipeline: Pipeline, overrides: tuple[str, ...]) -> None:
    """Refuse a `--set` that would change what a stage is (every `--set` applies to every
    CV stage)."""
    for assignment in overrides:
        key = config_io.assignment_key(assignment)
        if key in OWNED:
            raise KitError(f"--set {assignment}: the pipeline {pipeline.name} sets {key} itself "
                           "(each stage's label, which run teaches which); a --set applies to "
                           "every stage, so choose settings no stage is made of")
        owner = pipeline.owner_of(key)
        if owner is not None:
            made_of = ", ".join(pipeline.stage(owner).sets)
            raise KitError(f"--set {assignment}: stage {owner} of the pipeline {pipeline.name} "
                           f"is made of that setting ({made_of}); a --set applies to every "
                           "stage, so it would turn one stage into another")


def stage_config(pipeline: Pipeline, stage: Stage, arguments: Arguments,
                 teacher_run: str = PENDING) -> Config:
    sets = [*stage.sets, f"preset={pipeline.name}-{stage.name}", *arguments.overrides]
    if stage.teacher:
        sets.append(f"teacher={teacher_run}")
    try:
        config = config_io.override(config_io.preset(arguments.base), sets)
        if stage.widen != 1.0:
            config = replace(config, model=config.model.widened(stage.widen))
        if stage.lengthen != 1.0:
            epochs = max(1, round(config.train.epochs * stage.lengthen))
            config = replace(config, train=replace(config.train, epochs=epochs))
        return config
    except KitError as error:
        raise KitError(f"pipeline {pipeline.name}, stage {stage.name}: {error}") from None


def plan(pipeline: Pipeline, arguments: Arguments) -> list[StagePlan]:
    """Every stage's config, built and so checked, before anything trains."""
    check_overrides(pipeline, arguments.overrides)
    return [StagePlan(stage, None if stage.is_blend else stage_config(pipeline, stage, arguments))
            for stage in pipeline.stages]


# ---------------------------------------------------------------- the record


def new_record(pipeline: Pipeline, arguments: Arguments) -> dict:
    return {"pipeline": pipeline.name, "arguments": arguments.to_dict(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "stages": [{"name": s.name, "kind": "blend" if s.is_blend else "cv",
                        "teacher": s.teacher, "members": list(s.members), "sets": list(s.sets),
                        "widen": s.widen, "lengthen": s.lengthen}
                       for s in pipeline.stages]}


def unfinished_record(root: Path, pipeline: Pipeline, arguments: Arguments) -> Path | None:
    """The newest record of the same pipeline and arguments without a final run."""
    folder = files.pipelines_dir(root)
    for path in sorted(folder.glob(f"*-{pipeline.name}.json"), reverse=True):
        try:
            record = files.read_pipeline(path)
        except KitError:
            continue
        same_stages = [entry["name"] for entry in record["stages"]] == [
            stage.name for stage in pipeline.stages]
        if record["arguments"] == arguments.to_dict() and same_stages and not record.get("final"):
            return path
    return None


def new_record_path(root: Path, pipeline: Pipeline) -> Path:
    """cv/pipelines/<UTC time>[-N]-<name>.json, a name no record has yet."""
    folder = files.pipelines_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for suffix in itertools.count(1):
        path = folder / f"{stamp}{f'-{suffix}' if suffix > 1 else ''}-{pipeline.name}.json"
        if not path.exists():
            return path
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- running


def run(pipeline: Pipeline, arguments: Arguments, training: TrainingSet, data_dir: Path,
        root: Path, lookup: LookupTable | None, resume: bool = True,
        listener: PipelineListener | None = None) -> Path:
    """Run (or carry on with) the pipeline; the final run's folder (cv/latest points to it)."""
    listener = listener or PipelineListener()
    root = Path(root)
    plans = plan(pipeline, arguments)
    path = unfinished_record(root, pipeline, arguments) if resume else None
    if path is None:
        path = new_record_path(root, pipeline)
        record = new_record(pipeline, arguments)
        files.write_pipeline(path, record)
        if not resume:
            listener.note(f"--no-resume: every stage of {pipeline.name} starts afresh "
                          f"(record {path})")
    else:
        record = files.read_pipeline(path)
        listener.note(f"carrying on with pipeline {path.stem} (--no-resume starts afresh)")
    runs: dict[str, Path] = {}
    count = len(plans)
    for number, step in enumerate(plans, 1):
        entry = record["stages"][number - 1]
        kept = _kept_run(root, entry)
        if kept is not None:
            runs[step.stage.name] = kept
            listener.stage_kept(number, count, step.stage, kept)
            continue
        listener.stage_started(number, count, step.stage)
        started = time.perf_counter()
        try:
            run_dir, train_seconds = _run_stage(pipeline, step, arguments, training, data_dir,
                                                root, lookup, runs, resume, number, count,
                                                listener)
            seconds = time.perf_counter() - started
            entry.update(run=run_dir.name, finished=True, seconds=round(seconds, 1))
            if number == count:  # the final run keeps the record, so its report shows it
                record["final"] = run_dir.name
                record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
                files.write_pipeline(run_dir / files.PIPELINE, record)
            with listener.busy("writing the report and pictures"):
                figures = report.write(run_dir, training, lookup, train_seconds)
        except KitError as error:
            where = _stage_run(root, pipeline, step, arguments, runs)
            raise KitError(f"pipeline {pipeline.name} stage {number}/{count} {step.stage.name}"
                           f"{f' (run {where})' if where else ''}: {error}; running the same "
                           "command again resumes it") from None
        # Written last: a stage stopped before this line is done again (a CV run resumes).
        files.write_pipeline(path, record)
        runs[step.stage.name] = run_dir
        listener.stage_finished(number, count, step.stage, run_dir, figures, seconds)
    final = runs[plans[-1].stage.name]
    folders.point_latest(root, final)
    return final


def _kept_run(root: Path, entry: dict) -> Path | None:
    """The stage's run from the record if it finished (its report written), else None."""
    if not entry.get("finished") or not entry.get("run"):
        return None
    run_dir = root / entry["run"]
    return run_dir if files.has_report(run_dir) else None


def _stage_run(root: Path, pipeline: Pipeline, step: StagePlan, arguments: Arguments,
               runs: dict[str, Path]) -> str | None:
    """The run a failed CV stage was training, if it got one."""
    if step.config is None:
        return None
    config = _with_teacher(pipeline, step, arguments, runs)
    found = folders.unfinished_run(root, config)
    return found.name if found else None


def _with_teacher(pipeline: Pipeline, step: StagePlan, arguments: Arguments,
                  runs: dict[str, Path]) -> Config:
    if not step.stage.teacher:
        return step.config
    return stage_config(pipeline, step.stage, arguments, runs[step.stage.teacher].name)


def _run_stage(pipeline: Pipeline, step: StagePlan, arguments: Arguments,
               training: TrainingSet, data_dir: Path, root: Path, lookup: LookupTable | None,
               runs: dict[str, Path], resume: bool, number: int, count: int,
               listener: PipelineListener) -> tuple[Path, float | None]:
    """The stage's run (its report not yet written), and its training seconds."""
    if step.stage.is_blend:
        members = [runs[name] for name in step.stage.members]
        with listener.busy(f"blending {', '.join(m.name for m in members)} by their OOF"):
            return ensemble.make_ensemble(members, root, training,
                                          method=step.stage.method), None
    config = _with_teacher(pipeline, step, arguments, runs)
    teaching = None
    if config.teacher:
        with listener.busy(f"preparing what run {config.teacher} teaches"):
            teaching = teacher.prepare_from(config, root, training, data_dir, lookup)
    started = time.perf_counter()
    with listener.training(number, count, step.stage) as engine_listener:
        run_dir = cv.run_cv(config, training, root, resume=resume, listener=engine_listener,
                            teaching=teaching)
    return run_dir, time.perf_counter() - started


def describe(pipeline: Pipeline) -> str:
    """One line per stage: what it is made of."""
    lines = []
    for number, stage in enumerate(pipeline.stages, 1):
        if stage.is_blend:
            what = f"the blend of {', '.join(stage.members)} by their OOF"
        else:
            what = ", ".join(stage.sets) or "the base preset"
            what += f", {stage.widen:g}x as wide" if stage.widen != 1.0 else ""
            what += f", {stage.lengthen:.3g}x the epochs" if stage.lengthen != 1.0 else ""
            what += f"; taught by {stage.teacher}" if stage.teacher else ""
        lines.append(f"  {number}. {stage.name}: {what}")
    return "\n".join(lines)
