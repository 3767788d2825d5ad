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

# The settings only a pipeline gives its stages: which run teaches which, and the run's label.
OWNED = ("preset", "teacher", "pseudo_labels", "flagged_labels", "fill_labels")


@dataclass(frozen=True)
class Stage:
    name: str
    sets: tuple[str, ...] = ()  # `--set` assignments on the base preset that make the stage
    teacher: str = ""  # the earlier stage whose run teaches this one (its folds reused)
    members: tuple[str, ...] = ()  # a blend: the earlier stages whose runs it blends
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


# The default's shared trunk teaches a network twice as wide (the teacher's soft labels and
# its flagged rows are what lets the wider one pay in CPU time), trained for 44 of the
# default's 48 epochs; the blend weighs the two by their OOF. Twice as wide at 44 epochs scored
# 1.5760 alone, 1.5774 blended, against 1.5798 and 1.5818 at 1.5x and 48 epochs, in 1.39x the
# 1.5x stage's time, planned at about 4.4x b2cd740's `make cv`; run from scratch in one go it
# scored 1.5767 in 4.83x its own shared stage, about 5.1x: at the edge of the 5x it may take.
# At 40 epochs it fits (about 4.6x) but blends to 1.5813, no better than the 1.5x stage's 1.5818.
# Above 1.5x this CPU's convolutions leave their fast path (`python -m bench widths`: 2x costs
# 3.2x the default's step), so 2x at the full 48 epochs would pass 5x. The two-network
# `separate` stage of before added 0.002 to the blend in 1.45x `shared`'s time.
# docs/results.md ("The best pipeline") has what each stage adds.
SECOND_PASS = ("pseudo_labels=1", "flagged_labels=drop")
_BEST = Pipeline("best", (
    Stage("shared"),
    Stage("taught", sets=SECOND_PASS, teacher="shared", widen=2.0, lengthen=44 / 48),
    Stage("blend", members=("taught", "shared")),
))

PIPELINES: dict[str, Pipeline] = {"best": _BEST}


def is_pipeline(name: str | None) -> bool:
    return name in PIPELINES


def pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise KitError(f"unknown pipeline {name!r}: expected one of {', '.join(PIPELINES)}")
    return PIPELINES[name]
