"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): does a method's additive prediction of a
retrain's output rank the retrains as the retrains themselves do?

Retrain on M random subsets of the corpus. A method predicts each subset's effect on a query as the sum of
its scores over the subset's documents; LDS is, per query, the Spearman correlation across the M subsets
between that sum and the measured output (the completion's log-probability on the retrained model). The
summary is the mean over queries with a bootstrap 95% interval over queries, as kronfluence and TRAK report
it. Influence functions estimate a local, additive response (Bae et al. 2022), which is what LDS tests.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def random_subsets(n_docs: int, n_subsets: int, fraction: float, seed: int) -> np.ndarray:
    """``[n_subsets, n_docs]`` bool: each row keeps ``round(fraction * n_docs)`` documents drawn without
    replacement, seeded (the same seed gives the same subsets on any machine)."""
    rng = np.random.default_rng(seed)
    size = round(fraction * n_docs)
    masks = np.zeros((n_subsets, n_docs), dtype=bool)
    for row in masks:
        row[rng.choice(n_docs, size=size, replace=False)] = True
    return masks


def predicted(scores: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """``[subsets, queries]``: each subset's summed scores, per query (``scores`` is ``[queries, docs]``)."""
    return subsets.astype(np.float64) @ scores.T.astype(np.float64)


def per_query(predictions: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``[queries]`` Spearman r across subsets between the predicted and the measured output (``[subsets,
    queries]`` each); NaN for a query whose either column is constant."""
    out = np.full(predictions.shape[1], np.nan)
    for q in range(predictions.shape[1]):
        if np.ptp(predictions[:, q]) > 0 and np.ptp(measured[:, q]) > 0:
            out[q] = sps.spearmanr(predictions[:, q], measured[:, q]).statistic
    return out


def mean_interval(values: np.ndarray, seed: int, resamples: int = 2000, level: float = 0.95) -> tuple[float, ...]:
    """(mean, low, high): the mean over queries and its percentile bootstrap interval over queries (NaNs left
    out; all NaN when no query has a value)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    means = np.random.default_rng(seed).choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
