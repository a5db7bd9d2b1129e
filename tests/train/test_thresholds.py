"""The open-set maths: the margin score, calibration to a system target, leave-whole-person-out
estimate, leave-one-out distances, temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facefleet.registry.inference import pairwise_distances, softmax_scores
from facefleet.train.thresholds import (
    OpenSetParams,
    admitted,
    calibrate,
    centroids,
    class_distances,
    class_scores,
    effective_trials,
    estimate,
    fit_open_set,
    fit_temperature,
    genuine_trials,
    leave_group_out_thresholds,
    loo_class_distances,
    margin_scores,
    stranger_trials,
    strangers_take_over,
    wilson,
)

P = OpenSetParams(target_far=0.01, margin=0.5, far_distance=1.0, max_threshold=0.6)


def test_margin_score_by_hand():
    dist = np.array([[0.3, 0.8, 0.9], [0.5, 0.55, 2.0], [0.4, 1.5, 3.0]])
    s = margin_scores(dist, P)
    assert s.candidate.tolist() == [0, 0, 0]
    # 0.3 - 0.5 * 0.8; 0.5 - 0.5 * 0.55; the second-best capped at far_distance 1.0
    assert s.score == pytest.approx([-0.1, 0.225, -0.1])
    assert s.distance == pytest.approx([0.3, 0.5, 0.4])
    forced = margin_scores(dist, P, candidate=np.array([1, 1, 1]))
    assert forced.score == pytest.approx([0.8 - 0.15, 0.55 - 0.25, 1.5 - 0.2])
    # every class as the candidate, at once
    every = class_scores(dist, P)
    for q in range(3):
        assert every[:, q] == pytest.approx(margin_scores(dist, P, np.full(3, q)).score)
    # one enrolled person: the second-best is "far"
    assert margin_scores(np.array([[0.3]]), P).score == pytest.approx([0.3 - 0.5])


def test_a_ranker_other_than_the_nearest_centroid_never_scores_better():
    rng = np.random.default_rng(3)
    dist = rng.uniform(0.2, 1.2, size=(500, 6))
    best = margin_scores(dist, P).score
    other = margin_scores(dist, P, candidate=rng.integers(0, 6, size=500)).score
    assert np.all(other >= best - 1e-12)  # so the nearest-centroid estimate bounds them all


def test_calibrate_admits_what_keeps_a_new_trial_within_the_target():
    # a threshold just below the (k+1)-th of n scores names a new score with chance (k+1)/(n+1)
    assert [admitted(n, 0.01) for n in (98, 99, 499, 500, 1303)] == [-1, 0, 4, 4, 12]
    assert admitted(99, 0.05) == 4 and admitted(19, 0.05) == 0
    s = np.arange(100) / 100.0
    for target in (0.01, 0.05, 0.5):
        t = calibrate(s, target)
        k = int((s <= t).sum())
        assert k == max(admitted(100, target), 0) and (k + 1) / 101 <= target
        assert (k + 2) / 101 > target or k == 100  # and the largest such
    assert calibrate(s, 0.0) < 0.0  # below every trial: nothing can do better
    assert calibrate([0.2, 0.2, 0.2], 0.5) < 0.2  # ties are not split
    assert calibrate([], 0.1) == math.inf


def test_calibrated_threshold_names_new_trials_at_the_target_on_average():
    rng = np.random.default_rng(4)
    for n, target in ((200, 0.05), (500, 0.01), (60, 0.1)):
        # uniform scores: a threshold t names a new trial with probability t
        rates = [min(max(calibrate(rng.uniform(size=n), target), 0.0), 1.0) for _ in range(3000)]
        assert 0.85 * target <= float(np.mean(rates)) <= 1.02 * target, (n, target, np.mean(rates))


def test_leave_group_out_equals_the_full_fits_rank_without_the_group():
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    groups = rng.integers(0, 40, size=300)
    for target in (0.01, 0.1, 0.3):
        fast = leave_group_out_thresholds(s, groups, target)
        k = max(admitted(len(s), target), 0)  # the rank of the full fit
        for g in np.unique(groups):
            mine = groups == g
            assert np.all(fast[mine] == np.nextafter(np.sort(s[~mine])[k], -np.inf))
    # one trial a group: a trial below the shipped rank is named, one above it is not
    s = np.arange(500.0)
    named = s <= leave_group_out_thresholds(s, np.arange(500), 0.01)
    assert named.sum() == admitted(500, 0.01) + 1 and named[:5].all()


def test_trials_use_the_right_centroids():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(13, 4))
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3])  # class 3 has a single face
    C = centroids(X, y, 4)
    dist = pairwise_distances(X, C)
    st = stranger_trials(dist, y, P)
    assert np.all(st.candidate != y)  # the own person is gone
    gen, ok = genuine_trials(dist, y, P)
    assert ok.tolist() == [True] * 12 + [False]
    for row, i in enumerate(np.flatnonzero(ok)):
        others = [j for j in range(13) if y[j] == y[i] and j != i]
        loo = X[others].mean(0)
        n = len(others) + 1  # a new photo's expected distance to the mean of all n
        d = dist[i].copy()
        d[y[i]] = np.linalg.norm(X[i] - loo) * np.sqrt((1 + 1 / n) / (1 + 1 / (n - 1)))
        assert gen.score[row] == pytest.approx(margin_scores(d[None], P).score[0])


def test_fit_open_set_honest_estimate_negatives_and_strangers():
    # 30 people in 2-D, 3 faces each, tight; the estimate uses thresholds fitted without
    # the person, so a person whose twin is enrolled is named
    rng = np.random.default_rng(2)
    centres = 3.0 * np.stack(np.meshgrid(np.arange(6), np.arange(5)), -1).reshape(30, 2).astype(float)
    centres[1] = centres[0] + [0.1, 0.0]  # two look-alikes; everybody else is far apart
    X = np.repeat(centres, 3, axis=0) + rng.normal(scale=0.01, size=(90, 2))
    y = np.repeat(np.arange(30), 3)
    C = centroids(X, y, 30)
    params = OpenSetParams(target_far=0.05, margin=0.5, far_distance=1.0, max_threshold=0.6)
    fit = fit_open_set(pairwise_distances(X, C), y, params)
    assert fit.far.trials == 90 and fit.genuine_trials == 90
    assert fit.far.named == 6  # the look-alikes' six faces: each named as the other
    assert fit.far.rate == pytest.approx(6 / 90)
    assert fit.far.low < fit.far.rate < fit.far.high
    # the look-alikes are not told apart with confidence: the margin rule rejects their faces
    assert fit.frr == pytest.approx(6 / 90)
    assert np.all(fit.thresholds == fit.system_threshold)
    # reviewed strangers join the trials; a "not person 5" face lowers person 5 alone
    strangers = pairwise_distances(rng.uniform(40, 50, size=(10, 2)), C)
    face = centres[5][None] + 0.05
    negatives = (pairwise_distances(face, C), np.array([5]))
    fit2 = fit_open_set(pairwise_distances(X, C), y, params, strangers=strangers, negatives=negatives)
    assert fit2.far.trials == 100 and fit2.stranger_far is not None and fit2.stranger_far.trials == 10
    assert fit.calibrated_on == "gallery" and fit2.calibrated_on == "gallery+strangers"
    assert fit2.gallery_far is not None and fit2.gallery_far.named == 6
    assert fit2.stranger_far.named == 0  # far from everybody: beyond max_threshold
    score5 = class_scores(negatives[0], params)[0, 5]
    assert fit2.thresholds[5] < score5 and np.all(np.delete(fit2.thresholds, 5) == fit2.system_threshold)
    curve = fit2.curve
    assert len(curve["threshold"]) == len(curve["strangers_named"]) == len(curve["known_missed"])
    assert curve["strangers_named"] == sorted(curve["strangers_named"])  # grows with the threshold


def test_enough_reviewed_strangers_set_the_threshold_alone():
    # the gallery is two tight look-alike pairs among 20 people; the strangers the cameras saw
    # are spread widely, some of them near enrolled people
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 4, size=(20, 8))
    centres[1], centres[3] = centres[0] + 0.05, centres[2] + 0.05
    X = np.repeat(centres, 3, axis=0) + rng.normal(scale=0.02, size=(60, 8))
    y = np.repeat(np.arange(20), 3)
    C = centroids(X, y, 20)
    params = OpenSetParams(target_far=0.05, margin=0.5, far_distance=1.0, max_threshold=0.6)
    near = centres[rng.integers(0, 20, size=150)] + rng.normal(scale=0.12, size=(150, 8))
    assert not strangers_take_over(98, 0.05) and strangers_take_over(99, 0.05)
    few = fit_open_set(pairwise_distances(X, C), y, params, strangers=pairwise_distances(near[:40], C))
    assert few.calibrated_on == "gallery+strangers" and few.far.trials == 100
    fit = fit_open_set(pairwise_distances(X, C), y, params, strangers=pairwise_distances(near[:100], C))
    assert fit.calibrated_on == "strangers"
    assert fit.far.trials == 100 and fit.stranger_far is not None and fit.stranger_far.trials == 100
    assert fit.far.named == admitted(99, 0.05) + 1  # each stranger against the other 99
    assert fit.system_threshold == min(calibrate(_scores(near[:100], C, params), 0.05), 0.6)
    # the gallery's trials are judged against the strangers' threshold, not calibrated on:
    # the look-alike pairs' 12 faces are named as their twin
    assert fit.gallery_far is not None and fit.gallery_far.trials == 60 and fit.gallery_far.named == 12
    named = _named(near[100:], C, fit.thresholds, params)
    assert 0 < named.sum() <= 10  # 50 new strangers of the same population: about 5 % named


def _regulars_world(seed: int, n_regulars: int = 20, captures: int = 6):
    """30 people enrolled far apart; regulars near them, each captured ``captures`` times
    alike (one camera, one door); new regulars from the same population."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 4, size=(30, 8))
    X = np.repeat(centres, 3, axis=0) + rng.normal(scale=0.02, size=(90, 8))
    y = np.repeat(np.arange(30), 3)
    C = centroids(X, y, 30)

    def regulars(n):
        faces = centres[rng.integers(0, 30, size=n)] + rng.normal(scale=0.1, size=(n, 8))
        who = np.repeat(np.arange(n), captures)
        return faces[who] + rng.normal(scale=0.01, size=(n * captures, 8)), who

    (seen, who), (new, _) = regulars(n_regulars), regulars(500)
    return pairwise_distances(X, C), y, pairwise_distances(seen, C), who, new, C


