"""The paper's per-query statistics on one row of scores, and correlations over a whole score matrix.

Pure numpy/scipy on arrays, so each is tested on constructed scores with a known answer. A row is one
query's ``score_per_nat`` over every document; the analyze stage feeds them one query at a time, so a
real run (100 queries x 5M documents) never holds more than one row plus a block of columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


def capped_k(k: int, n_docs: int, floor: int = 10) -> int:
    """``k``, but at most 1% of the documents (the paper's 500 of 5M is 0.01%), at least ``floor``
    so that small corpora still have a top-k, and never more than there are documents."""
    return max(1, min(k, max(floor, n_docs // 100), n_docs))


def ranking(row: np.ndarray) -> np.ndarray:
    """Document positions from most to least positive; ties keep document order (deterministic)."""
    return np.argsort(-row, kind="stable")


@dataclass(frozen=True)
class Magnitude:
    total_positive: float
    total_negative: float
    top_sums: tuple[float, ...]  # sum of the top p% positive scores, one per percent
    top_shares: tuple[float, ...]  # the same, divided by total_positive

    @staticmethod
    def of(sorted_desc: np.ndarray, percents: tuple[float, ...]) -> Magnitude:
        """``sorted_desc`` is one query's scores, largest first."""
        positive = np.clip(sorted_desc, 0, None)
        total_positive = float(positive.sum())
        total_negative = float(np.clip(sorted_desc, None, 0).sum())
        n = len(sorted_desc)
        sums = tuple(float(positive[:max(1, math.ceil(p / 100 * n))].sum()) for p in percents)
        shares = tuple(s / total_positive if total_positive > 0 else math.nan for s in sums)
        return Magnitude(total_positive, total_negative, sums, shares)


@dataclass(frozen=True)
class PowerLaw:
    """score ~ C * rank^(-alpha) over the top-k positive scores, fitted by least squares in log-log."""

    alpha: float
    alpha_se: float
    n_points: int

    @staticmethod
    def fit(sorted_desc: np.ndarray, k: int) -> PowerLaw:
        top = sorted_desc[:k]
        top = top[top > 0]
        if len(top) < 3:
            return PowerLaw(math.nan, math.nan, len(top))
        fit = sps.linregress(np.log(np.arange(1, len(top) + 1)), np.log(top))
        return PowerLaw(float(-fit.slope), float(fit.stderr), len(top))


def gram(blocks, n_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sums, and cross-products over columns, of an ``[n_rows, N]`` matrix given as column blocks."""
    total = np.zeros(n_rows)
    cross = np.zeros((n_rows, n_rows))
    n = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float64)
        total += block.sum(axis=1)
        cross += block @ block.T
        n += block.shape[1]
    return total, cross, n


def pearson_from_gram(total: np.ndarray, cross: np.ndarray, n: int) -> np.ndarray:
    """Pearson r of every row pair from their sums and cross-products (NaN for a constant row)."""
    mean = total / n
    cov = cross / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.outer(sd, sd)
    r[~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def column_blocks(matrix: np.ndarray, width: int = 1 << 16):
    for start in range(0, matrix.shape[1], width):
        yield matrix[:, start:start + width]


def pearson(matrix: np.ndarray) -> np.ndarray:
    """Row-by-row Pearson correlation of a (possibly memory-mapped) matrix, a column block at a time."""
    total, cross, n = gram(column_blocks(matrix), matrix.shape[0])
    return pearson_from_gram(total, cross, n)


def rank_rows(matrix: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Average ranks of each row into ``out`` (same shape), one row in memory at a time."""
    for i in range(matrix.shape[0]):
        out[i] = sps.rankdata(matrix[i])
    return out


def fisher_t_test(rs: np.ndarray) -> tuple[float, float]:
    """One-sample t-test of Fisher-z transformed correlations against zero: (t, two-sided p)."""
    rs = rs[np.isfinite(rs)]
    if len(rs) < 2:
        return math.nan, math.nan
    z = np.arctanh(np.clip(rs, -0.999999, 0.999999))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = sps.ttest_1samp(z, 0.0)
    return float(result.statistic), float(result.pvalue)
