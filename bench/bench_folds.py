"""How alike a fold's held-out faces are to the faces it trains on, beside how alike the
practice test faces are to the training set: the nearest training face's thumbnail cosine
similarity (kit.runs.folds.thumbnails), for grouped folds at several links. Seconds, no
training: it shows whether a grouping holds faces out as the test does before a full
`make cv` is spent on it.

    python -m bench folds [--folds K] [--similarity S ...]

Prints, for the test and for each link, the quartiles (10 %, 25 %, 50 %, 75 %, 90 %) of that
nearest similarity and the share above v1's link (0.85), with the groups' count and
the largest group's rows (a chain of links can join thousands of faces into one group).
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.common import PRACTICE_ZIP, load_practice
from kit.config import Config
from kit.runs import folds

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
V1_LINK = 0.85  # v1's group_similarity (the schema's default): the share above it is shown
LINKS = (0.9, V1_LINK, 0.8, 0.75)


def nearest(held_out: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Each held-out thumbnail's highest cosine similarity to any thumbnail of `pool`."""
    return (held_out @ pool.T).max(axis=1)


def out_of_fold_nearest(flat: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Each face's highest similarity to a face of another fold: what its fold trains on."""
    best = np.full(len(flat), -1.0, np.float32)
    for fold in np.unique(fold_of):
        inside = fold_of == fold
        best[inside] = nearest(flat[inside], flat[~inside])
    return best


def summary(similarity: np.ndarray, link: float) -> str:
    quartiles = " / ".join(f"{q:.3f}" for q in np.quantile(similarity, QUANTILES))
    return f"{quartiles}, above {link}: {np.mean(similarity > link):.1%}"


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench folds")
    parser.add_argument("--folds", type=int, default=Config().folds)
    parser.add_argument("--similarity", type=float, nargs="*", default=list(LINKS))
    args = parser.parse_args(argv or [])
    if not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    training, test = load_practice()
    link = V1_LINK
    flat = folds.thumbnails(training.images)
    figures = {"test faces": summary(nearest(folds.thumbnails(test.images), flat), link)}
    for similarity in args.similarity:
        groups = folds.near_duplicate_groups(training.images, similarity)
        fold_of = folds.split(len(flat), args.folds, 0, groups)
        sizes = np.bincount(groups)
        figures[f"link {similarity}"] = (
            f"{summary(out_of_fold_nearest(flat, fold_of), link)} ({len(sizes)} groups, "
            f"the largest {sizes.max()} rows)")
    figures["plain K-fold"] = summary(
        out_of_fold_nearest(flat, folds.split(len(flat), args.folds, 0)), link)
    return figures
