"""The schema of a run: frozen dataclasses, and the rule each field follows.

Every config is checked as it is built (preset, override, saved run, dataclasses.replace or a
direct call), before any data is read or anything compiles: a field outside its rule is a
KitError naming the field as `--set` spells it, its value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kit.config.rules import Rule, accepts, describe
from kit.core.errors import KitError
from kit.core.keypoints import CORE_KEYPOINTS, IMAGE_SIZE, SUBSET_COLUMNS

__all__ = [
    "COMPETITION",
    "FLAGGED_LABELS",
    "FOLD_BATCHINGS",
    "FOLD_PLACEMENTS",
    "HEADS",
    "LOSSES",
    "NETWORK_KINDS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "SECTIONS",
    "SELECTIONS",
    "SUBSETS",
    "AugmentConfig",
    "Config",
    "EngineConfig",
    "ModelConfig",
    "TrainConfig",
    "build",
    "check",
    "from_dict",
    "load",
    "prediction_only_fields",
    "rules_of",
    "setting",
    "settings_lines",
    "to_dict",
    "trains_alike",
]

COMPETITION = "facial-keypoints-detection"

# The names each choice accepts. The modules that act on them hold them as dictionaries keyed
# by these names (networks.NETWORKS and HEADS, train.OPTIMIZERS, SCHEDULES and LOSSES,
# precision.PRECISIONS; a test checks the keys); the names live here too so a config is
# refused before any is imported.
NETWORK_KINDS = ("seed", "resnet")
HEADS = ("dense", "soft_argmax")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
LOSSES = ("mse", "l1", "wing")
SELECTIONS = ("best", "last")
FOLD_BATCHINGS = ("auto", "vmap", "map")
FOLD_PLACEMENTS = ("auto", "split", "whole")
FLAGGED_LABELS = ("keep", "drop", "downweight")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SUBSETS = tuple(SUBSET_COLUMNS)  # "15", "4"

HALF_FRAME = f"[0, {IMAGE_SIZE // 2})"  # a shift of half the frame or more pushes the face out
PROBABILITY = "[0, 1]"


def setting(default: Any, range: str = "", *, names: tuple[str, ...] = (),
            may_be_empty: bool = False, distinct: bool = False,
            prediction_only: bool = False) -> Any:
    """A field with its rule beside it: `range` for a number (">= 1", "[0, 1)", ...), `names`
    for a choice; the kind, and whether the field is a list of items, come from its type.
    `prediction_only`: training never reads it (kit.runs.predict does), so two configs that
    differ only in such fields train the same networks (trains_alike)."""
    rule = {"range": range, "names": names, "may_be_empty": may_be_empty, "distinct": distinct}
    return field(default=default, metadata={"rule": rule, "prediction_only": prediction_only})


@dataclass(frozen=True)
class AugmentConfig:
    """Per-batch augmentation drawn on the device; strengths are maxima of uniform draws."""

    flip_prob: float = setting(0.5, PROBABILITY)
    # The x a left-right mirror keeps in place, for training's flips and flip_tta's alike:
    # 47.5, the middle of 96 pixels counted from 0; 48.5 where the labels count from 1. A
    # wrong one shifts every predicted x by the labels' offset (`kit report` shows it).
    mirror_x: float = setting(47.5, "[44, 52]")
    affine_prob: float = setting(0.9, PROBABILITY)
    rotate_degrees: float = setting(12.0, "[0, 180]")
    # The zoom factor is drawn from [1 - scale, 1 + scale], whose lower end stays above 0.
    scale: float = setting(0.08, "[0, 1)")
    shift_pixels: float = setting(6.0, HALF_FRAME)
    brightness: float = setting(0.15, "[0, 1]")  # added to pixels in [0, 1]
    # The factor is drawn from [1 - contrast, 1 + contrast], whose lower end stays above 0.
    contrast: float = setting(0.25, "[0, 1)")
    noise_std: float = setting(0.02, "[0, 1]")
    fill: float = setting(0.0, "[0, 1]")  # the pixel value outside the frame after a warp
    # A warp that pushes a keypoint out of frame is redrawn this many times, then not warped.
    max_redraws: int = setting(4, ">= 0")
    # A flat grey rectangle over part of the face (hands, microphones and hair cover the worst
    # faces), its sides drawn from [occlude_size / 2, occlude_size] of the frame; the labels
    # stay, so the network learns to place a hidden keypoint from what is around it.
    occlude_prob: float = setting(0.0, PROBABILITY)
    occlude_size: float = setting(0.4, "(0, 1]")  # of the frame's side

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ModelConfig:
    """The network: `seed` is the student report's CNN, `resnet` a batch-norm residual net."""

    kind: str = setting("resnet", names=NETWORK_KINDS)
    stem_width: int = setting(16, ">= 1")
    widths: tuple[int, ...] = setting((32, 64, 128), ">= 1")  # one stage each
    blocks_per_stage: int = setting(1, ">= 0")
    # More residual blocks in the deepest stage alone, the one whose cells see the whole face:
    # depth where the head's coarse maps come from (measured, not kept: docs/results.md).
    deep_blocks: int = setting(0, ">= 0")
    dense: int = setting(256, ">= 1")
    dropout: float = setting(0.0, "[0, 1)")  # a rate of 1 drops everything and divides by 0
    # Images are resized to this before the network (CPU time grows as its square): the
    # images' own size at most, since upsizing adds no detail; below 16 pixels eye corners
    # fall within a pixel or two of each other. _check_network adds what the network needs.
    input_size: int = setting(64, f"[16, {IMAGE_SIZE}]")
    # "dense": flatten the last stage into a dense layer. "soft_argmax": a heatmap per keypoint
    # on a finer grid (the last stages upsampled and merged), read out as its expected position.
    head: str = setting("dense", names=HEADS)
    head_width: int = setting(64, ">= 1")  # channels of the soft-argmax head's merged maps
    # The heatmaps' pixel stride on the network's input: one of the resnet's stages' strides
    # (_check_network).
    head_stride: int = setting(4, ">= 1")

    def __post_init__(self) -> None:
        check(self)

    def widened(self, factor: float) -> ModelConfig:
        """The same network with every convolution's channels `factor` times as many
        (rounded; a dense head's layer kept): a pipeline's wider stage from its base."""
        def scaled(width: int) -> int:
            return max(1, round(width * factor))
        return replace(self, stem_width=scaled(self.stem_width),
                       widths=tuple(scaled(w) for w in self.widths),
                       head_width=scaled(self.head_width))


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser, the schedule and early stopping."""

    epochs: int = setting(20, ">= 1")
    batch_size: int = setting(64, ">= 1")
    learning_rate: float = setting(3e-3, "> 0")
    weight_decay: float = setting(1e-4, ">= 0")
    optimizer: str = setting("adamw", names=OPTIMIZERS)  # "sgd": the report's plain SGD
    schedule: str = setting("onecycle", names=SCHEDULES)
    loss: str = setting("mse", names=LOSSES)
    # DSNT's heatmap term (arXiv 1801.07372): this weight times the Jensen-Shannon divergence
    # between each keypoint's soft-argmax heatmap and a normalised Gaussian at its target,
    # added to the coordinate loss; 0: none. Only the soft-argmax head has heatmaps
    # (_check_heatmap_loss).
    heatmap_loss: float = setting(0.0, ">= 0")
    # The Gaussian's standard deviation in pixels of the 96-pixel frame: one cell of a
    # stride-8 grid (DSNT's one heatmap pixel), so it spreads over neighbouring cells and
    # still says where within a cell the keypoint sits.
    heatmap_sigma: float = setting(8.0, "> 0")
    # Epochs without a better validation RMSE before stopping.
    patience: int = setting(12, ">= 1")
    eval_batch_size: int = setting(256, ">= 1")
    # Which weights a fold keeps: "best" (the epoch with the lowest validation RMSE: the
    # held-out rows pick it, which flatters the out-of-fold estimate) or "last" (the end of
    # the schedule: held-out rows only score, never choose).
    select: str = setting("best", names=SELECTIONS)
    # Score the held-out rows every this many epochs and after the last. Above 1 only with
    # select="last", where the scores choose nothing (_check_validation): each scoring is a
    # forward pass over a fifth of the rows at full size (its cost: docs/results.md), and the
    # learning curve needs few.
    validate_every: int = setting(1, ">= 1")
    # Keep an exponential moving average of the weights with this decay per step (0: none);
    # validation, early stopping and the kept weights then use the average. A decay of 1
    # would never move from the initial weights.
    ema: float = setting(0.0, "[0, 1)")
    # Stochastic weight averaging (SWA, arXiv 1803.05407): the last `swa_epochs` epochs train
    # at a constant rate, swa_rate times learning_rate (the schedule runs over the epochs
    # before and never falls below it), and the kept weights are the plain mean of the
    # weights after each of those epochs' steps, their batch-norm statistics gathered anew
    # by the averaged weights themselves (_check_swa). 0: none.
    swa_epochs: int = setting(0, ">= 0")
    swa_rate: float = setting(0.05, "(0, 1]")
    # Training's own seed (initial weights, batches, augmentation); the folds follow the
    # run's seed alone, so runs that differ here are an ensemble's members. 0: the run's seed.
    # jax.random.fold_in takes an int32.
    seed: int = setting(0, f"[0, {2**31 - 1}]")
    # Progressive resizing: the first `early_share` of the epochs (rounded down, see
    # kit.training.train.early_epochs) train at `early_size` pixels, at about
    # (early_size / model.input_size)^2 of an epoch's compute, the rest (and every validation
    # and prediction) at model.input_size. A share, not a count, so `--epochs` keeps the
    # recipe's shape. The soft-argmax head's maps span the frame at any input size, so the
    # same weights serve both. 0 and 0: none; _check_early_size checks the pair.
    early_size: int = setting(0, f"[0, {IMAGE_SIZE}]")
    early_share: float = setting(0.0, "[0, 1)")  # at 1 no epoch would train at full size
    # The dtype the network computes in (weights, batch norm, the loss and the optimiser stay
    # fp32; fp16 with dynamic loss scaling); "auto": by the device (kit.training.precision).
    precision: str = setting("auto", names=PRECISIONS)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class EngineConfig:
    """How training uses the machine; none of it changes what is learned (beyond float
    rounding), so a run resumes under other engine settings."""

    # "vmap": a group's folds as one batched program (accelerators); "map": one fold after
    # another inside the program (CPUs, where XLA's batched convolutions run slowly); "auto"
    # picks by the device.
    fold_batching: str = setting("auto", names=FOLD_BATCHINGS)
    # "split": each batch split over the devices, which meet every step; "whole": each
    # device trains whole folds alone; "auto": split on CPUs, whole folds on accelerators
    # with a fold left over split (kit.training.programs.auto_parts, docs/engine.md).
    fold_placement: str = setting("auto", names=FOLD_PLACEMENTS)
    fold_group: int = setting(0, ">= 0")  # folds trained together; 0: the most that fit
    chunk_seconds: float = setting(1.0, "> 0")  # steps per dispatch aim at this: progress moves
    # At most this much training is lost to a crash; 0: a checkpoint after every chunk.
    checkpoint_seconds: float = setting(60.0, ">= 0")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Config:
    """One CV run: what to train, on which subsets, with how many folds."""

    # Not checked against PRESETS (a saved run may name a renamed preset), but it names the
    # run's folder, so a name without path separators.
    preset: str = setting("default")
    # numpy's and scikit-learn's generators (the fold split, the epochs' order) take these.
    seed: int = setting(0, f"[0, {2**32 - 1}]")
    folds: int = setting(5, ">= 2")  # one fold leaves nothing to validate on
    grouped_folds: bool = True  # near-duplicate frames stay on one side of a split
    # The thumbnail cosine similarity that links two frames; at 0 or below every frame links.
    group_similarity: float = setting(0.85, "(0, 1]")
    subsets: tuple[str, ...] = setting(("15", "4"), names=SUBSETS, distinct=True)
    # One network per fold with two heads (the 15-key head taught by the rows of the full
    # annotation source, the 4-key head by the core-only source) instead of one per subset:
    # every face teaches the shared trunk.
    shared_trunk: bool = False
    # Keypoints both annotation sources mark alike: with a shared trunk, both heads learn
    # them from every row. Only core keypoints qualify (the bottom lip is marked differently);
    # any other name would silently change nothing.
    common_keypoints: tuple[str, ...] = setting((), names=CORE_KEYPOINTS, may_be_empty=True,
                                                distinct=True)
    # The test-time views: each prediction is the mean over the image's views.
    flip_tta: bool = setting(True, prediction_only=True)
    # Pixels; > 0 adds four shifted copies to TTA.
    tta_shift: float = setting(0.0, HALF_FRAME, prediction_only=True)
    # > 0 adds copies zoomed by 1 +- tta_zoom; beyond 0.5 a view shrinks the face to a thumbnail.
    tta_zoom: float = setting(0.0, "[0, 0.5]", prediction_only=True)
    # Degrees; > 0 adds copies turned both ways. Faces are upright: a larger turn is another task.
    tta_rotate: float = setting(0.0, "[0, 45]", prediction_only=True)
    # A second pass (kit.results.teacher): a finished run's id in the same runs folder (never a
    # path; empty: none), whose folds this run reuses. With it, `pseudo_labels` adds the test
    # faces labelled by the teacher's model of each fold to that fold's training, and
    # `flagged_labels` says what happens to the training labels the teacher's OOF residuals
    # flag as wrong (kit.results.label_noise): "keep", "drop" (left out of training, never out
    # of scoring) or "downweight" (their loss weighs kit.results.teacher.DOWNWEIGHT).
    # `fill_labels` gives the 15-key head, on each fold's training rows, the teacher's fold
    # model's values where the row's labels are missing. `soft_targets` moves each training
    # label that share of the way to the teacher's out-of-fold prediction of it (0: none; at
    # 1 the label would be gone). _check_teacher: each needs a teacher.
    teacher: str = setting("", may_be_empty=True)
    pseudo_labels: bool = False
    flagged_labels: str = setting("keep", names=FLAGGED_LABELS)
    fill_labels: bool = False
    soft_targets: float = setting(0.0, "[0, 1)")
    # Training learns each label as the mean of it over the frames linked to its row above
    # this thumbnail similarity (kit.runs.lessons.averaged_labels); 0: labels as given. At 1
    # only rounding would link two frames. _check_average_labels: with grouped folds, at
    # least group_similarity, so that no group spans two folds.
    average_labels: float = setting(0.0, "[0, 1)")
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check(self)


# ---------------------------------------------------------------- checking


# Nested configs are built before the Config that holds them, so each learns here where it
# sits in the dotted names a user types (`--set train.epochs=3`).
SECTIONS: dict[type, str] = {
    Config: "",
    ModelConfig: "model.",
    TrainConfig: "train.",
    AugmentConfig: "augment.",
    EngineConfig: "engine.",
}


@functools.cache
def rules_of(section: type) -> dict[str, Rule]:
    """Each field of a config class and its rule: the kind from the field's type (a tuple's
    items for `tuple[X, ...]`), the rest from its `setting`."""
    hints = typing.get_type_hints(section)
    rules = {}
    for f in fields(section):
        kind, many = hints[f.name], False
        if typing.get_origin(kind) is tuple:
            kind, many = typing.get_args(kind)[0], True
        rules[f.name] = Rule(kind, many=many, **f.metadata.get("rule", {}))
    return rules


def check(config: Any) -> None:
    """Refuse a config (or one of its sections) with a field outside its rule, naming the first
    such field; the network's shape rules follow once every field has the right kind."""
    prefix = SECTIONS[type(config)]
    for name, rule in rules_of(type(config)).items():
        value = getattr(config, name)
        if not accepts(rule, value):
            raise KitError(f"{prefix}{name}={value!r}: expected {describe(rule)}")
    if isinstance(config, ModelConfig):
        _check_network(config)
    if isinstance(config, Config):
        _check_teacher(config)
        _check_average_labels(config)
        _check_early_size(config)
        _check_heatmap_loss(config)
        _check_swa(config.train)
        _check_validation(config.train)


