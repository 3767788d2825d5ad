"""The labels' noise floor: near-identical frames found by their thumbnails, and the spread of
their labels' differences read back as each label's own noise."""
from __future__ import annotations

import numpy as np

from kit.core.keypoints import COLUMNS
from kit.results import label_agreement
from tests.conftest import refusal


def faces_with_repeats(unique: int, repeated: int, seed: int = 0):
    """`unique` random frames, the first `repeated` of them shown again (a pixel's noise
    apart), with labels drawn around one truth per face."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (unique, 96, 96)).astype(np.uint8)
    again = np.clip(images[:repeated].astype(int) + rng.integers(-1, 2, (repeated, 96, 96)),
                    0, 255).astype(np.uint8)
    truth = rng.uniform(20, 76, (unique, len(COLUMNS)))
    return np.concatenate([images, again]), truth, rng


def test_only_the_repeated_frames_pair_up():
    images, _, _ = faces_with_repeats(30, 8)
    firsts, seconds = label_agreement.near_identical_pairs(images, 0.95)
    assert sorted(zip(firsts.tolist(), seconds.tolist())) == [(k, 30 + k) for k in range(8)]


def test_labels_with_noise_sigma_give_a_floor_of_sigma():
    images, truth, rng = faces_with_repeats(200, 150)
    sigma = 1.5
    labels = np.concatenate([truth, truth[:150]]) + rng.normal(0, sigma, (350, len(COLUMNS)))
    agreement = label_agreement.label_floor(images, labels, 0.95)
    assert agreement.pairs == 150 and agreement.values == 150 * len(COLUMNS)
    assert abs(agreement.floor - sigma) < 0.1


def test_a_known_difference_gives_its_floor_exactly_and_missing_labels_are_skipped():
    keypoints = np.full((4, len(COLUMNS)), np.nan)
    keypoints[:, 0] = [10.0, 12.0, 30.0, 30.0]  # pair (0, 1) apart by 2, pair (2, 3) by 0
    keypoints[0, 1] = 5.0  # labelled in one frame of its pair only: not compared
    agreement = label_agreement.disagreement(keypoints, np.array([0, 2]), np.array([1, 3]), 0.95)
    assert agreement.values == 2
    assert agreement.floor == np.sqrt((2.0**2 + 0.0) / 2 / 2)
    assert agreement.per_column[COLUMNS[0]] == agreement.floor
    assert np.isnan(agreement.per_column[COLUMNS[1]])


def test_pairs_without_a_label_in_common_are_refused_in_one_line():
    keypoints = np.full((2, len(COLUMNS)), np.nan)
    keypoints[0] = 40.0
    message = refusal(lambda: label_agreement.disagreement(keypoints, np.array([0]),
                                                           np.array([1]), 0.97))
    assert "no pair of frames at similarity >= 0.97 has a label in common" in message
