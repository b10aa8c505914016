"""The LDS code on a planted case: a response that is exactly additive in the subset's documents, with known
per-document effects. The true effects score about 1, random scores about 0, and their negation about -1."""

import numpy as np
import pytest

from pipeline.analysis import lds

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