def _check_teacher(config: Config) -> None:
    """Pseudo-labels and flagged labels come from a teacher run: without one they would
    silently change nothing."""
    if config.teacher:
        return
    if config.pseudo_labels:
        raise KitError("pseudo_labels=True: expected a teacher run too (--set teacher=<run-id>, "
                       "a finished run in the same runs folder)")
    if config.fill_labels:
        raise KitError("fill_labels=True: expected a teacher run too (--set teacher=<run-id>, "
                       "the run whose fold models fill the missing labels)")
    if config.flagged_labels != "keep":
        raise KitError(f"flagged_labels={config.flagged_labels!r}: expected 'keep' without a "
                       "teacher run (--set teacher=<run-id> names the run whose OOF flags them)")
    if config.soft_targets:
        raise KitError(f"soft_targets={config.soft_targets!r}: expected 0 without a teacher "
                       "run (--set teacher=<run-id> names the run whose OOF predictions soften "
                       "the labels)")


def _check_average_labels(config: Config) -> None:
    """Frames linked above a similarity are linked above any lower one, so averaging groups
    at or above group_similarity lie inside the folds' groups, each in one fold; below it a
    group could span folds and carry a held-out face's label into training."""
    if config.average_labels and config.grouped_folds \
            and config.average_labels < config.group_similarity:
        raise KitError(f"average_labels={config.average_labels!r}: expected 0 or at least "
                       f"group_similarity ({config.group_similarity}) with grouped folds, so "
                       "that each group of averaged frames stays in one fold")


