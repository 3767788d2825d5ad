"""The schema of a run: frozen dataclasses, and the rule each field follows.

Every config is checked as it is built (preset, override, saved run, dataclasses.replace or a
direct call), before any data is read or anything compiles: a field outside its rule is a
KitError naming the field as `--set` spells it, its value and what is allowed.
"""
from __future__ import annotations

import dataclasses
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
    "HEADS",
    "LOSSES",
    "NETWORK_KINDS",
    "OPTIMIZERS",
    "RULES",
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
    "to_dict",
]

COMPETITION = "facial-keypoints-detection"

# The names each choice accepts; the modules that act on them (models, train, cv) own the
# meaning, this file owns the list so a config is refused before any of them is imported.
NETWORK_KINDS = ("seed", "resnet")
HEADS = ("dense", "soft_argmax")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
LOSSES = ("mse", "l1", "wing")
SELECTIONS = ("best", "last")
FOLD_BATCHINGS = ("auto", "vmap", "map")
FLAGGED_LABELS = ("keep", "drop", "downweight")
SUBSETS = tuple(SUBSET_COLUMNS)  # "15", "4"


@dataclass(frozen=True)
class AugmentConfig:
    """Per-batch augmentation drawn on the device; strengths are maxima of uniform draws."""

    flip_prob: float = 0.5
    affine_prob: float = 0.9
    rotate_degrees: float = 12.0
    scale: float = 0.08  # zoom factor drawn from [1 - scale, 1 + scale]
    shift_pixels: float = 6.0
    brightness: float = 0.15  # added to pixels in [0, 1]
    contrast: float = 0.25  # factor drawn from [1 - contrast, 1 + contrast]
    noise_std: float = 0.02
    fill: float = 0.0  # pixel value outside the frame after a warp
    max_redraws: int = 4  # a warp that pushes a keypoint out of frame is redrawn; then none
    # A flat grey rectangle over part of the face (hands, microphones and hair cover the worst
    # faces), its sides drawn from [occlude_size / 2, occlude_size] of the frame; the labels
    # stay, so the network learns to place a hidden keypoint from what is around it.
    occlude_prob: float = 0.0
    occlude_size: float = 0.4

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ModelConfig:
    """The network: `seed` is the student report's CNN, `resnet` a batch-norm residual net."""

    kind: str = "resnet"  # "seed" | "resnet"
    stem_width: int = 16
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    # More residual blocks in the deepest stage alone, the one whose cells see the whole face:
    # depth where the head's coarse maps come from (measured, not kept: docs/results.md).
    deep_blocks: int = 0
    dense: int = 256
    dropout: float = 0.0
    input_size: int = 64  # images are resized to this before the network (CPU time ~ size^2)
    # "dense": flatten the last stage into a dense layer. "soft_argmax": a heatmap per keypoint
    # on a finer grid (the last stages upsampled and merged), read out as its expected position.
    head: str = "dense"
    head_width: int = 64  # channels of the soft-argmax head's merged feature maps
    head_stride: int = 4  # the heatmaps' pixel stride on the network's input (4 or 8, say)

    def __post_init__(self) -> None:
        check(self)

    def widened(self, factor: float) -> ModelConfig:
        """The same network with every convolution's channels `factor` times as many
        (rounded; a dense head's layer kept): how `gpu` is made from `default`, and a
        pipeline's wider stage from its base."""
        def scaled(width: int) -> int:
            return max(1, round(width * factor))
        return replace(self, stem_width=scaled(self.stem_width),
                       widths=tuple(scaled(w) for w in self.widths),
                       head_width=scaled(self.head_width))


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser, the schedule and early stopping."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw" | "sgd" (the report's plain SGD)
    schedule: str = "onecycle"  # "onecycle" | "constant"
    loss: str = "mse"  # "mse" | "l1" | "wing"
    patience: int = 12  # epochs without a better validation RMSE before stopping
    eval_batch_size: int = 256
    # Which weights a fold keeps: "best" (the epoch with the lowest validation RMSE: the
    # held-out rows pick it, which flatters the out-of-fold estimate) or "last" (the end of
    # the schedule: held-out rows only score, never choose).
    select: str = "best"
    # Score the held-out rows every this many epochs and after the last. Above 1 only with
    # select="last", where the scores choose nothing: scoring every epoch (a forward pass
    # over a fifth of the rows at full size) took about a tenth of a 16-epoch fold's time
    # in `python -m bench fold` (docs/results.md), and the learning curve needs few.
    validate_every: int = 1
    # Keep an exponential moving average of the weights with this decay per step (0: none);
    # validation, early stopping and the kept weights then use the average.
    ema: float = 0.0
    # Training's own seed (initial weights, batches, augmentation); the folds follow the
    # run's seed alone, so runs that differ here are an ensemble's members. 0: the run's seed.
    seed: int = 0
    # Progressive resizing: the first `early_share` of the epochs (rounded down, see
    # kit.training.train.early_epochs) train at `early_size` pixels, at about
    # (early_size / model.input_size)^2 of an epoch's compute, the rest (and every validation
    # and prediction) at model.input_size. A share, not a count, so `--epochs` keeps the
    # recipe's shape. The soft-argmax head's maps span the frame at any input size, so the
    # same weights serve both. 0 and 0: none.
    early_size: int = 0
    early_share: float = 0.0

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class EngineConfig:
    """How training uses the machine; none of it changes what is learned (beyond float
    rounding), so a run resumes under other engine settings."""

    # "vmap": a group's folds as one batched program (accelerators); "map": one fold after
    # another inside the program (CPUs, where XLA's batched convolutions run slowly); "auto"
    # picks by the device.
    fold_batching: str = "auto"
    fold_group: int = 0  # folds trained together; 0 picks the most that fit in memory
    chunk_seconds: float = 1.0  # steps per dispatch aim at this, so progress moves
    checkpoint_seconds: float = 60.0  # at most this much training is lost to a crash

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Config:
    """One CV run: what to train, on which subsets, with how many folds."""

    preset: str = "default"
    seed: int = 0
    folds: int = 5
    grouped_folds: bool = True  # near-duplicate frames stay on one side of a split
    group_similarity: float = 0.85  # thumbnail cosine similarity that links two frames
    subsets: tuple[str, ...] = ("15", "4")
    # One network per fold with two heads (the 15-key head taught by the rows of the full
    # annotation source, the 4-key head by the core-only source) instead of one per subset:
    # every face teaches the shared trunk.
    shared_trunk: bool = False
    # Keypoints both annotation sources mark alike: with a shared trunk, both heads learn
    # them from every row (the bottom lip is marked differently, so it is never among them).
    common_keypoints: tuple[str, ...] = ()
    flip_tta: bool = True
    tta_shift: float = 0.0  # pixels; > 0 adds four shifted copies to test-time augmentation
    tta_zoom: float = 0.0  # > 0 adds copies zoomed by 1 +- tta_zoom
    tta_rotate: float = 0.0  # degrees; > 0 adds copies turned both ways
    # A second pass (kit.results.teacher): a finished run's id in the same runs folder, whose folds
    # this run reuses. With it, `pseudo_labels` adds the test faces labelled by the teacher's
    # model of each fold to that fold's training, and `flagged_labels` says what happens to
    # the training labels the teacher's OOF residuals flag as wrong (kit.results.label_noise): "keep",
    # "drop" (left out of training, never out of scoring) or "downweight" (their loss weighs
    # kit.teacher.DOWNWEIGHT). `fill_labels` gives the 15-key head, on each fold's training
    # rows, the teacher's fold model's values where the row's labels are missing.
    teacher: str = ""
    pseudo_labels: bool = False
    flagged_labels: str = "keep"
    fill_labels: bool = False
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

HALF_FRAME = f"[0, {IMAGE_SIZE // 2})"  # a shift of half the frame or more pushes the face out
PROBABILITY = "[0, 1]"

RULES: dict[str, Rule] = {
    # Not checked against PRESETS (a saved run may name a renamed preset), but it names the
    # run's folder, so no path separators.
    "preset": Rule(str),
    # numpy's and scikit-learn's generators (the fold split, the epochs' order) take these.
    "seed": Rule(int, f"[0, {2**32 - 1}]"),
    "folds": Rule(int, ">= 2"),  # one fold leaves nothing to validate on
    "grouped_folds": Rule(bool),
    "group_similarity": Rule(float, "(0, 1]"),  # a cosine; at 0 or below every frame links
    "subsets": Rule(str, names=SUBSETS, many=True, distinct=True),
    "shared_trunk": Rule(bool),
    # Only the core keypoints are marked by both annotation sources; any other name would
    # silently change nothing.
    "common_keypoints": Rule(str, names=CORE_KEYPOINTS, many=True, may_be_empty=True,
                             distinct=True),
    "flip_tta": Rule(bool),
    "tta_shift": Rule(float, HALF_FRAME),
    "tta_zoom": Rule(float, "[0, 0.5]"),  # beyond, a view shrinks the face to a thumbnail
    "tta_rotate": Rule(float, "[0, 45]"),  # upright faces: a larger turn is another task
    # A run id, never a path: the teacher lives in the same runs folder (empty: none).
    "teacher": Rule(str, may_be_empty=True),
    "pseudo_labels": Rule(bool),  # _check_teacher: only with a teacher
    "flagged_labels": Rule(str, names=FLAGGED_LABELS),
    "fill_labels": Rule(bool),  # _check_teacher: only with a teacher
    "model": Rule(ModelConfig),
    "train": Rule(TrainConfig),
    "augment": Rule(AugmentConfig),
    "engine": Rule(EngineConfig),
    "model.kind": Rule(str, names=NETWORK_KINDS),
    "model.stem_width": Rule(int, ">= 1"),
    "model.widths": Rule(int, ">= 1", many=True),
    "model.blocks_per_stage": Rule(int, ">= 0"),
    "model.deep_blocks": Rule(int, ">= 0"),
    "model.dense": Rule(int, ">= 1"),
    "model.dropout": Rule(float, "[0, 1)"),  # a rate of 1 drops everything and divides by 0
    # The images' own size at most (upsizing adds no detail); below 16 pixels eye corners
    # fall within a pixel or two of each other. _check_network adds what the network needs.
    "model.input_size": Rule(int, f"[16, {IMAGE_SIZE}]"),
    "model.head": Rule(str, names=HEADS),
    "model.head_width": Rule(int, ">= 1"),
    "model.head_stride": Rule(int, ">= 1"),  # the soft-argmax head's strides: _check_network
    "train.epochs": Rule(int, ">= 1"),
    "train.batch_size": Rule(int, ">= 1"),
    "train.learning_rate": Rule(float, "> 0"),
    "train.weight_decay": Rule(float, ">= 0"),
    "train.optimizer": Rule(str, names=OPTIMIZERS),
    "train.schedule": Rule(str, names=SCHEDULES),
    "train.loss": Rule(str, names=LOSSES),
    "train.patience": Rule(int, ">= 1"),
    "train.eval_batch_size": Rule(int, ">= 1"),
    "train.select": Rule(str, names=SELECTIONS),
    "train.validate_every": Rule(int, ">= 1"),  # and _check_validation
    "train.ema": Rule(float, "[0, 1)"),  # a decay of 1 never moves from the initial weights
    "train.seed": Rule(int, f"[0, {2**31 - 1}]"),  # jax.random.fold_in takes an int32
    "train.early_size": Rule(int, f"[0, {IMAGE_SIZE}]"),  # and _check_early_size
    "train.early_share": Rule(float, "[0, 1)"),  # at 1 no epoch would train at full size
    "augment.flip_prob": Rule(float, PROBABILITY),
    "augment.affine_prob": Rule(float, PROBABILITY),
    "augment.rotate_degrees": Rule(float, "[0, 180]"),
    "augment.scale": Rule(float, "[0, 1)"),  # the zoom's lower end, 1 - scale, stays > 0
    "augment.shift_pixels": Rule(float, HALF_FRAME),
    "augment.brightness": Rule(float, "[0, 1]"),  # pixels are in [0, 1]
    "augment.contrast": Rule(float, "[0, 1)"),  # the factor's lower end, 1 - contrast, > 0
    "augment.noise_std": Rule(float, "[0, 1]"),
    "augment.fill": Rule(float, "[0, 1]"),  # a pixel value
    "augment.max_redraws": Rule(int, ">= 0"),
    "augment.occlude_prob": Rule(float, PROBABILITY),
    "augment.occlude_size": Rule(float, "(0, 1]"),  # of the frame's side
    "engine.fold_batching": Rule(str, names=FOLD_BATCHINGS),
    "engine.fold_group": Rule(int, ">= 0"),  # 0: as many as fit
    "engine.chunk_seconds": Rule(float, "> 0"),
    "engine.checkpoint_seconds": Rule(float, ">= 0"),  # 0: after every chunk
}


def check(config: Any) -> None:
    """Refuse a config (or one of its sections) with a field outside its rule, naming the first
    such field; the network's shape rules follow once every field has the right kind."""
    prefix = SECTIONS[type(config)]
    for f in fields(config):
        key = prefix + f.name
        value = getattr(config, f.name)
        if not accepts(RULES[key], value):
            raise KitError(f"{key}={value!r}: expected {describe(RULES[key])}")
    if isinstance(config, ModelConfig):
        _check_network(config)
    if isinstance(config, Config):
        _check_teacher(config)
        _check_early_size(config)
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


def _check_validation(train: TrainConfig) -> None:
    """Where the held-out rows choose the weights and stop training, every epoch needs its
    score: skipping some would silently change the choice."""
    if train.validate_every > 1 and train.select != "last":
        raise KitError(f"train.validate_every={train.validate_every!r} with "
                       f"train.select={train.select!r}: expected train.validate_every=1 "
                       "(each epoch's score chooses the weights and may stop the fold), "
                       "or train.select=last")


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
    # models.soft_argmax_head merges stages down to the first whose stride is head_stride:
    # the finest stage strides 4 (the stem's 2 is never a stage), the deepest 2**halvings; any
    # other value would silently read a different grid. One cell is no heatmap: at least 2x2.
    strides = [2**k for k in range(2, halvings + 1) if size // 2**k >= 2]
    if model.head_stride not in strides:
        raise KitError(f"model.head_stride={model.head_stride!r}: expected one of "
                       f"{', '.join(map(str, strides))} (the strides of the resnet's stages "
                       f"at {key}={size} with {len(model.widths)} "
                       f"widths, leaving at least 2x2 heatmap cells)")


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


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
