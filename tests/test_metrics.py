"""The benchmark metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from qface import metrics


def test_accuracy_and_mean_class_accuracy():
    true = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 0])
    assert metrics.accuracy(pred, true) == pytest.approx(4 / 6)
    assert metrics.mean_class_accuracy(pred, true) == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


def test_f1_per_label_and_mean():
    true = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    pred = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    # label 0: tp 1, fp 1, fn 1 → 2/4; label 1: tp 2, fp 1, fn 0 → 4/5
    assert metrics.f1(pred[:, 0], true[:, 0]) == pytest.approx(0.5)
    assert metrics.mean_f1(pred, true) == pytest.approx((0.5 + 0.8) / 2)
    assert metrics.f1(np.zeros(3), np.zeros(3)) == 0.0


def test_mean_attribute_accuracy():
    true = np.array([[1, 0, 1], [0, 0, 1]])
    pred = np.array([[1, 1, 1], [0, 0, 0]])
    assert metrics.mean_accuracy(pred, true) == pytest.approx(4 / 6)


def test_age_mae_and_cumulative_score():
    true, pred = np.array([20, 30, 40, 50]), np.array([22, 36, 40, 45])
    assert metrics.mae(pred, true) == pytest.approx((2 + 6 + 0 + 5) / 4)
    assert metrics.cumulative_score(pred, true, 5) == pytest.approx(3 / 4)


def test_nme_normalises_by_the_outer_eye_corners():
    true = np.zeros((1, 68, 2))
    true[0, 36], true[0, 45] = [0, 0], [10, 0]  # inter-ocular distance 10
    pred = true.copy()
    pred[0, :, 1] += 1.0  # every point 1 px off
    assert metrics.nme(pred, true) == pytest.approx(0.1)


def test_verification_accuracy_is_perfect_for_separable_identities_and_chance_for_noise():
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(20), 5)
    centres = rng.normal(size=(20, 16)) * 10
    separable = centres[identities] + rng.normal(size=(100, 16)) * 0.1
    assert metrics.verification_accuracy(separable, identities) == 1.0
    noise = rng.normal(size=(100, 16))
    assert 0.35 < metrics.verification_accuracy(noise, identities) < 0.65


def test_verification_without_same_person_pairs_is_undefined_not_a_crash():
    assert np.isnan(metrics.verification_accuracy(np.random.default_rng(0).normal(size=(20, 8)), np.arange(20)))
