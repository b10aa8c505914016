"""The LDS code on a planted case: a response that is exactly additive in the subset's documents, with known
per-document effects. The true effects score about 1, random scores about 0, and their negation about -1."""

import numpy as np
import pytest

from pipeline.analysis import agreement, lds
from pipeline.stages.lds import lds_settings

N_DOCS, N_QUERIES, M = 400, 12, 60


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    effects = rng.standard_normal((N_QUERIES, N_DOCS))  # each document's true effect on each query's log p
    subsets = lds.random_subsets(N_DOCS, M, 0.5, seed=1)
    noise = 0.05 * np.sqrt(N_DOCS) * rng.standard_normal((M, N_QUERIES))  # a little retraining noise
    measured = subsets @ effects.T + noise
    return effects, subsets, measured


def test_random_halves_are_halves_seeded_and_differ():
    a, b = lds.random_subsets(N_DOCS, M, 0.5, seed=1), lds.random_subsets(N_DOCS, M, 0.5, seed=1)
    assert (a == b).all() and (a.sum(axis=1) == N_DOCS // 2).all()
    assert len({row.tobytes() for row in a}) == M
    assert not (a == lds.random_subsets(N_DOCS, M, 0.5, seed=2)).all()


def test_the_true_effects_score_near_one_random_near_zero_and_the_negation_near_minus_one(planted):
    effects, subsets, measured = planted
    rng = np.random.default_rng(3)
    summary = {}
    for name, scores in (("true", effects), ("random", rng.standard_normal(effects.shape)), ("negated", -effects)):
        values = lds.per_query(lds.predicted(scores, subsets), measured)
        summary[name] = lds.mean_interval(values, seed=0)
    mean, low, high = summary["true"]
    assert mean > 0.95 and low <= mean <= high
    mean, low, high = summary["random"]
    assert abs(mean) < 0.1 and low < 0 < high
    assert summary["negated"][0] < -0.95


def test_a_query_with_a_constant_output_has_no_lds_and_leaves_the_mean():
    predictions = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    measured = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    values = lds.per_query(predictions, measured)
    assert values[0] == pytest.approx(0.5) and np.isnan(values[1])
    assert lds.mean_interval(values, seed=0) == pytest.approx((0.5, 0.5, 0.5))
    assert all(np.isnan(lds.mean_interval(np.array([np.nan]), seed=0)))


def test_agreement_with_exact_scores_is_one_for_itself_and_falls_with_noise():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((5, 200))
    assert agreement.spearman(exact, exact) == pytest.approx(np.ones(5))
    assert agreement.top_overlap(exact, exact, 10) == pytest.approx(np.ones(5))
    assert agreement.top_overlap(-exact, exact, 10) == pytest.approx(np.zeros(5))
    noisy = exact + 2 * rng.standard_normal(exact.shape)
    assert 0.2 < agreement.spearman(noisy, exact).mean() < 0.7
    assert agreement.spearman(rng.standard_normal(exact.shape), exact).mean() == pytest.approx(0, abs=0.1)
    assert np.isnan(agreement.spearman(np.ones((1, 200)), exact[:1])[0])


def test_each_share_kept_is_a_setting_of_its_own_and_halves_keep_their_retrains_names():
    settings = lds_settings(300, 4, (0.5, 0.99), seed=1)
    assert [(s, p) for s, p, _ in settings] == [("M=4, fraction=0.5", "lds-"), ("M=4, fraction=0.99", "lds-0.99-")]
    assert (settings[0][2].sum(axis=1) == 150).all() and (settings[1][2].sum(axis=1) == 297).all()  # 1% is 3 of 300
