"""95 % intervals for RMSE figures by a bootstrap over face groups: numpy only, no files.

A figure here is a weighted RMSE over terms, sqrt(sum_k w_k MSE_k / sum_k w_k), where MSE_k is
the mean squared error of the OOF lines of term k: one term of weight 1 is a plain RMSE; the
leaderboard estimate has a term per lookup block and column (kit/results/report.py).

The lines of one face group (near-identical frames linked by kit/runs/folds.py, the groups the
folds keep together) are not independent draws, so the bootstrap resamples whole groups: each
resample draws G groups with replacement from the G there are, and a group drawn twice counts
its lines twice. Each group is summed once per term (squared errors, lines), so a resample's
figure is a count-weighted sum: (resamples x groups) @ (groups x terms), no loop over lines.

Paired: two runs' figures over the same lines take the same draws, and the interval is the
percentiles of the resampled differences (B - A). Identical runs give exactly 0 in every
resample, so a zero-width interval; a run off by d pixels in every value against one that is
exact gives d in every resample. The draws come from `seed` alone: the same inputs and seed
give the same interval.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kit.core.errors import KitError

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
_CHUNK = 256  # resamples drawn and summed at a time (memory, not results: the chunks are fixed)


@dataclass(frozen=True)
class Totals:
    """A run's squared errors summed per face group and term, and the lines summed."""

    sums: np.ndarray  # (groups, terms)
    counts: np.ndarray  # (groups, terms)

    def select(self, terms: np.ndarray) -> Totals:
        """Some of the terms (positions), in the order given."""
        return Totals(self.sums[:, terms], self.counts[:, terms])


def group_index(groups_of_lines: np.ndarray) -> tuple[np.ndarray, int]:
    """Each line's group as 0..G-1 (G the distinct groups among the lines), and G."""
    distinct, index = np.unique(np.asarray(groups_of_lines), return_inverse=True)
    return index.reshape(-1), len(distinct)


def totals(groups: np.ndarray, squared_errors: np.ndarray, term_lines: Sequence[np.ndarray],
           n_groups: int) -> Totals:
    """Per group and term, the sum of squared errors and the count of lines. `groups`: each
    line's group (0..n_groups-1); `term_lines`: for each term, the positions of its lines
    (a line may serve several terms)."""
    groups = np.asarray(groups)
    squared_errors = np.asarray(squared_errors, np.float64)
    sums = np.zeros((n_groups, len(term_lines)))
    counts = np.zeros((n_groups, len(term_lines)))
    for term, lines in enumerate(term_lines):
        lines = np.asarray(lines, np.int64)
        sums[:, term] = np.bincount(groups[lines], weights=squared_errors[lines],
                                    minlength=n_groups)
        counts[:, term] = np.bincount(groups[lines], minlength=n_groups)
    return Totals(sums, counts)


def weighted_rmse(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sqrt(sum_k w_k sums_k / counts_k / sum_k w_k) over the last axis; NaN where a term has
    no line."""
    weights = np.asarray(weights, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    return np.sqrt(mse @ weights / weights.sum())


def point(figure: Totals, weights: np.ndarray) -> float:
    """The figure on every line (no resampling)."""
    return float(weighted_rmse(figure.sums.sum(axis=0), figure.counts.sum(axis=0), weights))


@dataclass(frozen=True)
class Interval:
    """A figure (or a difference B - A) and its percentile interval."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int  # resamples with a line in every term (weighted_rmse is NaN in others)
    groups: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "level": self.level, "resamples": self.resamples, "groups": self.groups,
                "seed": self.seed, "method": METHOD}


METHOD = "percentile bootstrap over face groups"


class GroupBootstrap:
    """The draws of a bootstrap over `n_groups` face groups: `resamples` rows of how many times
    each group was drawn, made once from `seed` and shared by every figure asked of it (so
    figures of one bootstrap are paired with each other)."""

    def __init__(self, n_groups: int, resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = LEVEL):
        if n_groups < 2:
            raise KitError(f"a bootstrap over face groups needs at least 2 groups; these rows "
                           f"fall in {n_groups}; expected rows of two or more distinct faces")
        if resamples < 1:
            raise KitError(f"resamples={resamples}: expected at least 1")
        if not 0.0 < level < 1.0:
            raise KitError(f"level={level}: expected a coverage in (0, 1), such as 0.95")
        self.n_groups, self.resamples, self.seed, self.level = n_groups, resamples, seed, level
        rng = np.random.default_rng(seed)
        counts = np.empty((resamples, n_groups), np.int32)
        for start in range(0, resamples, _CHUNK):
            size = min(_CHUNK, resamples - start)
            draws = rng.integers(0, n_groups, size=(size, n_groups))
            offsets = (draws + n_groups * np.arange(size)[:, None]).ravel()
            counts[start:start + size] = np.bincount(
                offsets, minlength=size * n_groups).reshape(size, n_groups)
        self.counts = counts

    def resampled(self, figure: Totals) -> tuple[np.ndarray, np.ndarray]:
        """Each resample's per-term sums and counts, (resamples, terms) each."""
        if figure.sums.shape[0] != self.n_groups:
            raise KitError(f"totals over {figure.sums.shape[0]} groups for a bootstrap over "
                           f"{self.n_groups}; expected the same groups")
        terms = figure.sums.shape[1]
        sums, counts = np.empty((self.resamples, terms)), np.empty((self.resamples, terms))
        for start in range(0, self.resamples, _CHUNK):
            drawn = self.counts[start:start + _CHUNK].astype(np.float64)
            sums[start:start + len(drawn)] = drawn @ figure.sums
            counts[start:start + len(drawn)] = drawn @ figure.counts
        return sums, counts

    def _interval(self, estimate: float, values: np.ndarray) -> Interval:
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise KitError(f"no resample of the {self.n_groups} face groups has a line in "
                           "every term; expected terms whose lines lie in more groups")
        tail = 100.0 * (1.0 - self.level) / 2.0
        low, high = np.percentile(values, [tail, 100.0 - tail])
        return Interval(float(estimate), float(low), float(high), self.level, len(values),
                        self.n_groups, self.seed)

    def rmse(self, figure: Totals, weights: np.ndarray) -> Interval:
        """A figure and its interval."""
        return self._interval(point(figure, weights),
                              weighted_rmse(*self.resampled(figure), weights))

    def differences(self, a: Totals, b: Totals,
                    measures: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Interval]:
        """B's figure minus A's for each measure (its terms' positions among the totals' terms,
        and their weights), paired (the same draws for both runs and every measure), each
        with its interval. Resampled once for all the measures."""
        a_sums, a_counts = self.resampled(a)
        b_sums, b_counts = self.resampled(b)
        out = []
        for terms, weights in measures:
            terms = np.asarray(terms, np.int64)
            estimate = point(b.select(terms), weights) - point(a.select(terms), weights)
            values = (weighted_rmse(b_sums[:, terms], b_counts[:, terms], weights)
                      - weighted_rmse(a_sums[:, terms], a_counts[:, terms], weights))
            out.append(self._interval(estimate, values))
        return out

    def difference(self, a: Totals, b: Totals, weights: np.ndarray) -> Interval:
        """B's figure minus A's, paired (the same draws for both), and its interval."""
        return self.differences(a, b, [(np.arange(a.sums.shape[1]), weights)])[0]