def _check_validation(train: TrainConfig) -> None:
    """Where the held-out rows choose the weights and stop training, every epoch needs its
    score: skipping some would silently change the choice."""
    if train.validate_every > 1 and train.select != "last":
        raise KitError(f"train.validate_every={train.validate_every!r} with "
                       f"train.select={train.select!r}: expected train.validate_every=1 "
                       "(each epoch's score chooses the weights and may stop the fold), "
                       "or train.select=last")


def _check_heatmap_loss(config: Config) -> None:
    """The heatmap term shapes the soft-argmax head's maps: another head has none to shape."""
    weight, head = config.train.heatmap_loss, config.model.head
    if weight and head != "soft_argmax":
        raise KitError(f"train.heatmap_loss={weight!r}: expected model.head=soft_argmax (a "
                       f"{head} head has no heatmaps), or train.heatmap_loss=0")


def early_epochs(train: TrainConfig) -> int:
    """How many of the first epochs train at train.early_size: the share of train.epochs,
    rounded down (so at least the last epoch trains at the full size)."""
    return math.floor(train.early_share * train.epochs + 1e-9) if train.early_size else 0


def _check_swa(train: TrainConfig) -> None:
    """The averaged window ends the run, at the full input size (the averaged weights'
    batch-norm statistics would otherwise mix two sizes), and replaces a moving average."""
    if not train.swa_epochs:
        return
    room = train.epochs - early_epochs(train)
    if train.swa_epochs >= train.epochs or train.swa_epochs > room:
        raise KitError(f"train.swa_epochs={train.swa_epochs!r}: expected fewer than "
                       f"train.epochs ({train.epochs}) and at most the {room} epochs after "
                       "progressive resizing's early ones")
    if train.ema:
        raise KitError(f"train.swa_epochs={train.swa_epochs!r} with train.ema={train.ema!r}: "
                       "expected one average of the weights, not both")


