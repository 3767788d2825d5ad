"""The named presets, each one flat function that builds its whole config: every setting it
changes from the schema's defaults (kit/config/schema.py) is written out in it, none is taken
from another preset. `python -m kit cv --preset NAME --describe` prints every setting of one.
What each choice scored, and what it cost, is in docs/results.md."""
from __future__ import annotations

import typing

from kit.config.pipelines import PIPELINES
from kit.config.schema import AugmentConfig, Config, ModelConfig, TrainConfig, from_dict
from kit.config.v1 import V1
from kit.core.errors import KitError

__all__ = ["COMMON_KEYPOINTS", "PRESETS", "preset", "preset_for"]

# The keypoints both annotation sources mark alike, so a shared trunk's two heads share them.
COMMON_KEYPOINTS = ("left_eye_center", "right_eye_center", "nose_tip")


def _seed() -> Config:
    """The student report's recipe: conv-pool-conv-pool-dense, MSE, plain SGD, targets in
    [0, 1]. `python -m kit cv --preset seed`"""
    return Config(
        preset="seed",
        grouped_folds=False,
        flip_tta=False,
        model=ModelConfig(kind="seed", widths=(32, 64), dense=500, input_size=96),
        train=TrainConfig(epochs=30, batch_size=32, learning_rate=0.01, weight_decay=0.0,
                          optimizer="sgd", schedule="constant", loss="mse", patience=8),
    )


def _default() -> Config:
    """The strongest recipe that trains 5 folds of the practice data on 2 CPU cores in about
    v1's time. `make cv` (`python -m kit cv --preset default`). Each setting below against
    v1's: docs/results.md, the levers."""
    return Config(
        preset="default",
        # Held-out faces then sit as far from their training faces as the test's faces do.
        group_similarity=0.8,
        shared_trunk=True,  # one network per fold: every face teaches the trunk
        common_keypoints=COMMON_KEYPOINTS,
        tta_shift=3.0,
        # Soft-argmax heatmaps on a 12x12 grid of the full 96-pixel input; the head is wider
        # than v1's, which paid only together with the doubled learning rate below.
        model=ModelConfig(input_size=96, head="soft_argmax", head_width=96, head_stride=8),
        train=TrainConfig(
            epochs=48,  # v1's 30 and more: the time the faster engine saved, spent
            learning_rate=0.02,
            # Held-out rows only score, never choose the weights (and the last epoch scored
            # better than the best one).
            select="last",
            validate_every=6,  # the learning curve needs few points, and each costs time
            # Progressive resizing: the first 30 of the 48 epochs at 80 pixels, which cost
            # less than full-size ones.
            early_size=80, early_share=0.625,
        ),
        # Milder warps than the schema's: the faces are centred and upright.
        augment=AugmentConfig(rotate_degrees=8.0, shift_pixels=4.0, scale=0.05),
    )


def _gpu() -> Config:
    """One GPU's worth of compute: `default`'s recipe at twice its width, for 80 epochs, all
    at full size. `python -m kit cv --preset gpu` (picked where a GPU is)."""
    return Config(
        preset="gpu",
        group_similarity=0.8,
        shared_trunk=True,
        common_keypoints=COMMON_KEYPOINTS,
        tta_shift=3.0,
        model=ModelConfig(stem_width=32, widths=(64, 128, 256), input_size=96,
                          head="soft_argmax", head_width=192, head_stride=8),
        # Held-out rows never pick the weights that they then score.
        train=TrainConfig(epochs=80, learning_rate=0.02, select="last", validate_every=6),
        augment=AugmentConfig(rotate_degrees=8.0, shift_pixels=4.0, scale=0.05),
    )


def _v1() -> Config:
    """The first release's `default`, frozen in kit/config/v1.py so its figures stay
    reproducible and engines can be timed on equal work. `python -m kit cv --preset v1`"""
    return from_dict(V1)


def _separate() -> Config:
    """`default`'s settings in two networks per fold: the 15-key network on the rows of the
    full annotation source, the 4-key one on every row with the core keypoints; each learns
    only its own source's labels, so no keypoint is common. A specialist to blend with the
    shared trunk (`python -m kit ensemble`). `python -m kit cv --preset separate`"""
    return Config(
        preset="separate",
        group_similarity=0.8,
        tta_shift=3.0,
        model=ModelConfig(input_size=96, head="soft_argmax", head_width=96, head_stride=8),
        train=TrainConfig(epochs=48, learning_rate=0.02, select="last", validate_every=6,
                          early_size=80, early_share=0.625),
        augment=AugmentConfig(rotate_degrees=8.0, shift_pixels=4.0, scale=0.05),
    )


def _quick() -> Config:
    """A smoke run: seconds on tiny data; used by the tests."""
    return Config(
        preset="quick",
        folds=2,
        model=ModelConfig(kind="resnet", stem_width=8, widths=(8, 16), dense=32, input_size=48,
                          head="soft_argmax", head_width=16, head_stride=4),
        train=TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3, patience=5),
    )


def _demo() -> Config:
    """A small `default` (64 pixels, a 64-wide head, 10 epochs) for a small synthetic
    competition, in a few minutes: `make demo`."""
    return Config(
        preset="demo",
        folds=3,
        grouped_folds=False,
        group_similarity=0.8,
        shared_trunk=True,
        common_keypoints=COMMON_KEYPOINTS,
        tta_shift=3.0,
        model=ModelConfig(input_size=64, head="soft_argmax", head_width=64, head_stride=8),
        train=TrainConfig(epochs=10, learning_rate=0.01),
        augment=AugmentConfig(rotate_degrees=8.0, shift_pixels=4.0, scale=0.05),
    )


PRESETS: dict[str, typing.Callable[[], Config]] = {
    "seed": _seed,
    "default": _default,
    "gpu": _gpu,
    "v1": _v1,
    "separate": _separate,
    "quick": _quick,
    "demo": _demo,
}


def preset_for(platform: str) -> tuple[str, str]:
    """The preset for a machine whose JAX backend is `platform`, and why, in a few words."""
    if platform in ("gpu", "cuda", "rocm", "tpu"):
        return "gpu", f"a {platform.upper()} is here: the GPU-class preset"
    return "default", "no accelerator here: the preset sized for a few CPU cores"


def preset(name: str) -> Config:
    if name in PIPELINES:
        raise KitError(f"preset {name!r} is a pipeline of several runs: only `cv` runs it "
                       f"(`make cv PRESET={name}`)")
    if name not in PRESETS:
        raise KitError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}, or "
                       f"for `cv` a pipeline of several runs: {', '.join(PIPELINES)}")
    return PRESETS[name]()
