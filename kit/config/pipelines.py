"""Named pipelines: recipes of several CV runs and their blend, run by one `make cv PRESET=NAME`.

A stage is an ordinary CV run (the hardware's preset, `default` or `gpu`, with the stage's own
settings and the user's) or the OOF-weighted blend of earlier stages' runs. The settings a
stage is made of belong to the pipeline: a user's `--set` of one of them is refused, since it
would quietly turn one stage into another.
"""
from __future__ import annotations

from dataclasses import dataclass

from kit.config.overrides import assignment_key
from kit.core.errors import KitError

__all__ = ["OWNED", "PIPELINES", "Pipeline", "Stage", "is_pipeline", "pipeline"]

# `kit ensemble --method`'s names (kit.results.ensemble.METHODS; a test checks they agree).
ENSEMBLE_METHODS = ("blend", "stack")

# The settings only a pipeline gives its stages: which run teaches which, and the run's label.
OWNED = ("preset", "teacher", "pseudo_labels", "flagged_labels", "fill_labels", "soft_targets")


@dataclass(frozen=True)
class Stage:
    name: str
    sets: tuple[str, ...] = ()  # `--set` assignments on the base preset that make the stage
    teacher: str = ""  # the earlier stage whose run teaches this one (its folds reused)
    members: tuple[str, ...] = ()  # a blend: the earlier stages whose runs it blends
    method: str = "blend"  # how a blend stage combines its members: one of ENSEMBLE_METHODS
    # The stage's network this many times as wide as its base's (after the user's --set):
    # a factor rather than widths, so that on `gpu`, already wider, the stage stays wider.
    widen: float = 1.0
    # The stage's epochs this many times its base's (after the user's --epochs, rounded, at
    # least 1): a factor, so that `--epochs` and `gpu`'s longer schedule scale every stage.
    lengthen: float = 1.0

    @property
    def is_blend(self) -> bool:
        return bool(self.members)


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        seen: list[str] = []
        for stage in self.stages:
            for field, factor in (("widen", stage.widen), ("lengthen", stage.lengthen)):
                if not factor > 0:
                    raise KitError(f"pipeline {self.name}: stage {stage.name} {field}={factor}: "
                                   "expected a factor above 0")
            if stage.method not in ENSEMBLE_METHODS:
                raise KitError(f"pipeline {self.name}: stage {stage.name} method="
                               f"{stage.method!r}: expected one of {', '.join(ENSEMBLE_METHODS)}")
            for earlier in (*stage.members, *([stage.teacher] if stage.teacher else [])):
                if earlier not in seen:
                    raise KitError(f"pipeline {self.name}: stage {stage.name} needs stage "
                                   f"{earlier!r}, which does not come before it")
            seen.append(stage.name)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def owner_of(self, key: str) -> str | None:
        """The stage whose recipe sets `key` (a dotted config name), or None."""
        for stage in self.stages:
            if key in {assignment_key(assignment) for assignment in stage.sets}:
                return stage.name
        return None


# The base preset's shared trunk teaches a network twice as wide, for 44 of every 48 epochs
# (the teacher's soft labels and flagged rows are what make the wider network pay for its
# time), and a stack of the two (a ridge per value over both runs' values) combines them and
# removes the offset every face's prediction shares: the best width and length found within
# its time budget. The budget, each candidate's score and time, and what each stage adds:
# docs/results.md, "The best pipeline".
# Soft targets: each training label moved 0.3 of the way to the teacher's OOF prediction.
SECOND_PASS = ("pseudo_labels=1", "flagged_labels=drop", "soft_targets=0.3")
_BEST = Pipeline("best", (
    Stage("shared"),
    Stage("taught", sets=SECOND_PASS, teacher="shared", widen=2.0, lengthen=44 / 48),
    Stage("stack", members=("taught", "shared"), method="stack"),
))

PIPELINES: dict[str, Pipeline] = {"best": _BEST}


def is_pipeline(name: str | None) -> bool:
    return name in PIPELINES


def pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise KitError(f"unknown pipeline {name!r}: expected one of {', '.join(PIPELINES)}")
    return PIPELINES[name]
