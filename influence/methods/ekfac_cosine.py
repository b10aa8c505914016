"""The cosine in the EK-FAC metric: query and document gradients unit-normalised before the dot product,
as TrackStar's and bergson's normalised kernels do. It ranks documents as RelatIF does within one query;
across queries its scores are on one scale."""

import numpy as np

from influence.methods.base import Method, per_self_influence


def cosine(g) -> np.ndarray:
    return per_self_influence(g.ekfac, np.sqrt(np.outer(g.query_self, g.doc_self)))


METHOD = Method("ekfac_cosine", "q·H⁻¹g / (‖q‖ ‖g‖ in the H⁻¹ metric)", from_gradients=cosine)
