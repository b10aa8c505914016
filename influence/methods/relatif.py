"""RelatIF (Barshan et al. 2020): influence divided by the square root of the document's self-influence,
which damps documents whose gradients are large everywhere (outliers, very long documents)."""

import numpy as np

from influence.methods.base import Method, per_self_influence


def relatif(g) -> np.ndarray:
    return per_self_influence(g.ekfac, np.sqrt(g.doc_self)[None, :])


METHOD = Method("relatif", "q·H⁻¹g / √(g·H⁻¹g)", from_gradients=relatif)