def test_a_strangers_repeat_captures_count_as_one_person():
    params = OpenSetParams(target_far=0.05, margin=0.5, far_distance=1.0, max_threshold=0.6)
    D, y, S, who, _, _ = _regulars_world(11)
    as_faces = fit_open_set(D, y, params, strangers=S)
    fit = fit_open_set(D, y, params, strangers=S, stranger_groups=who * 7)  # any labels
    # 120 faces calibrate alone at 5 % either way (the rank counts faces), on the same threshold
    assert as_faces.calibrated_on == fit.calibrated_on == "strangers"
    assert fit.system_threshold == as_faces.system_threshold
    assert as_faces.stranger_people == 120 and fit.stranger_people == 20
    assert fit.far.trials == 120 and fit.far.named == as_faces.far.named == 6
    # one regular named on all six captures: the interval counts about 20 people, not 120 faces
    assert as_faces.far.effective_trials > 100 and fit.far.effective_trials < 21
    assert fit.far.high > 2 * as_faces.far.high
    with pytest.raises(ValueError, match="5 stranger groups for 120"):
        fit_open_set(D, y, params, strangers=S, stranger_groups=np.arange(5))


def test_grouped_interval_covers_what_new_regulars_see():
    # over 100 such worlds, how often the interval holds the share of 500 new regulars named
    params = OpenSetParams(target_far=0.05, margin=0.5, far_distance=1.0, max_threshold=0.6)
    covered = {"faces": 0, "people": 0}
    for seed in range(100):
        D, y, S, who, new, C = _regulars_world(seed)
        for key, groups in (("faces", None), ("people", who)):
            fit = fit_open_set(D, y, params, strangers=S, stranger_groups=groups)
            rate = _named(new, C, fit.thresholds, params).mean()
            covered[key] += fit.far.low <= rate <= fit.far.high
    # measured: 49 of 100 with each capture its own person, 80 grouped
    assert covered["people"] >= 75 and covered["people"] >= covered["faces"] + 15, covered