def _check_early_size(config: Config) -> None:
    """Progressive resizing needs both of its fields and a network that takes the smaller
    input: fully convolutional, its halvings dividing it."""
    train, model = config.train, config.model
    size, share = train.early_size, train.early_share
    if not size and not share:
        return
    if not size or not share:
        raise KitError(f"train.early_size={size!r} with train.early_share={share!r}: "
                       "expected both above 0 (progressive resizing) or both 0 (none)")
    if not 16 <= size < model.input_size:
        raise KitError(f"train.early_size={size!r}: expected at least 16 and below "
                       f"model.input_size ({model.input_size}), or no progressive resizing "
                       "(train.early_size=0 train.early_share=0)")
    if model.head != "soft_argmax":
        raise KitError(f"train.early_size={size!r}: expected model.head=soft_argmax (a "
                       f"{model.head} head's weights fit one input size), or no progressive "
                       "resizing (train.early_size=0 train.early_share=0)")
    _check_network(model, size, "train.early_size")


def _check_network(model: ModelConfig, size: int | None = None,
                   key: str = "model.input_size") -> None:
    """The shape rules no single field can check: the network halves the image once per
    width (the seed net max-pools, the resnet's stages stride 2) and the resnet's stem once
    more, so the input (model.input_size, or `size` named `key`) must divide evenly, and the
    soft-argmax head reads one stage's grid."""
    size = model.input_size if size is None else size
    stem = 1 if model.kind == "resnet" else 0
    halvings = stem + len(model.widths)
    most_widths = int(math.log2(IMAGE_SIZE)) - stem  # 2**halvings must fit in the image
    if len(model.widths) > most_widths:
        raise KitError(f"model.widths={model.widths!r}: expected at most {most_widths} items "
                       f"with model.kind={model.kind!r} (each halves the image, at most "
                       f"{IMAGE_SIZE} pixels)")
    step = 2**halvings
    if size % step:
        raise KitError(f"{key}={size!r}: expected a multiple of {step} "
                       f"in [16, {IMAGE_SIZE}] (the {model.kind} network with "
                       f"{len(model.widths)} widths halves it {halvings} times)")
    if model.head != "soft_argmax":
        return
    if model.kind != "resnet":
        raise KitError(f"model.head={model.head!r}: expected dense with "
                       f"model.kind={model.kind!r} (only the resnet has a soft-argmax head)")
    # kit.model.networks.soft_argmax_head merges stages down to the first whose stride is head_stride:
    # the finest stage strides 4 (the stem's 2 is never a stage), the deepest 2**halvings; any
    # other value would silently read a different grid. One cell is no heatmap: at least 2x2.
    strides = [2**k for k in range(2, halvings + 1) if size // 2**k >= 2]
    if model.head_stride not in strides:
        raise KitError(f"model.head_stride={model.head_stride!r}: expected one of "
                       f"{', '.join(map(str, strides))} (the strides of the resnet's stages "
                       f"at {key}={size} with {len(model.widths)} "
                       f"widths, leaving at least 2x2 heatmap cells)")


def prediction_only_fields() -> tuple[str, ...]:
    """The Config fields that training never reads (`setting(..., prediction_only=True)`)."""
    return tuple(f.name for f in fields(Config) if f.metadata.get("prediction_only"))


def trains_alike(a: Config, b: Config) -> bool:
    """Whether `a` and `b` train the same networks: they differ in prediction-only fields at
    most, so one's trained fold models serve the other, predicted again under its views."""
    return replace(b, **{name: getattr(a, name) for name in prediction_only_fields()}) == a


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def settings_lines(config: Config) -> list[str]:
    """Every setting of a config, one `key=value` line each as `--set` spells it: the lines
    rebuild it from the schema's defaults (`override(Config(), lines)`)."""
    lines = []
    for f in fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            lines += [f"{f.name}.{line}" for line in settings_lines(value)]
        elif isinstance(value, tuple):
            lines.append(f"{f.name}={','.join(map(str, value))}")
        else:
            lines.append(f"{f.name}={str(value).lower() if isinstance(value, bool) else value}")
    return lines


def from_dict(data: dict[str, Any]) -> Config:
    """A saved config (config.json's content); fields it lacks, from older runs, keep their
    defaults. Checked like any other."""
    return build(Config, data)

def build(cls: Any, values: Any) -> Any:
    if not isinstance(values, dict):
        name = SECTIONS[cls].rstrip(".") or "config"
        raise KitError(f"{name}={values!r}: expected a mapping of its fields")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = build(hints[f.name], value)
        elif isinstance(value, list):  # JSON has no tuples
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def load(path: Path) -> Config:
    try:
        return from_dict(json.loads(Path(path).read_text()))
    except KitError as error:
        raise KitError(f"{path}: {error}") from None
    except (OSError, ValueError, TypeError) as error:
        raise KitError(f"{path}: not a readable run config ({error})") from None
