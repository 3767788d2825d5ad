"""The network vocabulary: which networks a config trains, what each one's heads predict and
learn from each training row, and how a subset's values come out of a network's outputs.

A run trains either one network per subset ("15": all 30 values, "4": the 8 core values) or
one shared trunk ("shared") with both heads side by side: its outputs are the 15-key head's 30
values, then the 4-key head's 8. Every other module asks here instead of slicing outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.config import Config
from kit.core.keypoints import (
    COLUMN_INDEX,
    COLUMNS,
    CORE_COLUMN_INDICES,
    CORE_COLUMNS,
    SUBSET_COLUMNS,
    flip_permutation,
)
from kit.data.tables import subset_indices

SHARED = "shared"


@dataclass(frozen=True)
class Task:
    """What a network predicts: its output columns and how a mirror image relabels them."""

    name: str
    columns: tuple[str, ...]
    flip: tuple[int, ...]  # outputs[..., flip] are a mirrored face's outputs

    @classmethod
    def of(cls, name: str, columns: tuple[str, ...]) -> Task:
        return cls(name, columns, tuple(int(i) for i in flip_permutation(columns)))

    @property
    def outputs(self) -> int:
        return len(self.columns)

    @property
    def permutation(self) -> np.ndarray:
        return np.array(self.flip)


def network_names(config: Config) -> tuple[str, ...]:
    """The networks trained on each fold: one per subset, or one shared trunk."""
    return (SHARED,) if config.shared_trunk else tuple(config.subsets)


def network_for(config: Config, subset: str) -> str:
    """The network whose outputs hold a subset's values."""
    return SHARED if config.shared_trunk else subset


def subsets_answered(config: Config, network: str) -> tuple[str, ...]:
    """The subsets a network answers."""
    return tuple(config.subsets) if network == SHARED else (network,)


def subsets_with_heads(network: str) -> tuple[str, ...]:
    """The subsets a network's heads can answer: both for the shared trunk."""
    return tuple(SUBSET_COLUMNS) if network == SHARED else (network,)


def task_for(network: str) -> Task:
    """A subset's network predicts its columns; the shared one both heads side by side."""
    if network == SHARED:
        fifteen, four = Task.of("15", COLUMNS), Task.of("4", CORE_COLUMNS)
        flip = fifteen.flip + tuple(len(COLUMNS) + i for i in four.flip)
        return Task(SHARED, COLUMNS + CORE_COLUMNS, flip)
    return Task.of(network, SUBSET_COLUMNS[network])


def head_slice(network: str, subset: str) -> slice:
    """Where a subset's head sits among a network's outputs."""
    if network != SHARED:
        return slice(None)
    return slice(0, len(COLUMNS)) if subset == "15" else slice(len(COLUMNS), None)


def column_indices(subset: str) -> np.ndarray:
    """A subset's columns as indices into the 30 (Kaggle's order)."""
    return np.array([COLUMN_INDEX[c] for c in SUBSET_COLUMNS[subset]])


def full_source(keypoints: np.ndarray) -> np.ndarray:
    """Rows of the first annotation source: those with any value beyond the 8 core ones."""
    present = ~np.isnan(keypoints)
    present[:, CORE_COLUMN_INDICES] = False
    return present.any(axis=1)


def network_rows(config: Config, network: str, keypoints: np.ndarray) -> np.ndarray:
    """The training rows a network learns from: its subset's, or every subset's."""
    if network != SHARED:
        return subset_indices(keypoints, network)
    return np.unique(np.concatenate([subset_indices(keypoints, s) for s in config.subsets]))


def network_targets(network: str, keypoints: np.ndarray,
                    common: tuple[str, ...] = ()) -> np.ndarray:
    """What a network learns from each row, NaN where it learns nothing.

    The shared network's 15-key head learns from the full source and its core head from the
    core-only source, whose bottom-lip convention differs. The `common` keypoints (eye centres
    and nose tip, say) mean the same in both sources, so both heads learn them from every row.
    """
    if network != SHARED:
        return keypoints[:, column_indices(network)]
    full = full_source(keypoints)[:, None]
    shared = np.isin(np.array([c[:-2] for c in COLUMNS]), common)
    fifteen = np.where(full | shared, keypoints, np.nan)
    core = keypoints[:, CORE_COLUMN_INDICES]
    four = np.where(full & ~shared[CORE_COLUMN_INDICES], np.nan, core)
    return np.concatenate([fifteen, four], axis=1)


def fillable(network: str, targets: np.ndarray) -> np.ndarray:
    """Which of a network's target values (network_targets') a teacher may fill: the 15-key
    head's missing ones. The core head's are missing on the full source's faces only, which
    its 15-key head answers (subset_predictions), so filling them would teach nothing asked."""
    mask = np.zeros(targets.shape, bool)
    if "15" in subsets_with_heads(network):
        head = head_slice(network, "15")
        mask[:, head] = np.isnan(targets[:, head])
    return mask


def subset_predictions(network: str, subset: str, outputs: np.ndarray,
                       full: np.ndarray | None = None) -> np.ndarray:
    """A subset's values from a network's outputs. For the shared network's 4-key values,
    faces of the full annotation source (where `full` says so) take the 15-key head's core
    values: the head that learned that source's convention (its bottom lip)."""
    values = outputs[:, head_slice(network, subset)]
    if network != SHARED or subset == "15" or full is None:
        return values
    fifteen = outputs[:, head_slice(network, "15")]
    return np.where(np.asarray(full)[:, None], fifteen[:, CORE_COLUMN_INDICES], values)
