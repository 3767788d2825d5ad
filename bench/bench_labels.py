"""The noise floor of the practice labels: how far apart the labels of near-identical frames
are (kit.results.label_agreement), at several strict links. Seconds, no training.

    python -m bench labels [--similarity S ...]

Prints, for each link, the pairs of frames at or above it, the labelled values they share, and
each label's own noise (rms of the pair differences / sqrt 2, pixels): the RMSE a perfect model
would score against these labels. The three keypoints whose labels disagree most follow.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.common import PRACTICE_ZIP, load_practice
from kit.core.errors import KitError
from kit.results import label_agreement
from kit.runs.folds import thumbnails

LINKS = (0.99, 0.97, 0.95)


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench labels")
    parser.add_argument("--similarity", type=float, nargs="*", default=list(LINKS))
    args = parser.parse_args(argv or [])
    if not PRACTICE_ZIP.exists():
        return {"skipped": f"{PRACTICE_ZIP} is absent"}
    training, _ = load_practice()
    firsts, seconds = label_agreement.near_identical_pairs(training.images, min(args.similarity))
    flat = thumbnails(training.images)
    similarity_of = np.einsum("ij,ij->i", flat[firsts], flat[seconds])
    figures = {}
    for link in args.similarity:
        kept = similarity_of >= link
        try:
            agreement = label_agreement.disagreement(training.keypoints, firsts[kept],
                                                     seconds[kept], link)
        except KitError as refused:
            figures[f"link {link}"] = str(refused)
            continue
        worst = sorted(((value, name) for name, value in agreement.per_column.items()
                        if np.isfinite(value)), reverse=True)[:3]
        figures[f"link {link}"] = (
            f"{agreement.pairs} pairs, {agreement.values} values: floor {agreement.floor:.3f} px"
            f" (most apart: {', '.join(f'{name} {value:.2f}' for value, name in worst)})")
    return figures
