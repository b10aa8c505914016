"""The paper's influence: the query gradient preconditioned by EK-FAC, dotted with the document's gradient."""

from influence.methods.base import Method

METHOD = Method("influence", "EK-FAC influence, q·H⁻¹g (the paper's)", from_gradients=lambda g: g.ekfac,
                colour="#2ca02c")