def _scores(V, C, params):
    s = margin_scores(pairwise_distances(V, C), params)
    return np.where(s.distance > params.max_threshold, np.inf, s.score)


def _named(V, C, thresholds, params):
    s = margin_scores(pairwise_distances(V, C), params)
    return (s.score <= thresholds[s.candidate]) & (s.distance <= params.max_threshold)


def test_effective_trials_discount_a_persons_correlated_trials():
    y = np.repeat(np.arange(100), 3)
    together = np.isin(y, [3, 40, 77])  # three people named with all their photos
    apart = np.zeros(300, bool)
    apart[[0, 10, 20, 31, 41, 52, 60, 71, 82]] = True  # nine single photos of nine people
    assert effective_trials(together, y) == pytest.approx(100, rel=0.05)  # worth one per person
    assert effective_trials(apart, y) == 300  # independent: never more than the trials
    assert effective_trials(together) == 300
    est = estimate(together, y)
    assert (est.named, est.trials) == (9, 300) and est.rate == pytest.approx(0.03)
    low, high = wilson(3, 100)
    assert est.effective_trials == pytest.approx(100, rel=0.05)
    assert est.low == pytest.approx(low, rel=0.05) and est.high == pytest.approx(high, rel=0.05)
    assert est.high > estimate(apart, y).high


def test_wilson_interval():
    low, high = wilson(13, 1356)
    assert low == pytest.approx(0.0056, abs=2e-4) and high == pytest.approx(0.0163, abs=2e-4)
    assert wilson(0, 100)[0] == 0.0 and wilson(0, 100)[1] == pytest.approx(0.037, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_loo_distances_match_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 5))
    y = rng.integers(0, 4, size=23)
    y[y == 3] = 2
    y[0] = 3  # class 3 has exactly one face
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


def test_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    dist = rng.uniform(0.2, 1.0, size=(4000, 6))
    for t_true in (0.05, 0.2):
        p = softmax_scores(dist, t_true)
        y = np.array([rng.choice(6, p=row) for row in p])
        assert fit_temperature(dist, y) == pytest.approx(t_true, rel=0.15)
