"""How far an approximate method's ranking agrees with exact attribution's, per query: the Spearman correlation of
their scores over every document, and the share of exact attribution's top documents the method also ranks top."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def spearman(scores: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """``[queries]``: per query (row of ``[queries, docs]`` each), Spearman r over documents; NaN where a row is
    constant."""
    out = np.full(len(scores), np.nan)
    for q, (a, b) in enumerate(zip(scores, exact)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[q] = sps.spearmanr(a, b).statistic
    return out


def top_overlap(scores: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """``[queries]``: the share of each query's top ``k`` documents by ``exact`` that ``scores`` ranks top ``k``."""
    k = min(k, scores.shape[1])
    mine = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    theirs = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.array([len(set(a) & set(b)) / k for a, b in zip(mine, theirs)])
