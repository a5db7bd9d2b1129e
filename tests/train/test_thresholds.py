"""The open-set maths: thresholds, leave-one-out distances, FAR/FRR, temperature."""

from __future__ import annotations

import numpy as np
import pytest

from facefleet.registry.inference import pairwise_distances, softmax_scores
from facefleet.train.thresholds import (
    OpenSetParams,
    choose_threshold,
    class_distances,
    far_frr_curve,
    fit_temperature,
    fit_thresholds,
    loo_class_distances,
    operating_point,
)

P = OpenSetParams(target_far=0.01, target_frr=0.05, max_threshold=0.6, min_threshold=0.3)


def test_separated_distances_give_the_midpoint():
    genuine = np.linspace(0.2, 0.4, 21)  # 95th percentile 0.39
    impostor = np.linspace(0.5, 1.0, 101)  # 1st percentile 0.505
    t = choose_threshold(genuine, impostor, P)
    assert t == pytest.approx((0.39 + 0.505) / 2)


def test_overlap_lets_impostors_win_and_admits_none_of_the_closest():
    genuine = np.array([0.3, 0.4, 0.5, 0.55])
    impostor = np.array([0.45, 0.8, 0.9])
    t = choose_threshold(genuine, impostor, OpenSetParams(target_far=0.0))
    assert t < 0.45 and t == pytest.approx(0.45)


def test_cap_floor_and_single_photo_fallback():
    assert choose_threshold([0.1], [2.0, 2.5], P) == 0.6  # cap
    assert choose_threshold([0.1], [0.2], P) == 0.3  # floor
    # one photo: no genuine distances, the pooled value stands in
    assert choose_threshold([np.inf], [0.9] * 10, P, fallback_genuine=0.5) == pytest.approx(0.6)
    assert choose_threshold([], [0.7] * 10, P, fallback_genuine=0.4) == pytest.approx(0.55)
    assert choose_threshold([], [], P) == 0.6


def test_loo_distances_match_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 5))
    y = rng.integers(0, 4, size=23)
    y[0] = 3  # class 3 has exactly one face
    y[y == 3] = 2
    y[0] = 3
    loo = loo_class_distances(X, y, 4, chunk=7)
    D = pairwise_distances(X, X)
    for i in range(len(X)):
        for k in range(4):
            others = [j for j in range(len(X)) if y[j] == k and j != i]
            expect = min(D[i, j] for j in others) if others else np.inf
            assert loo[i, k] == pytest.approx(expect)
    assert np.isinf(loo[0, 3])
    G = class_distances(X[:5], X, y, 4)
    assert G[:, 0] == pytest.approx(D[:5][:, y == 0].min(axis=1))


def test_fit_thresholds_uses_negatives_and_strangers():
    # two people, well separated; a stranger and a "not p0" face sit close to p0
    y = np.array([0, 0, 0, 1, 1, 1])
    loo = np.array([[0.30, 0.9], [0.32, 0.9], [0.34, 0.9], [0.9, 0.30], [0.9, 0.31], [0.9, 0.33]])
    base = fit_thresholds(loo, y, P)
    assert base == pytest.approx([0.6, 0.6])  # midpoint 0.62, capped
    strangers = np.array([[0.40, 1.0]])
    with_s = fit_thresholds(loo, y, P, strangers=strangers)
    assert with_s[0] == pytest.approx((0.34 + 0.40) / 2) and with_s[1] == pytest.approx(0.6)
    neg = (np.array([[0.36, 0.2]]), np.array([0]))  # "NOT p0": impostor for p0 only
    with_n = fit_thresholds(loo, y, P, negatives=neg)
    assert with_n[0] == pytest.approx(0.35) and with_n[1] == pytest.approx(0.6)
    op = operating_point(loo, y, with_s, strangers)
    assert op.frr == 0 and op.far == 0 and op.stranger_far == 0
    op2 = operating_point(loo, y, np.array([0.31, 0.6]), strangers)
    assert op2.frr == pytest.approx(2 / 6) and op2.stranger_far == 0
    assert (op2.genuine_trials, op2.impostor_trials) == (6, 6)


def test_far_frr_curve():
    far, frr = far_frr_curve(
        np.array([0.1, 0.2, 0.3, np.inf]), np.array([0.25, 0.5]), np.array([0.0, 0.2, 0.3, 0.6])
    )
    assert far.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert frr == pytest.approx([1.0, 1 / 3, 0.0, 0.0])


def test_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    dist = rng.uniform(0.2, 1.0, size=(4000, 6))
    for t_true in (0.05, 0.2):
        p = softmax_scores(dist, t_true)
        y = np.array([rng.choice(6, p=row) for row in p])
        assert fit_temperature(dist, y) == pytest.approx(t_true, rel=0.15)
