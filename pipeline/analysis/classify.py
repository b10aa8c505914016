"""Is a query's influence broad and procedural, or narrow and document-specific? From its profile alone.

The task label is never an input. Each feature points one way by the paper's account of procedural
influence: shared with other queries (high ``neighbour_r``), spread out (low ``topk_share``, a flat
tail, low ``alpha``), rarely stating the answer to the question (``answer_in_context`` false), and
carried by documents that show working (high ``working_share``, read from their text by
``pipeline.analysis.labels``). The features are
z-scored across the queries and summed with those signs into one score; the queries are then split in
two where the within-group variance of that score is smallest (1-D two-means, exact and
deterministic). The confidence is the posterior of the chosen group under two Gaussians with the
groups' means, their pooled spread and their sizes as priors.

This assumes both kinds are among the queries, as in every suite the pipeline builds; on a set of one
kind only, the split is meaningless, which shows as low confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROCEDURAL, DOCUMENT_SPECIFIC = "procedural", "document_specific"
CLASSES = (PROCEDURAL, DOCUMENT_SPECIFIC)
# feature -> the sign with which it votes for "procedural"
FEATURES = {"neighbour_r": +1.0, "topk_share": -1.0, "alpha": -1.0, "answer_in_context": -1.0, "working_share": +1.0}
EXPECTED_FOR_KIND = {"reasoning": PROCEDURAL, "factual": DOCUMENT_SPECIFIC}


def neighbour_r(r: np.ndarray, m: int) -> np.ndarray:
    """Mean of each query's ``m`` largest correlations with the other queries."""
    out = np.full(r.shape[0], np.nan)
    for i in range(r.shape[0]):
        others = np.delete(r[i], i)
        others = np.sort(others[np.isfinite(others)])[::-1][:m]
        if len(others):
            out[i] = others.mean()
    return out


def _z(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.zeros_like(values)
    if finite.sum() > 1 and values[finite].std() > 0:
        out[finite] = (values[finite] - values[finite].mean()) / values[finite].std()
    return out


def two_means_split(score: np.ndarray) -> float:
    """The threshold between the two groups of a 1-D sample that minimises the within-group sum of squares."""
    s = np.sort(np.asarray(score, dtype=np.float64))
    n, i = len(s), np.arange(1, len(s))
    c1, c2 = np.cumsum(s), np.cumsum(s ** 2)
    left = c2[:-1] - c1[:-1] ** 2 / i
    right = (c2[-1] - c2[:-1]) - (c1[-1] - c1[:-1]) ** 2 / (n - i)
    best = int(np.argmin(left + right))
    return (s[best] + s[best + 1]) / 2


@dataclass(frozen=True)
class Classification:
    score: np.ndarray  # procedural score per query
    label: list[str]
    confidence: np.ndarray


def classify(features: dict[str, np.ndarray]) -> Classification:
    score = sum(sign * _z(features[name]) for name, sign in FEATURES.items())
    score = np.asarray(score, dtype=np.float64)
    n = len(score)
    if n < 2 or np.allclose(score, score[0]):
        return Classification(score, [PROCEDURAL] * n, np.full(n, 0.5))
    threshold = two_means_split(score)
    high = score > threshold
    mu_p, mu_d = score[high].mean(), score[~high].mean()
    pooled = np.concatenate([score[high] - mu_p, score[~high] - mu_d])
    sd = max(pooled.std(), 1e-9 * max(1.0, abs(mu_p - mu_d)))
    log_p = np.log(high.mean()) - 0.5 * ((score - mu_p) / sd) ** 2
    log_d = np.log(1 - high.mean()) - 0.5 * ((score - mu_d) / sd) ** 2
    p_procedural = 1.0 / (1.0 + np.exp(np.clip(log_d - log_p, -700, 700)))
    label = [PROCEDURAL if p >= 0.5 else DOCUMENT_SPECIFIC for p in p_procedural]
    return Classification(score, label, np.maximum(p_procedural, 1 - p_procedural))


def confusion(truth: list[str | None], predicted: list[str]) -> dict:
    """Accuracy and ``{true: {predicted: count}}`` over the queries whose truth is known."""
    pairs = [(t, p) for t, p in zip(truth, predicted) if t is not None]
    matrix = {t: {p: sum(1 for a, b in pairs if a == t and b == p) for p in CLASSES} for t in CLASSES}
    accuracy = sum(a == b for a, b in pairs) / len(pairs) if pairs else math.nan
    return {"accuracy": accuracy, "n": len(pairs), "confusion": matrix}
