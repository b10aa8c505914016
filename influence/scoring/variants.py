"""What the scoring pass gives besides EK-FAC scores, from the same backward passes: plain gradient dot
products, and every document's and query's self-influence ``g · H⁻¹ g``.

The estimator variants the field compares are built from these four quantities (``influence/methods``):
gradient dot products (``identity``), scores divided by the document's self-influence's square root
(RelatIF, Barshan et al. 2020) or by both square roots (the cosine in the EK-FAC metric, as TrackStar's
unit-normalised gradients). kronfluence computes self-influence only in a pass of its own
(``compute_self_scores``), which would double the cost of scoring, so ``GradientTap``
(``influence/curvature/tap.py``) hooks the tracked modules beside kronfluence's trackers and reads each
batch's activations and output gradients once more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GradientScores:
    """One shard's four quantities, per document (windows summed) and per query row."""

    ekfac: np.ndarray  # [rows, docs] q · H⁻¹ g, the paper's influence
    identity: np.ndarray  # [rows, docs] q · g
    query_gram: np.ndarray  # [rows, rows] q_a · H⁻¹ q_b: the diagonal is each row's self-influence
    doc_self: np.ndarray  # [docs] g · H⁻¹ g

    @property
    def query_self(self) -> np.ndarray:
        return np.diag(self.query_gram).copy()

    def expand(self, rows) -> GradientScores:
        """The measured rows into every row of ``rows`` (``Measurements.expand``: a whole completion is the sum
        of its segments, so its gradient is theirs, and its self-influence sums their block of the Gram matrix)."""
        mix = rows.expand(np.eye(self.query_gram.shape[0]))
        return GradientScores(mix @ self.ekfac, mix @ self.identity, mix @ self.query_gram @ mix.T, self.doc_self)
